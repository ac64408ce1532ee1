"""Only declares the C hashing extension; all metadata lives in pyproject.toml."""
import os

from setuptools import Extension, setup

extra = ["-O3", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"]
if os.environ.get("DOMAS_EXT_DEBUG"):
    extra = ["-O0", "-g", "-std=c11", "-Wall"]

setup(
    ext_modules=[
        Extension(
            "domas.checksum._checksum",
            sources=["ext/_checksum.c"],
            extra_compile_args=extra,
            optional=bool(os.environ.get("DOMAS_EXT_OPTIONAL")),
        )
    ]
)
