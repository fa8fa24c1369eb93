"""Identity models: NPHM (ensemble of local DeepSDFs around facial anchors) and NPM (global DeepSDF).

Both map canonical points and an identity latent to signed distances::

    sdf, anchors = model(points, z_id)   # points (B, N, 3) nphm frame, z_id (B, D)
                                         # sdf (B, N, 1), anchors (B, 39, 3) or None

Parameter names follow the release so that official ``decoder_state_dict`` s load strictly.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Sequence, Tuple

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
#: Default bound on what sparse mode may drop per point: sum of weight * member magnitude.
SPARSE_TOL = 5e-5
#: Probe lattice (per axis) on which member magnitudes are measured.
PROBE_RESOLUTION = 10
#: Factor on the measured slope in the magnitude estimate (finite differences underestimate it).
SLOPE_SAFETY = 2.0


class MemberBounds(NamedTuple):
    """Estimated magnitude of every member's SDF, for the sparse query's drop rule.

    ``|sdf_k(x)| <= magnitude[b, k] + slope[b, k] * dist(x, box)`` for points ``x`` (nphm
    frame), ``box = (box_min, box_max)``: see :meth:`NPHMIdentity.member_bounds`.
    """

    magnitude: torch.Tensor  # (B, K+1)
    slope: torch.Tensor  # (B, K+1)
    box_min: torch.Tensor  # (3,)
    box_max: torch.Tensor  # (3,)

    def at(self, points: torch.Tensor) -> torch.Tensor:
        """(B, N, K+1) magnitude bound of every member at ``points`` (B, N, 3)."""
        outside = (self.box_min - points).clamp(min=0) + (points - self.box_max).clamp(min=0)
        dist = torch.linalg.vector_norm(outside, dim=-1)  # (B, N)
        return self.magnitude[:, None, :] + self.slope[:, None, :] * dist[..., None]


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


def members_to_keep(weights: torch.Tensor, tol: float, magnitudes: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Which members a point needs so that what the others could contribute stays <= ``tol``.

    Member ``k`` contributes ``w_k * sdf_k`` to the blend (the exact normaliser is kept), so
    dropping a set ``D`` changes the SDF by at most ``sum_D w_k * m_k`` with ``m_k >= |sdf_k|``.
    Per point the smallest terms ``w_k * m_k`` are dropped while their running sum stays
    within ``tol``.

    Args:
        weights: (B, N, M) normalised blend weights.
        magnitudes: (B, N, M) bounds ``m_k`` on the members' |SDF| (default 1 everywhere:
            then ``tol`` bounds the dropped blend weight).
    Returns:
        (B, N, M) bool.
    """
    if tol <= 0:
        return torch.ones_like(weights, dtype=torch.bool)
    terms = weights if magnitudes is None else weights * magnitudes
    sorted_t, order = torch.sort(terms, dim=-1)
    drop_sorted = torch.cumsum(sorted_t, dim=-1) <= tol
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
    * ``"sparse"``: a member is evaluated only where it matters. With ``member_bounds``
      (estimated magnitudes ``m_k`` of every member's SDF, :meth:`member_bounds`; the
      inference queries of :mod:`nphm.query` always pass them) the smallest terms
      ``w_k * m_k`` of a point (the background member's included) are dropped while their
      sum stays <= :attr:`sparse_tol`, so ``|sdf_sparse - sdf_exact| <= sparse_tol``
      (default 5e-5 nphm units) wherever the estimate holds. Without them (training and
      fitting, where the latent changes every step) ``m_k = 1`` is assumed: the dropped
      blend weight is <= ``sparse_tol`` and the error <= ``sparse_tol * max |sdf_k|``.
      The magnitudes matter: a member far from its anchor gets almost no training signal and
      its SDF there can reach hundreds of units (seen on trained models), which the exact
      blend still multiplies by a weight of 1e-7.
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

    def member_bounds(
        self,
        z_id: torch.Tensor,
        box_min: Sequence[float],
        box_max: Sequence[float],
        resolution: int = PROBE_RESOLUTION,
        anchors: Optional[torch.Tensor] = None,
    ) -> MemberBounds:
        """Estimate how large every member's SDF gets, for the sparse drop rule.

        All members are evaluated on a ``resolution^3`` lattice over the box (nphm frame).
        ``slope`` is :data:`SLOPE_SAFETY` times the largest gradient norm seen in finite
        differences between lattice neighbours, ``magnitude`` the largest ``|sdf_k|`` on the
        lattice plus ``slope`` times half a lattice cell's diagonal (the farthest a point of
        the box is from a lattice point). It is an estimate, not a certificate: it holds when
        a member's gradient stays below ``slope`` within a lattice cell.

        Args:
            z_id: (B, D). box_min, box_max: (3,) the box where queries are expected.
        Returns:
            :class:`MemberBounds` with ``(B, K+1)`` magnitudes and slopes.
        """
        lo = torch.as_tensor(box_min, dtype=z_id.dtype, device=z_id.device)
        hi = torch.as_tensor(box_max, dtype=z_id.dtype, device=z_id.device)
        axes = [torch.linspace(float(lo[d]), float(hi[d]), resolution, dtype=z_id.dtype, device=z_id.device)
                for d in range(3)]
        lattice = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(1, -1, 3)
        B = z_id.shape[0]
        with torch.no_grad():
            if anchors is None:
                anchors = self.anchors(z_id)
            local = self._local_frames(lattice.expand(B, -1, -1), anchors)
            values = self.ensembled_deep_sdf.forward_dense(local, self.member_conditions(z_id))[..., 0]
            values = values.reshape(self.n_members, B, resolution, resolution, resolution)
            spacing = (hi - lo) / (resolution - 1)
            slope_sq = torch.zeros(self.n_members, B, dtype=z_id.dtype, device=z_id.device)
            for d in range(3):
                diff = torch.diff(values, dim=2 + d).abs().flatten(2).amax(-1) / spacing[d]
                slope_sq = slope_sq + diff**2
            slope = SLOPE_SAFETY * slope_sq.sqrt()
            magnitude = values.abs().flatten(2).amax(-1) + slope * 0.5 * torch.linalg.vector_norm(spacing)
        return MemberBounds(magnitude.T.contiguous(), slope.T.contiguous(), lo, hi)

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
        member_bounds: Optional[MemberBounds] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """SDF of ``points`` (B, N, 3) for identities ``z_id`` (B, D).

        Args:
            mode: ``"exact"`` or ``"sparse"`` (default :attr:`query_mode`).
            anchors: (B, K, 3) precomputed ``self.anchors(z_id)`` to skip the anchor MLP.
            member_bounds: ``self.member_bounds(z_id)`` for the sparse drop rule (see the class).
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
            sdf = self._sdf_sparse(points, anchors, cond, w, w_bg, member_bounds)
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

    def _sdf_sparse(self, points, anchors, cond, w, w_bg, member_bounds) -> torch.Tensor:
        B, N, K = w.shape
        # The background member takes part in the selection like the others: near the face
        # its normalised weight (about exp(-20) relative to a close anchor) is negligible too.
        w_all = torch.cat([w, w_bg[..., None]], dim=-1)  # (B, N, K+1)
        magnitudes = None if member_bounds is None else member_bounds.at(points)
        keep = members_to_keep(w_all, self.sparse_tol, magnitudes).permute(2, 0, 1)  # (K+1, B, N)
        member, batch, point = torch.nonzero(keep, as_tuple=True)  # member-major order
        anchors_all = torch.cat([anchors, anchors.new_zeros(B, 1, 3)], dim=1)
        mirror_all = torch.cat([self.mirror, self.mirror.new_ones(1, 3)], dim=0)
        local = (points[batch, point] - anchors_all[batch, member]) * mirror_all[member]
        values = self.ensembled_deep_sdf.forward_pairs(local, member * B + batch, cond)[:, 0]
        weighted = values * w_all[batch, point, member]
        sdf = points.new_zeros(B * N).index_add(0, batch * N + point, weighted)
        return sdf.reshape(B, N)


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

    def forward(self, points: torch.Tensor, z_id: torch.Tensor, mode: Optional[str] = None, anchors=None,
                member_bounds=None):
        """SDF (B, N, 1) of ``points`` (B, N, 3) for ``z_id`` (B, D); returns ``(sdf, None)``."""
        return super().forward(points, z_id), None
