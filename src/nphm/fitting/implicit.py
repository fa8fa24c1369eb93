"""Inverting the forward deformation: canonical correspondences of observed points.

The expression model maps canonical points forward, ``x_p = x_c + D(x_c; z_id, z_ex)``. To
compare an observation of a posed face with the canonical SDF, every observed point ``x_obs``
needs its canonical ``x_c`` with ``x_c + D(x_c) = x_obs``: found by Broyden's method
(:func:`find_canonical`, no autograd), then made differentiable w.r.t. the latents by the
implicit function theorem (:func:`implicit_canonical`):

    dx_c/dz = -J^{-1} dD/dz,   J = I + dD/dx at x_c,

realised with autograd as ``x_c' = x_c - J^{-1} (x_p - stopgrad(x_p))`` (value ``x_c``,
gradient the implicit one). When the observations themselves depend on parameters (a pose,
:mod:`nphm.fitting.pose`), ``dx_c/dx_obs = J^{-1}`` enters the same way:
``x_c' = x_c - J^{-1} [(x_p - stopgrad(x_p)) - (x_obs - stopgrad(x_obs))]``.

During a fit, :class:`RootCache` keeps every point's last root and inverse Jacobian so that the
next solve starts there (warm start, see its docstring).

Points are handled as one flat list ``(n, 3)`` with a group id per point (the observation whose
latents condition the deformation); groups are packed into fixed-length rows so that one batched
call evaluates all of them, whatever their sizes. Jacobians of ``x + D(x)`` come by default from
one forward-mode pass of the deformation MLP (``forward_with_jacobian`` of the models: the three
tangents go through every layer together with the primal, which keeps its autograd graph to the
latents); ``jacobian="backward"`` uses three autograd backward passes through one primal pass
instead (models without ``forward_with_jacobian`` always do).

In the implicit step the exact Jacobian at the roots may be replaced by Broyden's last
inverse-Jacobian estimate there (``J_inv`` of :func:`implicit_canonical`): it skips the Jacobian
at the roots; the latent gradient then carries the estimate's error (tests bound it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import nn

from nphm.fitting.broyden import broyden
from nphm.fitting.schedule import BroydenSettings


def batched_inverse(J: torch.Tensor) -> torch.Tensor:
    """Inverse of every 3x3 matrix in ``J`` (..., 3, 3); singular ones give the identity."""
    inv, info = torch.linalg.inv_ex(J)
    bad = (info != 0) | ~torch.isfinite(inv).flatten(-2).all(-1)
    if bad.any():
        eye = torch.eye(J.shape[-1], dtype=J.dtype, device=J.device).expand_as(inv)
        inv = torch.where(bad[..., None, None], eye, inv)
    return inv


class Packing:
    """Packs a flat list of points, sorted by group, into rows of one group each.

    Args:
        group: (n,) int64 group id of every point, ascending.
        n_groups: number of groups G.
        row_len: points per row; default the mean size of the non-empty groups, so that at
            most one partly filled row per group is wasted.

    Attributes:
        row_group: (R,) group of every row; ``row``, ``col``: (n,) position of every point.
    """

    def __init__(self, group: torch.Tensor, n_groups: int, row_len: Optional[int] = None) -> None:
        n = group.numel()
        counts = torch.bincount(group, minlength=n_groups)
        if row_len is None:
            row_len = max(1, math.ceil(n / max(1, int((counts > 0).sum()))))
        self.row_len = int(row_len)
        rows_per_group = torch.div(counts + self.row_len - 1, self.row_len, rounding_mode="floor")
        first_row = torch.cumsum(rows_per_group, 0) - rows_per_group
        first = torch.cumsum(counts, 0) - counts
        rank = torch.arange(n, device=group.device) - first[group]
        self.row = first_row[group] + torch.div(rank, self.row_len, rounding_mode="floor")
        self.col = rank % self.row_len
        self.row_group = torch.repeat_interleave(torch.arange(n_groups, device=group.device), rows_per_group)

    def pack(self, values: torch.Tensor) -> torch.Tensor:
        """(n, ...) -> (R, row_len, ...), zero padded."""
        out = values.new_zeros(self.row_group.numel(), self.row_len, *values.shape[1:])
        return out.index_put((self.row, self.col), values)

    def unpack(self, packed: torch.Tensor) -> torch.Tensor:
        """(R, row_len, ...) -> (n, ...)."""
        return packed[self.row, self.col]


#: How :meth:`ForwardDeformation.posed_and_jacobian` differentiates.
JACOBIAN_MODES = ("forward", "forward_bf16", "backward")


class ForwardDeformation:
    """``x -> x + D(x)`` for G groups of points (observations), each with its own latents.

    Args:
        deformation: NPHM or NPM deformation model (eval mode for fitting, as the release).
        z_id: (G, D_id) identity latent per group.
        z_ex: (G, D_ex) expression latent per group.
        anchors: (G, K, 3) anchors of the identity (NPHM ``compress`` mode) or None.
        jacobian: ``"forward"`` (one forward-mode pass, where the model offers it),
            ``"forward_bf16"`` (the same with bfloat16 tangent matmuls: the posed points stay
            exact, the Jacobian, a preconditioner and the implicit step's direction, carries
            bf16 rounding) or ``"backward"`` (three autograd backward passes) for
            :meth:`posed_and_jacobian`.
    """

    def __init__(
        self,
        deformation: nn.Module,
        z_id: torch.Tensor,
        z_ex: torch.Tensor,
        anchors: Optional[torch.Tensor] = None,
        jacobian: str = "forward",
    ) -> None:
        if jacobian not in JACOBIAN_MODES:
            raise ValueError(f"jacobian must be one of {JACOBIAN_MODES}, got {jacobian!r}")
        self.jacobian = jacobian
        if z_id.dim() != 2 or z_ex.dim() != 2 or z_id.shape[0] != z_ex.shape[0]:
            raise ValueError(
                f"z_id (G, D_id) and z_ex (G, D_ex) expected, got {tuple(z_id.shape)}, {tuple(z_ex.shape)}"
            )
        self.deformation = deformation
        self.z_id = z_id
        self.z_ex = z_ex
        self.anchors = anchors

    @property
    def n_groups(self) -> int:
        return self.z_id.shape[0]

    def batched(self, points: torch.Tensor, groups: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Posed points (b, N, 3) of canonical ``points`` (b, N, 3); row ``i`` uses the latents of
        group ``groups[i]`` (all G groups in order when None)."""
        if groups is None:
            z_id, z_ex, anchors = self.z_id, self.z_ex, self.anchors
        else:
            z_id, z_ex = self.z_id[groups], self.z_ex[groups]
            anchors = None if self.anchors is None else self.anchors[groups]
        return points + self.deformation(points, z_id, z_ex, anchors)

    def posed(self, points: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
        """Posed positions (n, 3) of canonical ``points`` (n, 3) with ascending ``group`` (n,)."""
        packing = Packing(group, self.n_groups)
        return packing.unpack(self.batched(packing.pack(points), packing.row_group))

    def posed_and_jacobian(self, points: torch.Tensor, group: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Posed positions and Jacobians of ``x + D(x)``.

        Args:
            points: (n, 3) canonical points; group: (n,) ascending group ids.
        Returns:
            ``(posed (n, 3), J (n, 3, 3))`` with ``J[k, i, j] = d posed_i / d x_j`` at point k
            (detached). ``posed`` carries the autograd graph to the latents when they require grad.
        """
        packing = Packing(group, self.n_groups)
        if self.jacobian != "backward" and hasattr(self.deformation, "forward_with_jacobian"):
            x = packing.pack(points.detach())
            rows = packing.row_group
            anchors = None if self.anchors is None else self.anchors[rows]
            low = torch.bfloat16 if self.jacobian == "forward_bf16" else None
            offsets, jac = self.deformation.forward_with_jacobian(x, self.z_id[rows], self.z_ex[rows], anchors, low)
            eye = torch.eye(3, dtype=jac.dtype, device=jac.device)
            return packing.unpack(x + offsets), packing.unpack(jac) + eye
        x = packing.pack(points.detach()).requires_grad_(True)
        with torch.enable_grad():
            posed = self.batched(x, packing.row_group)
            ones = torch.ones_like(posed[..., 0])
            rows = [torch.autograd.grad(posed[..., i], x, ones, retain_graph=True)[0] for i in range(3)]
        return packing.unpack(posed), packing.unpack(torch.stack(rows, dim=-2))

    def detached(self) -> "ForwardDeformation":
        """The same deformation with latents cut from the autograd graph (for root finding)."""
        anchors = None if self.anchors is None else self.anchors.detach()
        return ForwardDeformation(self.deformation, self.z_id.detach(), self.z_ex.detach(), anchors, self.jacobian)


def batch_groups(batch: int, n: int, device=None) -> torch.Tensor:
    """Group ids (batch * n,) of a (batch, n, 3) array flattened to (batch * n, 3)."""
    return torch.arange(batch, device=device).repeat_interleave(n)


@dataclass
class RootFindingResult:
    """Canonical correspondences of observed points (flat, in the order of the input).

    Attributes:
        canonical: (n, 3) best Broyden iterate (no autograd graph).
        converged: (n,) bool, residual below the convergence threshold.
        residual: (n,) ``||x_c + D(x_c) - x_obs||``.
        iterations: Broyden iterations run.
        evaluations: point evaluations of the deformation in the Broyden loop (start included).
        J_inv: (n, 3, 3) Broyden's last inverse-Jacobian estimate of every point.
        warm: number of points that started from a cached root (:class:`RootCache`).
    """

    canonical: torch.Tensor
    converged: torch.Tensor
    residual: torch.Tensor
    iterations: int
    evaluations: int
    J_inv: Optional[torch.Tensor] = None
    warm: int = 0

    @property
    def converged_fraction(self) -> float:
        return float(self.converged.float().mean()) if self.converged.numel() else 0.0


class RootCache:
    """The last root and inverse Jacobian of every observed point of a fit (warm starts).

    During a fit the latents move little from one step to the next, and so do the roots of the
    points drawn again. Starting Broyden at the point's last root with the inverse Jacobian there
    (instead of at the observation with the true Jacobian there, the release's start) reaches the
    same threshold in a few iterations and skips the Jacobian at the observation. Points never
    solved, or not converged last time, start the release's way.

    Args:
        n_points: T, the number of observed points (all observations of the person).
    Attributes:
        canonical: (T, 3); J_inv: (T, 3, 3); valid: (T,) bool.
    """

    def __init__(self, n_points: int, device=None, dtype=torch.float32) -> None:
        self.canonical = torch.zeros(n_points, 3, device=device, dtype=dtype)
        self.J_inv = torch.zeros(n_points, 3, 3, device=device, dtype=dtype)
        self.valid = torch.zeros(n_points, dtype=torch.bool, device=device)

    def starts(self, index: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x0 (n, 3), J_inv0 (n, 3, 3), warm (n,) bool)`` for the points ``index`` (n,)."""
        return self.canonical[index], self.J_inv[index], self.valid[index]

    def store(self, index: torch.Tensor, canonical: torch.Tensor, J_inv: torch.Tensor, ok: torch.Tensor) -> None:
        """Remember the roots of points ``index`` where ``ok``; forget the others."""
        ok = ok & torch.isfinite(J_inv.flatten(1)).all(1) & torch.isfinite(canonical).all(1)
        self.valid[index] = ok
        keep = index[ok]
        self.canonical[keep] = canonical[ok].detach()
        self.J_inv[keep] = J_inv[ok].detach()

    def copy(self) -> "RootCache":
        other = RootCache(0)
        other.canonical, other.J_inv, other.valid = self.canonical.clone(), self.J_inv.clone(), self.valid.clone()
        return other


def find_canonical(
    forward: ForwardDeformation,
    observed: torch.Tensor,
    group: torch.Tensor,
    settings: BroydenSettings = BroydenSettings(),
    start: Optional[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None,
) -> RootFindingResult:
    """Solve ``x_c + D(x_c) = x_obs`` for every observed point (no autograd).

    Starts at ``x_c = x_obs`` with the inverse of the true Jacobian there (the release's
    protocol), see :func:`nphm.fitting.broyden.broyden`; points marked ``warm`` in ``start``
    start at their given ``x0`` and ``J_inv0`` instead (:class:`RootCache`).

    Args:
        forward: the deformation with the latents of every group.
        observed: (n, 3) observed points in the nphm frame.
        group: (n,) ascending group (observation) id of every point.
        start: optional ``(x0 (n, 3), J_inv0 (n, 3, 3), warm (n,) bool)``.
    """
    if observed.dim() != 2 or observed.shape[-1] != 3 or group.shape != observed.shape[:1]:
        raise ValueError(f"observed must be (n, 3) with group (n,), got {tuple(observed.shape)}, {tuple(group.shape)}")
    n = observed.shape[0]
    if n == 0:
        empty = observed.new_zeros(0)
        return RootFindingResult(observed.clone(), empty.bool(), empty, 0, 0, observed.new_zeros(0, 3, 3))
    forward = forward.detached()
    with torch.no_grad():
        x0 = observed.clone()
        J_inv0 = observed.new_empty(n, 3, 3)
        g0 = observed.new_empty(n, 3)
        warm = torch.zeros(n, dtype=torch.bool, device=observed.device) if start is None else start[2]
        cold = torch.nonzero(~warm, as_tuple=True)[0]
        hot = torch.nonzero(warm, as_tuple=True)[0]
        if cold.numel():
            posed, J = forward.posed_and_jacobian(observed[cold], group[cold])
            g0[cold] = posed.detach() - observed[cold]
            J_inv0[cold] = batched_inverse(J)
        if hot.numel():
            x0[hot] = start[0][hot]
            J_inv0[hot] = start[1][hot]
            g0[hot] = forward.posed(x0[hot], group[hot]) - observed[hot]

        def residual(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
            return forward.posed(x, group[index]) - observed[index]

        result = broyden(residual, x0, J_inv0, settings, g0=g0)
    return RootFindingResult(
        canonical=result.x,
        converged=result.converged,
        residual=result.residual,
        iterations=result.iterations,
        evaluations=result.evaluations + n,
        J_inv=result.J_inv,
        warm=int(hot.numel()),
    )


def implicit_canonical(
    forward: ForwardDeformation,
    canonical: torch.Tensor,
    group: torch.Tensor,
    return_inverse: bool = False,
    observed: Optional[torch.Tensor] = None,
    J_inv: Optional[torch.Tensor] = None,
):
    """Canonical points whose gradient w.r.t. the latents (and the observations) is the implicit one.

    Args:
        canonical: (n, 3) roots from :func:`find_canonical` (treated as constants).
        group: (n,) ascending group ids.
        return_inverse: also return ``J^{-1}`` (n, 3, 3) at the roots (detached).
        observed: (n, 3) the observed points ``x_obs`` the roots solve for, when they depend on
            parameters (a pose of the observations, :mod:`nphm.fitting.pose`); None: constants.
        J_inv: (n, 3, 3) an estimate of ``J^{-1}`` at the roots to use instead of the exact one
            (Broyden's last estimate, :attr:`RootFindingResult.J_inv`): only the primal pass is
            run then, no Jacobian; None: the exact inverse.
    Returns:
        (n, 3) equal in value to ``canonical``; backpropagating through it gives
        ``dx_c/dz = -J^{-1} dD/dz`` with ``J = I + dD/dx`` at ``x_c`` (detached), and with
        ``observed`` also ``dx_c/dx_obs = J^{-1}`` (differentiating ``x_c + D(x_c) = x_obs``).
        With ``return_inverse``, the pair ``(points, J_inv)``.
    """
    x_c = canonical.detach()
    if x_c.shape[0] == 0:
        return (x_c, x_c.new_zeros(0, 3, 3)) if return_inverse else x_c
    if J_inv is None:
        posed, J = forward.posed_and_jacobian(x_c, group)
        J_inv = batched_inverse(J.detach())
    else:
        posed, J_inv = forward.posed(x_c, group), J_inv.detach()
    correction = posed - posed.detach()
    if observed is not None:
        # x_c' = x_c - J^-1 [(x_p - sg(x_p)) - (x_obs - sg(x_obs))]: value x_c, d/dx_obs = J^-1
        correction = correction - (observed - observed.detach())
    moved = x_c - (J_inv @ correction[..., None])[..., 0]
    return (moved, J_inv) if return_inverse else moved
