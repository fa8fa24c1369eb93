"""nphm: Neural Parametric Head Models, a fast and tested reimplementation."""

__version__ = "0.1.0"
