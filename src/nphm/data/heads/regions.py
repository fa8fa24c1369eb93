"""The ICT Face Model's vertex regions (from the kit's README) and which of them the project keeps.

Ranges are 0-based and inclusive, in the kit's vertex numbering (26,719 vertices). The kept
regions are the first nine (vertices 0-24590, contiguous), so kept-vertex indices equal kit
indices; the converter still remaps through a lookup table so that this is not assumed.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

#: (name, first vertex, last vertex) of the kit's region table, in kit order.
KIT_REGIONS: Tuple[Tuple[str, int, int], ...] = (
    ("face", 0, 9408),
    ("head_and_neck", 9409, 11247),
    ("mouth_socket", 11248, 13293),
    ("eye_socket_left", 13294, 13677),
    ("eye_socket_right", 13678, 14061),
    ("gums_and_tongue", 14062, 17038),
    ("teeth", 17039, 21450),
    ("eyeball_left", 21451, 23020),
    ("eyeball_right", 23021, 24590),
    ("rendering_helpers", 24591, 26718),  # lacrimal fluid, eye blend, eye occlusion, eyelashes
)
#: The kit's "narrow face area" (a sub-range of ``face``): forehead to chin, between the ears.
NARROW_FACE: Tuple[int, int] = (0, 6705)

#: Regions a head generator needs (everything but the rendering helpers).
KEPT_REGIONS: Tuple[str, ...] = (
    "face", "head_and_neck", "mouth_socket", "eye_socket_left", "eye_socket_right",
    "gums_and_tongue", "teeth", "eyeball_left", "eyeball_right",
)
#: The skin layer: an open surface (eye holes, mouth slit, neck/shoulder cut).
SKIN_REGIONS: Tuple[str, ...] = ("face", "head_and_neck")
#: Rigid bodies (each tooth, each eyeball) whose identity offsets are affine per mode and body,
#: stored as 3x4 maps (see :mod:`nphm.data.heads.storage`).
RIGID_PARTS: Tuple[str, ...] = ("teeth", "eyeball_left", "eyeball_right")
#: The face region of the project (NPHM's ``face.npy`` analogue): the kit's narrow face area.
FACE_REGION_NAME = "narrow_face"


def kit_vertex_count() -> int:
    """Number of vertices of the kit's full mesh (26,719)."""
    return KIT_REGIONS[-1][2] + 1


def region_labels(n_vertices: int | None = None) -> np.ndarray:
    """Per-vertex index into :data:`KIT_REGIONS`, ``(n_vertices,)`` int8 (kit numbering)."""
    n = kit_vertex_count() if n_vertices is None else n_vertices
    labels = np.full(n, -1, dtype=np.int8)
    for k, (_, first, last) in enumerate(KIT_REGIONS):
        labels[first:min(last + 1, n)] = k
    return labels

