from pathlib import Path

from setuptools import find_packages, setup

version = {}
exec((Path(__file__).parent / "deeppick" / "_version.py").read_text(), version)

setup(
    name="deeppick",
    version=version["__version__"],
    description="Deep-learning particle picking for cryo-EM micrographs",
    long_description=(Path(__file__).parent / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["deeppick", "deeppick.*"]),
    package_data={"deeppick": ["pretrained/*.pt", "pretrained/*.json", "data_manifests/*.json"]},
    install_requires=[
        # 2.13.0 is the CPU wheel installed first by the Makefile; any later 2.x is fine too.
        "torch>=2.1",
        "numpy>=1.24",
        "scipy>=1.10",
        "scikit-image>=0.21",
        "mrcfile>=1.4",
        "starfile>=0.5",
        "pandas>=2.0",
        "pillow>=9.0",
        "tifffile>=2023.1",
        "click>=8.1",
        "matplotlib>=3.7",
        "tqdm>=4.60",
        "pooch>=1.7",  # deeppick fetch: checksums, retries, progress
        "requests>=2.25",  # its errors tell offline, 404 and a cut-off transfer apart
    ],
    # scikit-learn: the tests hold our precision-recall curve and AP against its own
    # dask: picking on a Dask cluster (--dask-scheduler); the tests run it on a local cluster
    extras_require={"dask": ["dask[distributed]>=2023.1"],
                    "test": ["pytest>=7", "hypothesis>=6", "scikit-learn>=1.3", "dask[distributed]>=2023.1"]},
    entry_points={"console_scripts": ["deeppick=deeppick.cli:main"]},
)
