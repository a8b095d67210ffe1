"""The one compiled part of circusd; everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("circusd._spawn", ["circusd/_spawn.c"])])
