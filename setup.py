"""Build script for the release's habits (``python setup.py develop``); everything is declared in
pyproject.toml, which ``pip install -e .`` reads directly."""
from setuptools import setup

setup()
