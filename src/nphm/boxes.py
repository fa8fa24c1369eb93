"""Boxes of the nphm frame that the release uses for grids and probes."""
from typing import Tuple

Box = Tuple[Tuple[float, float, float], Tuple[float, float, float]]

#: The release's output grid for fitting results (nphm frame).
FITTING_BOUNDS: Box = ((-0.55, -0.5, -0.95), (0.55, 0.75, 0.4))
#: The release's box for training previews (nphm frame).
PREVIEW_BOUNDS: Box = ((-0.4, -0.6, -0.7), (0.4, 0.6, 0.5))
