"""Index tables and masks of the ICT topologies (the ICT counterpart of
:func:`nphm.data.synthetic.landmarks.get_metadata`).

- anchors: the model's 39 ``anchors39`` (release order; skin vertices, whose registration
  indices equal the model's), so the mean anchors of a population sit where the release's do;
- 68 landmarks: the model's ``landmarks68`` (iBUG order);
- face mask of the registration: the model's face region (its narrow face area);
- FLAME-like face region and throat plane: :mod:`nphm.data.synthetic.ict.topology`;
- inner lip vertices: landmarks 62 / 66; back of the head: registration vertices no
  expression shape moves.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Dict

import numpy as np
import trimesh

from nphm.data.heads import load_ict_model
from nphm.data.synthetic.ict.topology import get_topology
from nphm.data.synthetic.landmarks import TemplateMetadata


@lru_cache(maxsize=1)
def get_ict_metadata() -> TemplateMetadata:
    """Metadata of the ICT topologies (built once per process)."""
    model = load_ict_model()
    topo = get_topology()
    face = np.zeros(topo.n_registration, dtype=bool)
    face[model.face_region] = True
    still = np.abs(model.expression_shapes[:, topo.registration_vertices]).max(axis=(0, 2)) == 0.0
    return TemplateMetadata(
        anchor_indices=np.asarray(model.anchors39, dtype=np.int64),
        anchor_names=tuple(model.anchor_meanings),
        landmark_indices_68=np.asarray(model.landmarks68, dtype=np.int64),
        face_mask_registration=face,
        face_region_flame=topo.flame_face_region.copy(),
        throat_plane_flame=topo.flame_throat.copy(),
        upper_lip_inner=int(model.landmarks68[62]),
        lower_lip_inner=int(model.landmarks68[66]),
        back_of_head_registration=still,
    )


def template_meshes() -> Dict[str, trimesh.Trimesh]:
    """The template meshes (the model's neutral mean head, no hair), nphm frame:
    ``{"flame": FLAME-like, "registration": registration}``."""
    model = load_ict_model()
    topo = get_topology()
    reg = topo.registration(model.neutral)
    return {"flame": trimesh.Trimesh(topo.flame(reg), topo.flame_faces, process=False),
            "registration": trimesh.Trimesh(reg, topo.registration_faces, process=False)}
