"""Chunked, memory-bounded inference queries of trained models.

Everything that depends only on the latent (anchors, the latent part of the first and the skip
layer, the NPHM members' magnitude bounds of the sparse mode) is computed once per call, the
points are processed in chunks under ``torch.inference_mode()``, so memory stays bounded
whatever the number of points.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from torch import nn

from nphm.boxes import FITTING_BOUNDS

DEFAULT_CHUNK = 32768
#: The NPHM exact mode runs every member on every point of a chunk: its chunks are cut to at most
#: this many (member, point) rows, so that its activations stay near 200 MB at release width
#: (40 members x 32,768 points took 2.7 GB).
EXACT_MODE_ROWS = 262144


def _as_batch(latent: torch.Tensor) -> torch.Tensor:
    return latent[None] if latent.dim() == 1 else latent


def sdf_function(
    identity: nn.Module,
    z_id: torch.Tensor,
    mode: Optional[str] = None,
    chunk: int = DEFAULT_CHUNK,
    probe_box: Sequence[Sequence[float]] = FITTING_BOUNDS,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function mapping canonical points (N, 3) to SDF values (N,) for one identity.

    Args:
        identity: NPHM or NPM identity model.
        z_id: (D,) or (1, D) identity latent.
        mode: NPHM query mode (``"sparse"`` / ``"exact"``; default the model's).
        chunk: points per model call (the NPHM exact mode: at most
            :data:`EXACT_MODE_ROWS` / members, which bounds its memory).
        probe_box: ``(min, max)`` box (nphm frame) over which the NPHM sparse mode measures
            its members' magnitudes (see ``NPHMIdentity.member_bounds``); queries outside it
            stay covered through the slope term.
    """
    z = _as_batch(z_id)
    bounds = None
    with torch.inference_mode():
        anchors = identity.anchors(z)
        resolved = mode or getattr(identity, "query_mode", None)
        if resolved == "sparse" and hasattr(identity, "member_bounds"):
            bounds = identity.member_bounds(z, probe_box[0], probe_box[1], anchors=anchors)
    if resolved == "exact" and hasattr(identity, "n_members"):
        chunk = max(1, min(chunk, EXACT_MODE_ROWS // identity.n_members))
    extra = {} if bounds is None else {"member_bounds": bounds}

    def sdf(points: torch.Tensor) -> torch.Tensor:
        out = torch.empty(points.shape[0], dtype=points.dtype, device=points.device)
        with torch.inference_mode():
            for start in range(0, points.shape[0], chunk):
                part = points[start : start + chunk][None]
                out[start : start + chunk] = identity(part, z, mode=mode, anchors=anchors, **extra)[0][0, :, 0]
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
