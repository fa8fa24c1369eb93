"""Batched Broyden root finding for many independent 3-D problems ``g_i(x_i) = 0``.

Every point has its own unknown ``x_i`` (3,) and its own inverse-Jacobian estimate (3, 3); the
solver keeps a set of *active* points and evaluates ``g`` only on them, so points that
converged (or diverged) early cost nothing afterwards. No Python loop over points.

Per iteration, for the active points (Broyden's "good" method on the inverse, as in the
release and in the DEQ code it follows):

    x  <- x + dx,           dx = -J_inv g(x)
    dg  = g(x_new) - g(x_old)
    J_inv <- J_inv + (dx - J_inv dg) (dx^T J_inv) / (dx^T J_inv dg +- eps)

A point leaves the active set when its best residual norm falls below ``converge_threshold``
(converged) or its current residual norm reaches ``diverge_threshold`` (dropped), or when its
residual is not finite. The best iterate of every point is returned.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from nphm.fitting.schedule import BroydenSettings

#: ``g(x, index) -> residual``: x (n, 3) the current iterates of the points ``index`` (n,) (int64
#: indices into the full set, ascending); returns (n, 3).
ResidualFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class BroydenResult:
    """Outcome of :func:`broyden`.

    Attributes:
        x: (N, 3) best iterate of every point.
        residual: (N,) residual norm ``||g(x)||`` at ``x``.
        converged: (N,) bool, ``residual < converge_threshold``.
        iterations: iterations run (the largest any point needed).
        evaluations: total number of point evaluations of ``g`` (including the start).
        J_inv: (N, 3, 3) the last inverse-Jacobian estimate of every point (a start for the next
            solve of a nearby problem).
    """

    x: torch.Tensor
    residual: torch.Tensor
    converged: torch.Tensor
    iterations: int
    evaluations: int
    J_inv: torch.Tensor


def _norm(v: torch.Tensor) -> torch.Tensor:
    n = torch.linalg.vector_norm(v, dim=-1)
    return torch.where(torch.isfinite(n), n, torch.full_like(n, float("inf")))


@torch.no_grad()
def broyden(
    g: ResidualFn,
    x0: torch.Tensor,
    J_inv0: torch.Tensor,
    settings: BroydenSettings = BroydenSettings(),
    g0: Optional[torch.Tensor] = None,
) -> BroydenResult:
    """Solve ``g(x) = 0`` independently for N points.

    Args:
        g: residual function evaluated on subsets of points (see :data:`ResidualFn`).
        x0: (N, 3) start (the release starts at the observed point).
        J_inv0: (N, 3, 3) start inverse Jacobian (the release: inverse of the true Jacobian at x0).
        settings: iteration limit and thresholds.
        g0: (N, 3) ``g(x0)`` if already known (saves one evaluation).
    Returns:
        :class:`BroydenResult`.
    """
    if x0.dim() != 2 or x0.shape[-1] != 3:
        raise ValueError(f"x0 must be (N, 3), got {tuple(x0.shape)}")
    if J_inv0.shape != (x0.shape[0], 3, 3):
        raise ValueError(f"J_inv0 must be ({x0.shape[0]}, 3, 3), got {tuple(J_inv0.shape)}")
    N = x0.shape[0]
    device = x0.device
    all_idx = torch.arange(N, device=device)
    evaluations = 0
    if g0 is None:
        g0 = g(x0, all_idx)
        evaluations += N
    x = x0.clone()
    gx = g0.clone()
    J_inv = J_inv0.clone()
    best_x = x0.clone()
    best_norm = _norm(gx)

    cvg, dvg = settings.converge_threshold, settings.diverge_threshold
    active = all_idx[(best_norm >= cvg) & torch.isfinite(best_norm) & torch.isfinite(J_inv.flatten(1)).all(1)]
    update = -(J_inv[active] @ gx[active, :, None])[..., 0]
    iterations = 0
    for _ in range(settings.max_iters):
        if active.numel() == 0:
            break
        iterations += 1
        dx = update
        x_new = x[active] + dx
        g_new = g(x_new, active)
        evaluations += active.numel()
        dg = g_new - gx[active]
        x[active] = x_new
        gx[active] = g_new

        norm = _norm(g_new)
        better = norm < best_norm[active]
        improved = active[better]
        best_norm[improved] = norm[better]
        best_x[improved] = x_new[better]

        keep = (best_norm[active] >= cvg) & (norm < dvg)
        active, dx, dg = active[keep], dx[keep], dg[keep]
        if active.numel() == 0:
            break
        Ji = J_inv[active]
        vT = (dx[:, None, :] @ Ji)  # (n, 1, 3)
        a = dx[..., None] - Ji @ dg[..., None]  # (n, 3, 1)
        b = vT @ dg[..., None]  # (n, 1, 1)
        b = torch.where(b >= 0, b + settings.eps, b - settings.eps)
        Ji = Ji + (a / b) @ vT
        J_inv[active] = Ji
        update = -(Ji @ gx[active, :, None])[..., 0]

    return BroydenResult(
        x=best_x,
        residual=best_norm,
        converged=best_norm < cvg,
        iterations=iterations,
        evaluations=evaluations,
        J_inv=J_inv,
    )
