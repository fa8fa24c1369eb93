"""A fitting step written the straightforward way, as the release does it.

* the deformation network gets the full condition (identity latent, anchors, expression latent)
  copied to every point, and runs its compressor per point;
* Broyden evaluates the deformation on *all* points in every iteration and only updates the
  active ones; it stops early only when no point is active any more;
* Jacobians by one forward pass and three backward passes;
* the identity SDF with every ensemble member on every point (:func:`naive_nphm_sdf`);
* model parameters are left as they are (the release keeps ``requires_grad`` on, so the backward
  pass also computes parameter gradients).

Serves as the baseline of the fitting speed benchmark and as an independent reference for the
tests (same maths, different code). Not meant for real use.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from nphm.fitting.schedule import BroydenSettings
from nphm.reference.models import naive_deepsdf, naive_mlp, naive_nphm_sdf


def naive_deformation(
    model: nn.Module, points: torch.Tensor, z_id: torch.Tensor, z_ex: torch.Tensor, anchors: Optional[torch.Tensor]
) -> torch.Tensor:
    """Offsets (B, N, 3) with the condition copied to every point (B, N, C)."""
    B, N, _ = points.shape
    per_point = lambda t: t[:, None, :].expand(B, N, t.shape[-1])  # noqa: E731
    mode = getattr(model, "mode", "npm")
    if mode == "npm":
        cond = torch.cat([per_point(z_id), per_point(z_ex)], dim=-1)
        mlp = model
    else:
        mlp = model.defDeepSDF
        if mode == "compress":
            full = torch.cat([per_point(z_id), per_point(anchors.reshape(B, -1))], dim=-1)
            cond = torch.cat([model.compressor(full), per_point(z_ex)], dim=-1)
        elif mode == "glob_only":
            cond = torch.cat([per_point(z_id[:, : model.lat_dim_glob_shape]), per_point(z_ex)], dim=-1)
        else:
            cond = per_point(z_ex)
    return naive_mlp(mlp, torch.cat([points, cond], dim=-1))


def backward_jacobian(f, x: torch.Tensor) -> torch.Tensor:
    """Jacobian (B, N, 3, 3) of ``f`` at ``x`` (B, N, 3) by three backward passes."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        y = f(x)
        rows = []
        for i in range(3):
            d_out = torch.zeros_like(y)
            d_out[..., i] = 1.0
            rows.append(torch.autograd.grad(y, x, d_out, retain_graph=i < 2)[0])
    return torch.stack(rows, dim=-2)


@torch.no_grad()
def broyden_all_points(f_residual, x0: torch.Tensor, J_inv0: torch.Tensor, settings: BroydenSettings):
    """Broyden on (M, 3) points, evaluating ``f_residual`` on all M points every iteration.

    Returns ``(best x (M, 3), best residual norm (M,), converged (M,))``.
    """
    x = x0.clone()
    J_inv = J_inv0.clone()
    gx = f_residual(x)
    best_x = x.clone()
    best = gx.norm(dim=-1)
    active = torch.ones_like(best, dtype=torch.bool)
    update = -(J_inv @ gx[..., None])[..., 0]
    dx = torch.zeros_like(x)
    dg = torch.zeros_like(gx)
    for _ in range(settings.max_iters):
        dx[active] = update
        x[active] += dx[active]
        g_new = f_residual(x)
        dg[active] = g_new[active] - gx[active]
        gx[active] = g_new[active]
        norm = gx.norm(dim=-1)
        better = norm < best
        best[better] = norm[better]
        best_x[better] = x[better]
        active = (best > settings.converge_threshold) & (norm < settings.diverge_threshold)
        if not active.any():
            break
        vT = dx[active][:, None, :] @ J_inv[active]
        a = dx[active][..., None] - J_inv[active] @ dg[active][..., None]
        b = vT @ dg[active][..., None]
        b = torch.where(b >= 0, b + settings.eps, b - settings.eps)
        J_inv[active] += (a / b) @ vT
        update = -(J_inv[active] @ gx[active][..., None])[..., 0]
    return best_x, best, best < settings.converge_threshold


def reference_joint_loss(
    identity: nn.Module,
    deformation: nn.Module,
    z_id: torch.Tensor,
    z_ex: torch.Tensor,
    drawn_points: torch.Tensor,
    obs_idx: torch.Tensor,
    clamp: float,
    lambdas: Dict[str, float],
    broyden_settings: BroydenSettings = BroydenSettings(),
    unobserved: Sequence[int] = (30, 31, 39),
) -> Tuple[torch.Tensor, Dict[str, torch.Tensor], torch.Tensor]:
    """Loss of one joint fitting step, the straightforward way.

    Args:
        z_id: (D,), z_ex: (E, D_ex) latents; drawn_points: (O, P, 3) the drawn observed points
            (with repetitions); obs_idx: (O,) their observations.
    Returns:
        ``(total, terms, converged (O, P))``.
    """
    O, P, _ = drawn_points.shape
    z_id_b = z_id[None].expand(O, -1)
    z_ex_b = z_ex[obs_idx]
    local = hasattr(identity, "lat_dim_glob")
    anchors = identity.anchors(z_id[None]).expand(O, -1, -1) if local else None

    def posed(x):
        return x + naive_deformation(deformation, x, z_id_b, z_ex_b, anchors)

    J0 = backward_jacobian(posed, drawn_points)
    flat = drawn_points.reshape(-1, 3)
    x_c, _, converged = broyden_all_points(
        lambda x: (posed(x.reshape(O, P, 3)) - drawn_points).reshape(-1, 3),
        flat,
        torch.linalg.inv(J0.detach()).reshape(-1, 3, 3),
        broyden_settings,
    )
    x_c = x_c.reshape(O, P, 3).detach()
    x_p = posed(x_c)
    J_inv = torch.linalg.inv(backward_jacobian(posed, x_c).detach())
    x_c = x_c - torch.einsum("bnij,bnj->bni", J_inv, x_p - x_p.detach())

    if local:
        sdf = naive_nphm_sdf(identity, x_c, z_id_b)
    else:
        sdf = naive_deepsdf(identity, x_c, z_id_b)
    loss_abs = sdf[..., 0][converged.reshape(O, P)].abs()
    loss_abs = loss_abs[loss_abs < clamp]
    terms = {"surface": loss_abs.mean() if loss_abs.numel() else (sdf * 0).sum()}
    terms["reg_expr"] = (torch.norm(z_ex_b, dim=-1) ** 2).mean()
    if local:
        G, L = identity.lat_dim_glob, identity.lat_dim_loc
        terms["reg_loc"] = torch.norm(z_id[G:]) ** 2
        terms["reg_global"] = torch.norm(z_id[:G]) ** 2
        terms["reg_unobserved"] = sum(torch.norm(z_id[G + k * L: G + (k + 1) * L]) ** 2 for k in unobserved)
        symm = z_id[G: G + 2 * identity.n_symm_pairs * L].view(identity.n_symm_pairs * 2, L)
        terms["symm_dist"] = torch.norm(symm[::2] - symm[1::2], dim=-1).mean()
    else:
        terms["reg_global"] = torch.norm(z_id) ** 2
    total = sum(terms[k] * lambdas[k] for k in terms if k in lambdas)
    return total, terms, converged.reshape(O, P)
