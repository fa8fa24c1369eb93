"""Straightforward evaluations written the way the release does it.

Every member on every point, the full latent copied to every point and concatenated to the
input. They share parameters with the fast models, serve as the independent reference in the
tests and as the baseline of the benchmarks. Not meant for production use.
"""
from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from nphm.models.deepsdf import SOFTPLUS_BETA, DeepSDF
from nphm.models.identity import BACKGROUND_DIST2, BLEND_VARIANCE, DIST_EPS, NORM_EPS, NPHMIdentity


def naive_mlp(mlp: DeepSDF, inp: torch.Tensor) -> torch.Tensor:
    """The DeepSDF MLP layer by layer on full per-point inputs ``inp`` (..., 3 + L)."""
    h = inp
    for layer, lin in enumerate(mlp.layers()):
        if layer == mlp.skip:
            h = torch.cat([h, inp], dim=-1) / math.sqrt(2.0)
        h = lin(h)
        if layer < mlp.nlayers:
            h = F.softplus(h, beta=SOFTPLUS_BETA)
    return h


def naive_deepsdf(mlp: DeepSDF, xyz: torch.Tensor, lat: torch.Tensor) -> torch.Tensor:
    """DeepSDF MLP with the latent concatenated to every point. xyz (B, N, 3), lat (B, L)."""
    B, N, _ = xyz.shape
    return naive_mlp(mlp, torch.cat([xyz, lat[:, None, :].expand(B, N, lat.shape[-1])], dim=-1))


def naive_nphm_sdf(model: NPHMIdentity, points: torch.Tensor, z_id: torch.Tensor) -> torch.Tensor:
    """NPHM identity SDF (B, N, 1) with all members on all points and per-point latent copies."""
    B, N, _ = points.shape
    K = model.n_loc
    M = K + 1
    lat_rep = z_id[:, None, :].repeat(1, N, 1)  # (B, N, D): the release copies the latent per point
    anchors = model.anchors(z_id)
    anchors_rep = anchors[:, None].repeat(1, N, 1, 1)  # (B, N, K, 3)
    coords = points[:, :, None, :] - torch.cat([anchors_rep, torch.zeros_like(anchors_rep[:, :, :1])], dim=2)
    sign = torch.ones(M, 3, dtype=points.dtype, device=points.device)
    sign[1 : 2 * model.n_symm_pairs : 2, 0] = -1.0
    coords = coords * sign
    glob = lat_rep[:, :, : model.lat_dim_glob][:, :, None, :].repeat(1, 1, M, 1)
    loc = lat_rep[:, :, model.lat_dim_glob :].reshape(B, N, M, model.lat_dim_loc)
    inp = torch.cat([coords, glob, loc], dim=-1).permute(2, 0, 1, 3).reshape(M, B * N, -1)

    ens = model.ensembled_deep_sdf
    sets = ens.member_sets
    h = inp
    for layer, lin in enumerate(ens.layers()):
        if layer == ens.skip:
            h = torch.cat([h, inp], dim=-1) / math.sqrt(2.0)
        h = torch.bmm(h, lin.weight[sets].transpose(1, 2)) + lin.bias[sets][:, None, :]
        if layer < ens.nlayers:
            h = F.softplus(h, beta=SOFTPLUS_BETA)
    member_sdf = h.reshape(M, B, N).permute(1, 2, 0)  # (B, N, M)

    dist2 = -((anchors_rep - points[:, :, None, :]).norm(dim=-1) + DIST_EPS) ** 2
    dist2 = torch.cat([dist2, torch.full_like(dist2[..., :1], -BACKGROUND_DIST2)], dim=-1)
    weight = torch.exp(dist2 / BLEND_VARIANCE)
    weight = weight / (weight.sum(-1, keepdim=True) + NORM_EPS)
    return (weight * member_sdf).sum(-1, keepdim=True)
