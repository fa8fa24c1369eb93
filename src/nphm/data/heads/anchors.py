"""The 39 NPHM anchors and the neck cut plane on the ICT Face Model template.

Release order (``anchor_vertex_indices_registration``): 16 mirrored pairs (2k, 2k+1), then 7
on the midline (32-38). "right"/"left" are the subject's: right is x < 0 in the nphm frame
(the first of each pair, except pairs 26/27 and 28/29 whose first member has x > 0).

Meanings were read off the release's mean anchors (``release_anchors39_mean_nphm.npy``)
against the aligned ICT template; vertices (kit numbering, equal to the shipped asset's) were
proposed by :func:`nphm.data.heads.anchor_search.propose_anchor_vertices` with the 68-landmark
vertices fixed where the meaning is the same (eye corners, mouth corners, nose tip, lips,
chin), and checked on ``docs/images/ict_anchors.png``.
"""
from __future__ import annotations

from typing import Tuple

#: (meaning, ICT vertex) per anchor, release order.
ANCHORS: Tuple[Tuple[str, int], ...] = (
    ("mouth corner, right (68-landmark 48)", 5708),
    ("mouth corner, left (68-landmark 54)", 6213),
    ("lateral cheek over the masseter, level with the nose base, right", 379),
    ("lateral cheek over the masseter, level with the nose base, left", 2620),
    ("chin side below the mouth corner, right", 391),
    ("chin side below the mouth corner, left", 2632),
    ("cheek below the eye (over the cheekbone), right", 905),
    ("cheek below the eye (over the cheekbone), left", 3146),
    ("eyebrow middle, right", 1034),
    ("eyebrow middle, left", 3254),
    ("inner eye corner, right (68-landmark 39)", 1528),
    ("inner eye corner, left (68-landmark 42)", 3742),
    ("outer eye corner, right (68-landmark 36)", 1507),
    ("outer eye corner, left (68-landmark 45)", 3721),
    ("nose wing (ala), right", 4743),
    ("nose wing (ala), left", 5208),
    ("jaw angle (gonion), right", 777),
    ("jaw angle (gonion), left", 3018),
    ("temple, level with the eyes, right", 1714),
    ("temple, level with the eyes, left", 3919),
    ("ear: concha at the ear canal, right", 7718),
    ("ear: concha at the ear canal, left", 6991),
    ("forehead near the hairline, right", 8264),
    ("forehead near the hairline, left", 8537),
    ("top of the head beside the crown, right", 9933),
    ("top of the head beside the crown, left", 9955),
    ("back of the head, upper (occiput), left", 9727),
    ("back of the head, upper (occiput), right", 9516),
    ("back of the head, lower (nape below the occiput), left", 9769),
    ("back of the head, lower (nape below the occiput), right", 9560),
    ("base of the neck at the back, towards the shoulder, right", 10906),
    ("base of the neck at the back, towards the shoulder, left", 11199),
    ("throat: neck-chin junction below the chin", 1595),
    ("nose tip (68-landmark 30)", 4857),
    ("lower lip, middle of the vermilion edge (68-landmark 57)", 5518),
    ("upper lip, middle of the vermilion edge (68-landmark 51)", 0),
    ("nose bridge between the eyes", 4511),
    ("forehead centre above the brows", 972),
    ("chin (68-landmark 8)", 966),
)
#: The meanings alone, release order.
ANCHOR_MEANINGS: Tuple[str, ...] = tuple(m for m, _ in ANCHORS)
#: The ICT vertex of each anchor (kit numbering), release order.
ANCHOR_VERTICES: Tuple[int, ...] = tuple(v for _, v in ANCHORS)

#: Anchors whose vertex is a 68-landmark vertex (anchor index -> landmark index, iBUG order).
LANDMARK_OF_ANCHOR = {0: 48, 1: 54, 10: 39, 11: 42, 12: 36, 13: 45, 33: 30, 34: 57, 35: 51, 38: 8}

#: Neck cut plane, like the release's "cut throat" plane through three FLAME vertices: origin =
#: first vertex, normal = cross(v2 - v1, v3 - v1), the positive side is kept. v1: front of the
#: neck on the midline (nphm y ~ -0.585), v2 / v3: a mirrored pair on the back of the neck
#: (x ~ +-0.10, y ~ -0.47). The plane is tilted by ~16 degrees, lower at the throat than at the
#: nape, so that the kept neutral spans y >= -0.585 and z >= -0.58 like the release's heads, and
#: every anchor lies >= 15 mm above it.
THROAT_PLANE_VERTICES: Tuple[int, int, int] = (9028, 11027, 10722)
