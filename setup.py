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
    extras_require={
        "dev": ["pytest", "bm25s", "hnswlib"],
    },
)
