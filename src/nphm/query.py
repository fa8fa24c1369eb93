"""Chunked, memory-bounded inference queries of trained models.

Everything that depends only on the latent (anchors, the latent part of the first and the skip
layer) is computed once per call, the points are processed in chunks under
``torch.inference_mode()``, so memory stays bounded whatever the number of points.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

DEFAULT_CHUNK = 32768


def _as_batch(latent: torch.Tensor) -> torch.Tensor:
    return latent[None] if latent.dim() == 1 else latent


def sdf_function(
    identity: nn.Module,
    z_id: torch.Tensor,
    mode: Optional[str] = None,
    chunk: int = DEFAULT_CHUNK,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function mapping canonical points (N, 3) to SDF values (N,) for one identity.

    Args:
        identity: NPHM or NPM identity model.
        z_id: (D,) or (1, D) identity latent.
        mode: NPHM query mode (``"sparse"`` / ``"exact"``; default the model's).
    """
    z = _as_batch(z_id)
    with torch.inference_mode():
        anchors = identity.anchors(z)

    def sdf(points: torch.Tensor) -> torch.Tensor:
        out = torch.empty(points.shape[0], dtype=points.dtype, device=points.device)
        with torch.inference_mode():
            for start in range(0, points.shape[0], chunk):
                part = points[start : start + chunk][None]
                out[start : start + chunk] = identity(part, z, mode=mode, anchors=anchors)[0][0, :, 0]
        return out

    return sdf


def deform_points(
    deformation: nn.Module,
    points: torch.Tensor,
    z_id: torch.Tensor,
    z_ex: torch.Tensor,
    anchors: Optional[torch.Tensor] = None,
    chunk: int = DEFAULT_CHUNK,
) -> torch.Tensor:
    """Posed positions ``x + D(x)`` (N, 3) of canonical ``points`` (N, 3) for one scan.

    Args:
        z_id: (D_id,) identity latent; z_ex: (D_ex,) expression latent.
        anchors: (K, 3) or (1, K, 3) anchors of the identity (NPHM ``compress`` mode), else None.
    """
    z_id, z_ex = _as_batch(z_id), _as_batch(z_ex)
    if anchors is not None and anchors.dim() == 2:
        anchors = anchors[None]
    out = torch.empty_like(points)
    with torch.inference_mode():
        for start in range(0, points.shape[0], chunk):
            part = points[start : start + chunk]
            out[start : start + chunk] = part + deformation(part[None], z_id, z_ex, anchors)[0]
    return out
