"""3DGS training: `train(cfg, stages=[...]) -> (state, metrics)`, `TrainState`, densification
strategies and losses. See `gscomp.train.trainer` for the loop and its hooks."""
from .state import TrainState
from .strategy import DefaultStrategy, build_strategy
from .trainer import Trainer, TrainInterrupted, init_splats, train

__all__ = ["train", "Trainer", "TrainState", "TrainInterrupted", "DefaultStrategy", "build_strategy", "init_splats"]
