"""Real-scan head model: the ICT Face Model Light (USC ICT, MIT license) in the real nphm frame.

``load_ict_model()`` returns the shipped asset ``ict_light.npz`` as an :class:`IctHeadModel`
(neutral, identity modes, expression shapes, regions, 68 landmarks, the 39 NPHM anchors and the
neck cut plane, all in the nphm frame). The asset is written by
:func:`nphm.data.heads.convert_ict.convert_ict_facekit`; ``README.md`` here says how.
"""
from nphm.data.heads.anchors import ANCHOR_MEANINGS, ANCHOR_VERTICES, THROAT_PLANE_VERTICES
from nphm.data.heads.model import (ASSET_PATH, RELEASE_ANCHORS_PATH, IctHeadModel, load_ict_model,
                                   load_release_anchors, read_ict_model)

__all__ = [
    "ANCHOR_MEANINGS",
    "ANCHOR_VERTICES",
    "ASSET_PATH",
    "IctHeadModel",
    "RELEASE_ANCHORS_PATH",
    "THROAT_PLANE_VERTICES",
    "load_ict_model",
    "load_release_anchors",
    "read_ict_model",
]
