"""Toy head models for tests and demos of the fitting without a dataset or checkpoints.

Identities: an ellipsoidal head with a nose and a chin (so that it has a front, an up and no
front/back ambiguity), whose three radii and nose size are the identity parameters. Expressions:
a smooth "jaw drop" (the lower half moves down and back) and a "smile" (the lower front widens),
scaled by two expression parameters.

Two flavours with the interface of the real models (``lat_dim`` / ``lat_dim_expr``,
``anchors()``, ``forward``):

* :class:`AnalyticHeadIdentity` / :class:`AnalyticExpression`: the analytic formulas themselves,
  latent = parameter offsets (exact, instant);
* :func:`train_toy_models`: small NPM-style networks trained as auto-decoders on those shapes and
  deformations, like the real models (a minute of CPU).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Optional, Tuple

import torch
from torch import nn

from nphm.models import NPMDeformation, NPMIdentity

#: Identity parameters (rx, ry, rz, nose depth) of the mean toy head, nphm units.
MEAN_HEAD = (0.30, 0.37, 0.32, 0.07)


def _ellipsoid(points: torch.Tensor, center: Tuple[float, float, float], radii: torch.Tensor) -> torch.Tensor:
    """Approximate ellipsoid SDF ``k0 (k0 - 1) / k1``; ``radii`` (..., 3) may carry gradients."""
    p = points - points.new_tensor(center)
    k0 = torch.linalg.vector_norm(p / radii, dim=-1)
    k1 = torch.linalg.vector_norm(p / (radii * radii), dim=-1).clamp_min(1e-9)
    return k0 * (k0 - 1.0) / k1


def _smin(d1: torch.Tensor, d2: torch.Tensor, k: float) -> torch.Tensor:
    h = (0.5 + 0.5 * (d2 - d1) / k).clamp(0.0, 1.0)
    return d2 * (1 - h) + d1 * h - k * h * (1 - h)


def toy_head_sdf(points: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """SDF-like values (...,) of the toy head with ``params`` (..., 4) = (rx, ry, rz, nose) at
    ``points`` (..., 3), nphm frame (+y up, face towards +z). Differentiable in both."""
    params = params.to(points.dtype)
    r = params[..., :3]
    rz, nose, ry = params[..., 2], params[..., 3], params[..., 1]
    d = _ellipsoid(points, (0.0, 0.05, 0.0), r)
    ones = torch.ones_like(nose)
    nose_c = torch.stack([0 * rz, 0.02 * ones, rz - 0.01], dim=-1)
    d_nose = _ellipsoid(points - nose_c, (0.0, 0.0, 0.0), torch.stack([0.05 * ones, 0.08 * ones, nose], dim=-1))
    d = _smin(d, d_nose, 0.03)
    chin_c = torch.stack([0 * rz, 0.12 - ry, 0.55 * rz], dim=-1)
    d_chin = _ellipsoid(points - chin_c, (0.0, 0.0, 0.0), points.new_tensor([0.12, 0.07, 0.08]))
    return _smin(d, d_chin, 0.04)


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


class AnalyticHeadIdentity(nn.Module):
    """The toy head as an identity model: ``params = MEAN_HEAD + scale * z`` (z of size 4).

    The scale makes latents of trained-like size (~0.1) span realistic variation (3 cm)."""

    def __init__(self, scale: float = 0.3) -> None:
        super().__init__()
        self.lat_dim = 4
        self.scale = scale
        self.mean = nn.Parameter(torch.tensor(MEAN_HEAD), requires_grad=False)

    def params(self, z: torch.Tensor) -> torch.Tensor:
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


# ------------------------------------------------------------------------------------------ trained
@dataclass
class ToyModels:
    """Trained toy networks and their training latents.

    Attributes:
        identity: NPM-style identity network; deformation: NPM-style deformation network.
        z_id: (S, D_id) identity latents; z_ex: (S, E, D_ex) expression latents.
        shape_params: (S, 4); expr_params: (E, 2) (expression e is the same for every identity).
        sdf_error: mean |SDF error| on near-surface samples after training (nphm units).
        deformation_error: mean offset error on training correspondences (nphm units).
    """

    identity: NPMIdentity
    deformation: NPMDeformation
    z_id: torch.Tensor
    z_ex: torch.Tensor
    shape_params: torch.Tensor
    expr_params: torch.Tensor
    sdf_error: float
    deformation_error: float


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


def _lr_step(opt: torch.optim.Optimizer, factor: float) -> None:
    for group in opt.param_groups:
        group["lr"] *= factor


@lru_cache(maxsize=2)
def train_toy_models(
    n_shapes: int = 4,
    n_expressions: int = 3,
    lat_dim_id: int = 8,
    lat_dim_expr: int = 4,
    hidden_dim: int = 64,
    steps: int = 500,
    points: int = 250,
    seed: int = 0,
) -> ToyModels:
    """Train both toy networks as auto-decoders (cached per argument set)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    lo = torch.tensor([0.26, 0.33, 0.28, 0.05])
    hi = torch.tensor([0.34, 0.41, 0.36, 0.09])
    shapes = lo + (hi - lo) * torch.rand(n_shapes, 4, generator=g)
    exprs = torch.cat([torch.zeros(1, 2), torch.rand(n_expressions - 1, 2, generator=g) * 0.8 + 0.2])
    surfaces = [toy_surface_samples(p, 3000, g) for p in shapes]

    def near_samples(s: int, n: int, sigma: float) -> torch.Tensor:
        idx = torch.randint(0, len(surfaces[s]), (n,), generator=g)
        return surfaces[s][idx] + torch.randn(n, 3, generator=g) * sigma

    identity = NPMIdentity(lat_dim=lat_dim_id, hidden_dim=hidden_dim, n_layers=4)
    z_id = nn.Parameter(torch.randn(n_shapes, lat_dim_id, generator=g) * 0.01)
    opt = torch.optim.Adam([{"params": identity.parameters(), "lr": 2e-3}, {"params": [z_id], "lr": 1e-2}])
    for step in range(steps):
        pts = torch.stack([torch.cat([near_samples(s, points, 0.02), (torch.rand(points // 4, 3, generator=g) - 0.5)])
                           for s in range(n_shapes)])
        target = toy_head_sdf(pts, shapes[:, None, :])
        pred = identity(pts, z_id)[0][..., 0]
        loss = (pred - target).abs().mean() + 1e-4 * z_id.square().sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step == int(steps * 0.7):
            _lr_step(opt, 0.3)
    with torch.no_grad():
        pts = torch.stack([near_samples(s, 1000, 0.01) for s in range(n_shapes)])
        sdf_error = float((identity(pts, z_id)[0][..., 0] - toy_head_sdf(pts, shapes[:, None, :])).abs().mean())

    deformation = NPMDeformation(lat_dim_id=lat_dim_id, lat_dim_expr=lat_dim_expr, hidden_dim=hidden_dim, n_layers=4)
    with torch.no_grad():
        deformation.lin4.weight.mul_(0.1)
        deformation.lin4.bias.zero_()
    z_ex = nn.Parameter(torch.randn(n_shapes, n_expressions, lat_dim_expr, generator=g) * 0.01)
    opt = torch.optim.Adam([{"params": deformation.parameters(), "lr": 2e-3}, {"params": [z_ex], "lr": 1e-2}])
    z_id_rep = z_id.detach().repeat_interleave(n_expressions, 0)
    expr_rep = exprs.repeat(n_shapes, 1)[:, None, :]
    for step in range(steps):
        pts = torch.stack([near_samples(s, points, 0.02) for s in range(n_shapes) for _ in range(n_expressions)])
        target = toy_expression_offsets(pts, expr_rep)
        pred = deformation(pts, z_id_rep, z_ex.reshape(-1, lat_dim_expr))
        loss = (pred - target).square().sum(-1).mean() * 100 + 1e-4 * z_ex.square().sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step == int(steps * 0.7):
            _lr_step(opt, 0.3)
    deformation_error = float((pred.detach() - target).norm(dim=-1).mean())
    for m in (identity, deformation):
        m.eval()
        for p in m.parameters():
            p.requires_grad_(False)
    return ToyModels(identity, deformation, z_id.detach(), z_ex.detach(), shapes, exprs, sdf_error,
                     deformation_error)
