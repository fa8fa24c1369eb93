"""Meshes of a fit: the canonical zero level set, pushed forward by every expression latent."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import torch
import trimesh
from torch import nn

from nphm.mesh import extract_mesh
from nphm.query import DEFAULT_CHUNK, sdf_function
from nphm.reconstruction import pose_mesh


def mesh_fit(
    identity: nn.Module,
    deformation: Optional[nn.Module],
    z_id: torch.Tensor,
    z_ex: Optional[torch.Tensor],
    resolution: int,
    bounds: Tuple[Sequence[float], Sequence[float]],
    chunk: int = DEFAULT_CHUNK,
    progress: bool = False,
    lipschitz: Union[float, str] = "auto",
    mode: str = "sparse",
) -> Tuple[trimesh.Trimesh, List[trimesh.Trimesh]]:
    """Canonical mesh of ``z_id`` (D_id,) and one posed mesh per row of ``z_ex`` (E, D_ex).

    The canonical mesh is coarse-to-fine marching cubes with the per-cell measured Lipschitz
    bound (``lipschitz="auto"``, :mod:`nphm.mesh`; on the shipped trained models it evaluates
    about 30 % fewer points than the fixed bound for the same mesh; a number: that fixed bound).
    ``mode="traced"`` traces the last level along the surface (about 30 % fewer points again;
    the same mesh except for components too small to cross the lattice of every second grid
    point, see :mod:`nphm.mesh`).
    Without a deformation model (identity-only fits) the posed meshes are copies of the
    canonical one, one per expression (``z_ex`` then only gives their number, or is None
    for a single copy). Raises ValueError when the zero level set misses the box.
    """
    device = z_id.device
    sdf = sdf_function(identity, z_id, chunk=chunk)
    canonical = extract_mesh(sdf, bounds[0], bounds[1], resolution, mode=mode, batch_points=chunk * 4,
                             device=device, progress=progress, lipschitz=lipschitz)
    if deformation is None or z_ex is None:
        n = 1 if z_ex is None else z_ex.shape[0]
        return canonical, [canonical.copy() for _ in range(n)]
    with torch.inference_mode():
        anchors = identity.anchors(z_id[None])
    anchors = None if anchors is None else anchors[0]
    posed = [pose_mesh(canonical, deformation, z_id, z_ex[i], anchors, chunk) for i in range(z_ex.shape[0])]
    return canonical, posed
