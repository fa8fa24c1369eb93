"""Datasets in the NPHM layout: description files, the DataManager and coordinate frames.

The single-view observation generator lives in :mod:`nphm.data.observations` (imported on
demand, it needs :mod:`nphm.rendering`).
"""
from nphm.data import frames
from nphm.data.description import DatasetDescription, DescriptionError
from nphm.data.manager import DataManager, MeshLoadError, MissingNeutralError, load_mesh

__all__ = [
    "DataManager",
    "DatasetDescription",
    "DescriptionError",
    "MeshLoadError",
    "MissingNeutralError",
    "frames",
    "load_mesh",
]
