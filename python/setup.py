# The cffi extension (API mode, compiled against geds.h) needs setup()'s cffi_modules; the rest is pyproject.toml.
from setuptools import setup

setup(cffi_modules=["geds_build.py:ffibuilder"])
