"""Toy head shapes and expressions, and the analytic models built on them.

Identities: an ellipsoidal head with a nose and a chin (so that it has a front, an up and no
front/back ambiguity), whose three radii and nose size are the identity parameters. Expressions:
a smooth "jaw drop" (the lower half moves down and back) and a "smile" (the lower front widens),
scaled by two expression parameters. The shapes are :mod:`nphm.analytic` primitives.

:class:`AnalyticHeadIdentity` / :class:`AnalyticExpression` have the interface of the real models
(``lat_dim`` / ``lat_dim_expr``, ``anchors()``, ``forward``): the formulas themselves, latent =
parameter offsets (exact, instant). Networks trained on these shapes: :mod:`support.toy_training`.

Frame: the nphm frame (+y up, face towards +z), nphm units.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from nphm.analytic import ellipsoid_sdf, smooth_union

#: Identity parameters (rx, ry, rz, nose depth) of the mean toy head, nphm units.
MEAN_HEAD: Tuple[float, float, float, float] = (0.30, 0.37, 0.32, 0.07)


def toy_head_sdf(points: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """SDF-like values (...,) of the toy head with ``params`` (..., 4) = (rx, ry, rz, nose) at
    ``points`` (..., 3). Differentiable in both."""
    params = params.to(points.dtype)
    r = params[..., :3]
    rz, nose, ry = params[..., 2], params[..., 3], params[..., 1]
    d = ellipsoid_sdf(points, (0.0, 0.05, 0.0), r)
    ones = torch.ones_like(nose)
    nose_c = torch.stack([0 * rz, 0.02 * ones, rz - 0.01], dim=-1)
    d_nose = ellipsoid_sdf(points, nose_c, torch.stack([0.05 * ones, 0.08 * ones, nose], dim=-1))
    d = smooth_union(d, d_nose, 0.03)
    chin_c = torch.stack([0 * rz, 0.12 - ry, 0.55 * rz], dim=-1)
    d_chin = ellipsoid_sdf(points, chin_c, (0.12, 0.07, 0.08))
    return smooth_union(d, d_chin, 0.04)


def toy_expression_offsets(points: torch.Tensor, expr: torch.Tensor) -> torch.Tensor:
    """Offsets (..., 3) of the toy expression ``expr`` (..., 2) = (jaw, smile) at canonical
    ``points`` (..., 3)."""
    expr = expr.to(points.dtype)
    jaw, smile = expr[..., 0], expr[..., 1]
    lower = torch.sigmoid(-points[..., 1] / 0.04)  # smoothly 1 below y = 0
    front = torch.sigmoid(points[..., 2] / 0.05)
    return torch.stack(
        [0.15 * smile * points[..., 0] * lower * front, -0.06 * jaw * lower, -0.02 * jaw * lower], dim=-1
    )


def toy_surface_samples(params: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
    """(n, 3) points on the toy head ``params`` (4,): random points projected along the SDF
    gradient a few times."""
    x = torch.randn(n, 3, generator=g) * 0.3
    for _ in range(8):
        x = x.detach().requires_grad_(True)
        d = toy_head_sdf(x, params)
        (grad,) = torch.autograd.grad(d.sum(), x)
        x = x - d[:, None] * grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    return x.detach()


class AnalyticHeadIdentity(nn.Module):
    """The toy head as an identity model: ``params = MEAN_HEAD + scale * z`` (z of size 4).

    The scale makes latents of trained-like size (~0.1) span realistic variation (3 cm)."""

    def __init__(self, scale: float = 0.3) -> None:
        super().__init__()
        self.lat_dim = 4
        self.scale = scale
        self.mean = nn.Parameter(torch.tensor(MEAN_HEAD), requires_grad=False)

    def params(self, z: torch.Tensor) -> torch.Tensor:
        """Toy head parameters (..., 4) of latents (..., 4)."""
        return self.mean.to(z.dtype) + self.scale * z

    def anchors(self, z_id: torch.Tensor) -> None:
        return None

    def forward(self, points: torch.Tensor, z_id: torch.Tensor, mode: Optional[str] = None, anchors=None):
        """SDF (B, N, 1) of points (B, N, 3) for latents (B, 4); returns ``(sdf, None)``."""
        return toy_head_sdf(points, self.params(z_id)[:, None, :])[..., None], None


class AnalyticExpression(nn.Module):
    """The toy expressions as a deformation model: ``(jaw, smile) = scale * z_ex`` (size 2)."""

    def __init__(self, lat_dim_id: int = 4, scale: float = 5.0) -> None:
        super().__init__()
        self.lat_dim_expr = 2
        self.lat_dim_id = lat_dim_id
        self.mode = "analytic"
        self.unit = nn.Parameter(torch.tensor(float(scale)), requires_grad=False)

    def forward(self, points: torch.Tensor, z_id: torch.Tensor, z_ex: torch.Tensor, anchors=None) -> torch.Tensor:
        """Offsets (B, N, 3) of canonical points (B, N, 3)."""
        return toy_expression_offsets(points, z_ex[:, None, :] * self.unit)
