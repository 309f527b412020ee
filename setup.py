"""gscomp installs as a pure-Python package; the native CPU rasterizer (sources in cuda/) is compiled
once on first use with torch's JIT extension builder and cached (see gscomp/native.py).
Building it at pip-install time would need torch inside pip's isolated build environment, which
pulls an unpinned (CUDA) torch: exactly what this project must never do."""
from setuptools import find_packages, setup

setup(
    name="gscomp",
    version="0.1.0",
    description="Train, compress, decode and view 3D Gaussian Splatting scenes",
    # configs/ and the C++ sources in cuda/ go into a regular install as gscomp/_configs and
    # gscomp/_cuda (a checkout and an editable install read them where they are)
    packages=find_packages(include=["gscomp", "gscomp.*"]) + ["gscomp._configs", "gscomp._cuda"],
    package_dir={"gscomp._configs": "configs", "gscomp._cuda": "cuda"},
    package_data={"gscomp._configs": ["*.yaml", "*/*.yaml"], "gscomp._cuda": ["*.cpp", "*.h", "*.cu", "*.cuh"]},
    python_requires=">=3.10",
    install_requires=[
        "torch==2.13.0",
        "numpy",
        "plyfile>=1.1,<2",  # (gscomp.io.ply uses its header parser and element reader)
        "hydra-core>=1.3",
        "omegaconf>=2.3",
        "constriction>=0.4",
        "pycolmap>=3.10",
        "rich",
        "scipy",  # (cKDTree: initial scales from neighbour distances)
        "pillow",
        "zstandard",
        "ninja",
    ],
    extras_require={
        "test": ["pytest", "pytest-timeout", "hypothesis"],
        "cuda": ["packaging"],  # plus `pip install --no-deps gsplat` (see README); tiny-cuda-nn from source
        "viewer": ["viser"],
        "open3d": ["open3d"],
        "bench": ["matplotlib", "gaussforge", "DracoPy", "imageio"],  # plus gsplat --no-deps: tools/setup.sh --bench
        "sweep": ["hydra-joblib-launcher", "hydra-submitit-launcher"],
    },
    entry_points={"console_scripts": ["gscomp=gscomp.cli:main"]},
)
