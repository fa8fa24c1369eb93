"""Expression models: forward deformation fields from the canonical (neutral) space.

``offsets = model(points, z_id, z_ex, anchors)`` with points (B, N, 3) canonical, nphm frame;
the posed point is ``points + offsets``. Parameter names follow the release.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from nphm.models.deepsdf import DeepSDF

#: Conditioning modes of the NPHM deformation network.
NPHM_MODES = ("compress", "glob_only", "expr_only")
#: Standard deviation of the noise added to the compressed identity code while training.
COMPRESS_NOISE_STD = 1.0 / 200.0


class NPHMDeformation(nn.Module):
    """NPHM forward deformation MLP conditioned on the identity and an expression latent.

    Modes:

    * ``compress`` (release default): ``compressor`` maps ``[z_id, anchors.flatten()]`` to 32
      values (N(0, 1/200) noise added in training mode); the MLP sees ``[xyz, c(32), z_ex]``.
    * ``glob_only``: the MLP sees ``[xyz, z_glob, z_ex]``.
    * ``expr_only``: the MLP sees ``[xyz, z_ex]``.
    """

    def __init__(
        self,
        mode: str = "compress",
        lat_dim_expr: int = 200,
        lat_dim_id_compressed: int = 32,
        lat_dim_glob_shape: int = 64,
        lat_dim_loc_shape: int = 32,
        n_loc: int = 39,
        hidden_dim: int = 512,
        n_layers: int = 6,
    ) -> None:
        super().__init__()
        if mode not in NPHM_MODES:
            raise ValueError(f"unknown deformation mode {mode!r}; expected one of {NPHM_MODES}")
        self.mode = mode
        self.lat_dim_expr = lat_dim_expr
        self.lat_dim_glob_shape = lat_dim_glob_shape
        self.n_loc = n_loc
        self.lat_dim_id = lat_dim_glob_shape + (n_loc + 1) * lat_dim_loc_shape
        if mode == "compress":
            self.compressor = nn.Sequential(nn.Linear(self.lat_dim_id + 3 * n_loc, lat_dim_id_compressed))
            cond_dim = lat_dim_id_compressed + lat_dim_expr
        elif mode == "glob_only":
            cond_dim = lat_dim_glob_shape + lat_dim_expr
        else:
            cond_dim = lat_dim_expr
        self.defDeepSDF = DeepSDF(cond_dim, hidden_dim, n_layers, out_dim=3)

    def condition(self, z_id: torch.Tensor, z_ex: torch.Tensor, anchors: Optional[torch.Tensor]) -> torch.Tensor:
        """Per-batch condition vector (B, C) of the MLP."""
        if self.mode == "compress":
            if anchors is None:
                raise ValueError("the 'compress' deformation mode needs the identity's anchors")
            code = self.compressor(torch.cat([z_id, anchors.reshape(anchors.shape[0], -1)], dim=-1))
            if self.training:
                code = code + torch.randn_like(code) * COMPRESS_NOISE_STD
            return torch.cat([code, z_ex], dim=-1)
        if self.mode == "glob_only":
            return torch.cat([z_id[:, : self.lat_dim_glob_shape], z_ex], dim=-1)
        return z_ex

    def forward(
        self,
        points: torch.Tensor,
        z_id: torch.Tensor,
        z_ex: torch.Tensor,
        anchors: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Offsets (B, N, 3) of canonical ``points`` (B, N, 3); z_id (B, D_id), z_ex (B, D_ex),
        anchors (B, K, 3) (needed in ``compress`` mode)."""
        return self.defDeepSDF(points, self.condition(z_id, z_ex, anchors))

    def forward_with_jacobian(
        self,
        points: torch.Tensor,
        z_id: torch.Tensor,
        z_ex: torch.Tensor,
        anchors: Optional[torch.Tensor] = None,
        tangent_dtype: Optional[torch.dtype] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Offsets (B, N, 3) and their Jacobian (B, N, 3, 3) w.r.t. ``points`` (detached), by
        forward mode (:meth:`nphm.models.deepsdf.DeepSDF.forward_with_jacobian`, also for
        ``tangent_dtype``)."""
        return self.defDeepSDF.forward_with_jacobian(points, self.condition(z_id, z_ex, anchors), tangent_dtype)


class NPMDeformation(DeepSDF):
    """NPM baseline deformation: one global MLP on ``[xyz, z_id, z_ex]`` with 3 outputs
    (release: 8 hidden layers of width 1024)."""

    def __init__(
        self, lat_dim_id: int = 512, lat_dim_expr: int = 200, hidden_dim: int = 1024, n_layers: int = 8
    ) -> None:
        super().__init__(lat_dim_id + lat_dim_expr, hidden_dim, n_layers, out_dim=3)
        self.lat_dim_id = lat_dim_id
        self.lat_dim_expr = lat_dim_expr
        self.mode = "npm"

    def forward(
        self,
        points: torch.Tensor,
        z_id: torch.Tensor,
        z_ex: torch.Tensor,
        anchors: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Offsets (B, N, 3); ``anchors`` is ignored (NPM has none)."""
        return super().forward(points, torch.cat([z_id, z_ex], dim=-1))

    def forward_with_jacobian(
        self,
        points: torch.Tensor,
        z_id: torch.Tensor,
        z_ex: torch.Tensor,
        anchors: Optional[torch.Tensor] = None,
        tangent_dtype: Optional[torch.dtype] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Offsets (B, N, 3) and their Jacobian (B, N, 3, 3) w.r.t. ``points`` (detached)."""
        return super().forward_with_jacobian(points, torch.cat([z_id, z_ex], dim=-1), tangent_dtype)
