"""Loss terms of the point-cloud fitting (the release's definitions).

* ``surface``: mean ``|SDF|`` of the canonical correspondences of the drawn points that
  converged and lie within the SDF clamp (duplicates counted with their multiplicity);
  robust option (``fitting.surface_loss: geman_mcclure``, not in the release): the mean of
  ``c * rho(SDF / c)`` instead, see :func:`geman_mcclure`;
* ``reg_expr``: mean over the drawn observations of ``||z_ex||^2``;
* NPHM identities: ``reg_global`` ``||z_glob||^2``, ``reg_loc`` ``||z_loc||^2`` (all local codes),
  ``reg_unobserved`` sum of ``||z_k||^2`` over the unobserved local codes (release: 30, 31, 39),
  ``symm_dist`` mean over symmetric pairs of ``||z_left - z_right||``;
* NPM identities: ``reg_global`` ``||z_id||^2``; the local terms are 0.
"""
from __future__ import annotations

from typing import Callable, Dict, Mapping, Sequence

import torch
from torch import nn

from nphm.models.factory import model_is_local


def identity_regularisers(
    identity: nn.Module, z_id: torch.Tensor, unobserved: Sequence[int]
) -> Dict[str, torch.Tensor]:
    """Regularisers of one identity latent ``z_id`` (D,)."""
    zero = z_id.sum() * 0.0
    if not model_is_local(identity):
        return {"reg_global": z_id.square().sum(), "reg_loc": zero, "reg_unobserved": zero, "symm_dist": zero}
    G, L = identity.lat_dim_glob, identity.lat_dim_loc
    z_loc = z_id[G:].reshape(-1, L)
    bad = [k for k in unobserved if not 0 <= int(k) < z_loc.shape[0]]
    if bad:
        raise ValueError(f"unobserved local latent indices {bad} outside [0, {z_loc.shape[0]})")
    n_pairs = int(getattr(identity, "n_symm_pairs", 0))
    pairs = z_loc[: 2 * n_pairs]
    symm = torch.linalg.vector_norm(pairs[0::2] - pairs[1::2], dim=-1).mean() if n_pairs else zero
    unobs = z_loc[list(int(k) for k in unobserved)].square().sum() if len(unobserved) else zero
    return {
        "reg_global": z_id[:G].square().sum(),
        "reg_loc": z_id[G:].square().sum(),
        "reg_unobserved": unobs,
        "symm_dist": symm,
    }


def expression_regulariser(z_ex_drawn: torch.Tensor) -> torch.Tensor:
    """``reg_expr``: mean of ``||z_ex||^2`` over the drawn observations' latents (O, D_ex)."""
    return z_ex_drawn.square().sum(-1).mean()


def surface_loss(sdf: torch.Tensor, weight: torch.Tensor, clamp: float,
                 penalty: Callable[[torch.Tensor], torch.Tensor] = torch.abs) -> torch.Tensor:
    """Weighted mean of ``|sdf|`` (the release) or of ``penalty(sdf)`` over the entries with
    ``|sdf| < clamp``.

    Args:
        sdf: (n,) SDF values of distinct points; weight: (n,) multiplicity of each point.
        penalty: the per-point loss (default ``|sdf|``; see :func:`surface_penalty`).
    Returns:
        Scalar; 0 (still attached to the graph) when nothing passes the clamp.
    """
    a = sdf.abs()
    w = weight.to(a.dtype) * (a < clamp).to(a.dtype)
    total = w.sum()
    if float(total) == 0.0:
        return (a * 0.0).sum()
    value = a if penalty is torch.abs else penalty(sdf)
    return (value * w).sum() / total


#: Values of ``fitting.surface_loss``.
SURFACE_LOSSES = ("l1", "geman_mcclure")


def geman_mcclure(r: torch.Tensor, scale: float) -> torch.Tensor:
    """Geman-McClure penalty in length units: ``c * rho(r / c) = c r^2 / (r^2 + c^2)``, ``c = scale``.

    ``rho(u) = u^2 / (u^2 + 1)`` is bounded, so a point far from the surface (a shoulder, the
    background, hair the model has no shape for) costs at most ``c`` and pulls with a force that
    vanishes like ``2 c^3 / r^3``; the factor ``c`` keeps the term in the unit of ``|r|``
    (``<= |r| / 2``; slope ``2 r / c`` near 0, at most ``0.65`` at ``|r| = c / sqrt(3)``, where
    ``|r|`` has 1), so the release's loss weights keep their balance. Residuals well below ``c``
    are fitted like least squares, those well above it are ignored: ``c`` a few millimetres
    (default 0.01 nphm = 2.5 mm) separates the head's residuals from the outliers'.
    """
    c2 = float(scale) ** 2
    r2 = r.square()
    return float(scale) * r2 / (r2 + c2)


def surface_penalty(kind: str = "l1", scale: float = 0.01) -> Callable[[torch.Tensor], torch.Tensor]:
    """The per-point surface penalty of ``fitting.surface_loss`` (``l1``: ``torch.abs``, the release)."""
    if kind == "l1":
        return torch.abs
    if kind == "geman_mcclure":
        return lambda r: geman_mcclure(r, scale)
    raise ValueError(f"unknown surface loss {kind!r}; known: {', '.join(SURFACE_LOSSES)}")


def weighted_total_skipping_unweighted(terms: Mapping[str, torch.Tensor], lambdas: Mapping[str, float]) -> torch.Tensor:
    """``sum_k lambdas[k] * terms[k]`` over the terms of ``terms`` that have a weight in ``lambdas``;
    the others (reported, not optimised) are skipped. The strict variant, which raises on a term
    without a weight, is :func:`nphm.training.losses.weighted_total`.

    Raises:
        ValueError: no term has a weight.
    """
    total = None
    for name, value in terms.items():
        if name in lambdas:
            part = value * float(lambdas[name])
            total = part if total is None else total + part
    if total is None:
        raise ValueError("no loss term has a weight")
    return total
