"""Small NPM-style networks trained as auto-decoders on the toy heads and expressions of
:mod:`support.toy_models`, like the real models (about a minute of CPU).

Frame: the nphm frame (+y up, face towards +z), nphm units.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn

from nphm.models import NPMDeformation, NPMIdentity
from support.toy_models import toy_expression_offsets, toy_head_sdf, toy_surface_samples


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
