"""Identity models: NPHM (ensemble of local DeepSDFs around facial anchors) and NPM (global DeepSDF).

Both map canonical points and an identity latent to signed distances::

    sdf, anchors = model(points, z_id)   # points (B, N, 3) nphm frame, z_id (B, D)
                                         # sdf (B, N, 1), anchors (B, 39, 3) or None

Parameter names follow the release so that official ``decoder_state_dict`` s load strictly.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from nphm.models.deepsdf import DeepSDF
from nphm.models.ensemble import EnsembledDeepSDF

#: Gaussian blending variance (release: 0.1 ** 2).
BLEND_VARIANCE = 0.01
#: Squared-distance constant of the background member (release: 0.2).
BACKGROUND_DIST2 = 0.2
#: Added to each anchor distance before squaring (release: 10e-6).
DIST_EPS = 1e-5
#: Added to the sum of blend weights before normalising (release: 1e-6).
NORM_EPS = 1e-6
#: Default bound on the total normalised blend weight that sparse mode may drop per point.
SPARSE_TOL = 1e-6


def blend_weights(points: torch.Tensor, anchors: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Normalised Gaussian blend weights of the anchor members and of the background member.

    Args:
        points: (B, N, 3) nphm frame.
        anchors: (B, K, 3).
    Returns:
        ``(w, w_bg)``: (B, N, K) and (B, N); ``w.sum(-1) + w_bg`` is just below 1 (the
        release normalises by ``sum + 1e-6``).
    """
    dist = torch.linalg.vector_norm(points[:, :, None, :] - anchors[:, None, :, :], dim=-1)
    w = torch.exp(-((dist + DIST_EPS) ** 2) / BLEND_VARIANCE)
    w_bg = torch.exp(torch.tensor(-BACKGROUND_DIST2 / BLEND_VARIANCE, dtype=w.dtype, device=w.device))
    denom = w.sum(-1) + w_bg + NORM_EPS
    return w / denom[..., None], w_bg / denom


def members_to_keep(weights: torch.Tensor, tol: float) -> torch.Tensor:
    """Which anchor members a point needs so that the dropped blend weight stays <= ``tol``.

    The smallest weights of each point are dropped as long as their running sum stays within
    ``tol``. Dropping members with total normalised weight ``W_d`` changes the blended SDF by at
    most ``W_d * max_k |sdf_k|`` (the exact normaliser is kept), see :class:`NPHMIdentity`.

    Args:
        weights: (B, N, K) normalised blend weights.
    Returns:
        (B, N, K) bool.
    """
    if tol <= 0:
        return torch.ones_like(weights, dtype=torch.bool)
    sorted_w, order = torch.sort(weights, dim=-1)
    drop_sorted = torch.cumsum(sorted_w, dim=-1) <= tol
    keep = torch.ones_like(weights, dtype=torch.bool)
    return keep.scatter(-1, order, ~drop_sorted)


class NPHMIdentity(nn.Module):
    """NPHM identity model: 39 local DeepSDFs around predicted facial anchors + 1 background.

    Latent layout ``z_id = [z_glob (G), z_1, z*_1, ..., z_P, z*_P, z_mid..., z_background]``,
    each local code of size ``lat_dim_loc``: D = G + (K + 1) * lat_dim_loc (64 + 40 * 32 = 1344).
    Member ``k < K`` sees ``x - a_k`` (x negated for the second member of each symmetric pair),
    the background member sees ``x``. The SDF is the Gaussian blend of the member SDFs.

    Query modes (``mode`` argument or :attr:`query_mode`):

    * ``"exact"``: every member on every point, the release's result (without its eval-mode
      slip that overwrites the last query point).
    * ``"sparse"``: a member is evaluated only where it carries blend weight; per point the
      smallest normalised weights are dropped while their sum stays <= :attr:`sparse_tol`.
      Error bound: ``|sdf_sparse - sdf_exact| <= sparse_tol * max_k |sdf_k|`` over the dropped
      members. With the default ``1e-6`` this is <= 1e-4 nphm units while member SDFs stay
      below 100 in magnitude (trained members are SDF-like: |sdf_k| is of the order of the
      distance to the surface, i.e. < 2 in the fitting box); the speed benchmark and the tests
      measure the actual difference.
    """

    def __init__(
        self,
        lat_dim_glob: int = 64,
        lat_dim_loc: int = 32,
        n_loc: int = 39,
        n_symm_pairs: int = 16,
        hidden_dim: int = 200,
        n_layers: int = 4,
        pos_mlp_dim: int = 256,
        anchors_mean: Optional[torch.Tensor] = None,
    ) -> None:
        super().__init__()
        self.lat_dim_glob = lat_dim_glob
        self.lat_dim_loc = lat_dim_loc
        self.n_loc = n_loc
        self.n_symm_pairs = n_symm_pairs
        self.lat_dim = lat_dim_glob + (n_loc + 1) * lat_dim_loc
        self.ensembled_deep_sdf = EnsembledDeepSDF(
            n_members=n_loc + 1,
            n_symm=n_symm_pairs,
            lat_dim=lat_dim_glob + lat_dim_loc,
            hidden_dim=hidden_dim,
            nlayers=n_layers,
        )
        self.mlp_pos = nn.Sequential(
            nn.Linear(lat_dim_glob, pos_mlp_dim),
            nn.ReLU(),
            nn.Linear(pos_mlp_dim, pos_mlp_dim),
            nn.ReLU(),
            nn.Linear(pos_mlp_dim, n_loc * 3),
        )
        if anchors_mean is None:
            anchors_mean = torch.zeros(n_loc, 3)
        anchors_mean = torch.as_tensor(anchors_mean, dtype=torch.float32).reshape(n_loc, 3)
        # Not part of the release's state dict: kept out of it so official checkpoints load strictly.
        self.register_buffer("anchors_mean", anchors_mean, persistent=False)
        mirror = torch.ones(n_loc, 3)
        mirror[1 : 2 * n_symm_pairs : 2, 0] = -1.0
        self.register_buffer("mirror", mirror, persistent=False)
        self.query_mode = "sparse"
        self.sparse_tol = SPARSE_TOL

    @property
    def n_members(self) -> int:
        return self.n_loc + 1

    def anchors(self, z_id: torch.Tensor) -> torch.Tensor:
        """Facial anchors (B, K, 3) in the nphm frame predicted from ``z_id`` (B, D)."""
        offsets = self.mlp_pos(z_id[:, : self.lat_dim_glob]).view(-1, self.n_loc, 3)
        return offsets + self.anchors_mean

    def member_conditions(self, z_id: torch.Tensor) -> torch.Tensor:
        """(B, K+1, G+L) condition vector ``[z_glob, z_k]`` of every member."""
        B = z_id.shape[0]
        z_glob = z_id[:, : self.lat_dim_glob]
        z_loc = z_id[:, self.lat_dim_glob :].reshape(B, self.n_members, self.lat_dim_loc)
        return torch.cat([z_glob[:, None, :].expand(B, self.n_members, -1), z_loc], dim=-1)

    def _check(self, points: torch.Tensor, z_id: torch.Tensor) -> None:
        if points.dim() != 3 or points.shape[-1] != 3:
            raise ValueError(f"points must be (B, N, 3), got {tuple(points.shape)}")
        if z_id.dim() != 2 or z_id.shape[-1] != self.lat_dim or z_id.shape[0] != points.shape[0]:
            raise ValueError(
                f"z_id must be (B={points.shape[0]}, {self.lat_dim}), got {tuple(z_id.shape)}"
            )

    def forward(
        self,
        points: torch.Tensor,
        z_id: torch.Tensor,
        mode: Optional[str] = None,
        anchors: Optional[torch.Tensor] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """SDF of ``points`` (B, N, 3) for identities ``z_id`` (B, D).

        Args:
            mode: ``"exact"`` or ``"sparse"`` (default :attr:`query_mode`).
            anchors: (B, K, 3) precomputed ``self.anchors(z_id)`` to skip the anchor MLP.
        Returns:
            ``(sdf (B, N, 1), anchors (B, K, 3))``.
        """
        self._check(points, z_id)
        mode = mode or self.query_mode
        if anchors is None:
            anchors = self.anchors(z_id)
        cond = self.member_conditions(z_id)
        w, w_bg = blend_weights(points, anchors)
        if mode == "exact":
            sdf = self._sdf_exact(points, anchors, cond, w, w_bg)
        elif mode == "sparse":
            sdf = self._sdf_sparse(points, anchors, cond, w, w_bg)
        else:
            raise ValueError(f"unknown query mode {mode!r} (use 'exact' or 'sparse')")
        return sdf[..., None], anchors

    def _local_frames(self, points: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """(K+1, B, N, 3): points relative to every anchor (mirrored where needed), then x."""
        local = (points[None] - anchors.permute(1, 0, 2)[:, :, None, :]) * self.mirror[:, None, None, :]
        return torch.cat([local, points[None]], dim=0)

    def _sdf_exact(self, points, anchors, cond, w, w_bg) -> torch.Tensor:
        member_sdf = self.ensembled_deep_sdf.forward_dense(self._local_frames(points, anchors), cond)
        member_sdf = member_sdf[..., 0]  # (K+1, B, N)
        return torch.einsum("kbn,bnk->bn", member_sdf[:-1], w) + member_sdf[-1] * w_bg

    def _sdf_sparse(self, points, anchors, cond, w, w_bg) -> torch.Tensor:
        B, N, K = w.shape
        keep = members_to_keep(w, self.sparse_tol).permute(2, 0, 1)  # (K, B, N)
        member, batch, point = torch.nonzero(keep, as_tuple=True)  # member-major order
        local = (points[batch, point] - anchors[batch, member]) * self.mirror[member]
        # The background member is needed everywhere: append it as the last group.
        bg_batch = torch.arange(B, device=points.device).repeat_interleave(N)
        bg_point = torch.arange(N, device=points.device).repeat(B)
        all_local = torch.cat([local, points.reshape(B * N, 3)], dim=0)
        group = torch.cat([member * B + batch, K * B + bg_batch])
        values = self.ensembled_deep_sdf.forward_pairs(all_local, group, cond)[:, 0]
        n_pairs = member.shape[0]
        weighted = values[:n_pairs] * w[batch, point, member]
        sdf = (values[n_pairs:] * w_bg.reshape(-1)).reshape(B, N)
        flat = sdf.reshape(-1).index_add(0, batch * N + point, weighted)
        return flat.reshape(B, N)


class NPMIdentity(DeepSDF):
    """NPM baseline identity model: one global DeepSDF on ``[xyz, z_id]``.

    Release sizes: z_id 512, 8 hidden layers of width 1024, skip into layer 4, geometric
    initialisation of the last layer.
    """

    def __init__(self, lat_dim: int = 512, hidden_dim: int = 1024, n_layers: int = 8) -> None:
        super().__init__(lat_dim, hidden_dim, n_layers, out_dim=1, geometric_init=True, radius_init=1.0)

    def anchors(self, z_id: torch.Tensor) -> None:
        """NPM has no facial anchors."""
        return None

    def forward(self, points: torch.Tensor, z_id: torch.Tensor, mode: Optional[str] = None, anchors=None):
        """SDF (B, N, 1) of ``points`` (B, N, 3) for ``z_id`` (B, D); returns ``(sdf, None)``."""
        return super().forward(points, z_id), None
