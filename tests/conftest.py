import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GSCOMP_SHARED_DATA", ROOT.parent / "shared" / "data"))


def shared(rel: str) -> Path:
    """Path under ../shared/data; skips the test cleanly when it is absent."""
    p = SHARED / rel
    if not p.exists():
        pytest.skip(f"shared test data not found: {p}")
    return p


@pytest.fixture
def random_splats():
    """Factory: random_splats(n, sh_degree=3, seed=0) -> Splats around the origin."""
    from gscomp import Splats

    def make(n: int, sh_degree: int = 3, seed: int = 0, dtype=torch.float32) -> Splats:
        g = torch.Generator().manual_seed(seed)
        k = (sh_degree + 1) ** 2 - 1
        return Splats(
            means=torch.randn(n, 3, generator=g, dtype=dtype) * 0.5,
            quats=torch.randn(n, 4, generator=g, dtype=dtype),
            scales=torch.randn(n, 3, generator=g, dtype=dtype) * 0.3 - 2.5,
            opacities=torch.randn(n, generator=g, dtype=dtype),
            sh0=torch.randn(n, 1, 3, generator=g, dtype=dtype) * 0.5,
            shN=torch.randn(n, k, 3, generator=g, dtype=dtype) * 0.1,
        )

    return make


@pytest.fixture
def said():
    """gscomp's notes and warnings (`errors.Note`, `errors.DataWarning`) raised by library calls,
    as the lines the CLI prints for them: ``said.text()`` gives "note: ..." / "warning: ..."
    lines of those since the last call."""
    import warnings

    from gscomp.errors import DataWarning, Note

    class Said:
        def text(self) -> str:
            lines = "".join(f"{'note' if issubclass(w.category, Note) else 'warning'}: {w.message}\n"
                            for w in self.seen if issubclass(w.category, (Note, DataWarning)))
            self.seen.clear()
            return lines

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        s = Said()
        s.seen = seen
        yield s
