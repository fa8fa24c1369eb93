"""Meshes of identity latents, optionally posed by an expression latent."""
from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np
import torch
import trimesh
from torch import nn

from nphm.boxes import FITTING_BOUNDS, PREVIEW_BOUNDS  # noqa: F401  (re-exported)
from nphm.mesh import extract_mesh
from nphm.query import DEFAULT_CHUNK, deform_points, sdf_function
from nphm.utils.device import resolve_device


def pose_mesh(
    mesh: trimesh.Trimesh,
    deformation: nn.Module,
    z_id: torch.Tensor,
    z_ex: torch.Tensor,
    anchors: Optional[torch.Tensor] = None,
    chunk: int = DEFAULT_CHUNK,
) -> trimesh.Trimesh:
    """``mesh`` (canonical space) with every vertex moved to ``x + D(x)``, faces unchanged; the
    metadata is not copied.

    Args:
        z_id: (D_id,) identity latent (its device is the one the vertices are deformed on);
        z_ex: (D_ex,) expression latent; anchors: (K, 3) or (1, K, 3) anchors of ``z_id``, or None.
    """
    device = z_id.device
    verts = torch.as_tensor(np.asarray(mesh.vertices), dtype=torch.float32, device=device)
    posed = deform_points(deformation, verts, z_id, z_ex.to(device), anchors, chunk=chunk)
    return trimesh.Trimesh(posed.cpu().numpy(), np.asarray(mesh.faces), process=False)


def mesh_identity(
    identity: nn.Module,
    z_id: torch.Tensor,
    resolution: int = 256,
    bounds: Sequence[Sequence[float]] = FITTING_BOUNDS,
    deformation: Optional[nn.Module] = None,
    z_ex: Optional[torch.Tensor] = None,
    extraction: str = "sparse",
    query_mode: Optional[str] = None,
    chunk: int = DEFAULT_CHUNK,
    device: Optional[Union[str, torch.device]] = None,
    progress: bool = False,
) -> trimesh.Trimesh:
    """Zero level set of an identity's SDF; with ``deformation`` and ``z_ex`` the canonical
    vertices are pushed forward to the expression (``x + D(x)``), faces unchanged.

    Args:
        identity: NPHM/NPM identity model (on ``device``).
        z_id: (D,) identity latent.
        resolution: grid samples per axis over ``bounds`` (release: 256 demo, 400 test).
        extraction: ``"sparse"`` (coarse-to-fine), ``"traced"`` (coarse-to-fine, the last level
            traced along the surface) or ``"dense"`` marching-cubes grid (:mod:`nphm.mesh`).
        query_mode: NPHM ensemble query mode (``"sparse"`` / ``"exact"``).
    Returns:
        Mesh in the nphm frame.
    """
    device = resolve_device(device)
    z_id = z_id.to(device)
    sdf = sdf_function(identity, z_id, mode=query_mode, chunk=chunk)
    mesh = extract_mesh(
        sdf, bounds[0], bounds[1], resolution, mode=extraction, batch_points=chunk * 4, device=device,
        progress=progress,
    )
    if deformation is None and z_ex is None:
        return mesh
    if deformation is None or z_ex is None:
        raise ValueError("posing a mesh needs both a deformation model and an expression latent")
    with torch.inference_mode():
        anchors = identity.anchors(z_id[None])
    out = pose_mesh(mesh, deformation, z_id, z_ex, anchors, chunk=chunk)
    out.metadata.update(mesh.metadata)
    return out
