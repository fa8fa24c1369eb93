"""Training losses of both stages, returned per item (shape ``(B,)``).

Every loss of the release is a mean over all points of the batch; with the same number of
points per item that equals the mean over items of per-item means. Returning per-item values
lets the trainer divide by the *global* batch size, so that data-parallel processes with
unequal shares still produce exactly the gradient of a single process.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import nn

#: Cap of the non-face normal error (release), halved afterwards.
NON_FACE_NORMAL_CAP = 0.75
#: Decay of the far-space term ``exp(-SPACE_SDF_DECAY * |sdf|)``.
SPACE_SDF_DECAY = 10.0


def sdf_and_gradient(model: nn.Module, points: torch.Tensor, z: torch.Tensor,
                     mode: Optional[str] = None) -> tuple:
    """SDF (B, N), its spatial gradient (B, N, 3) (differentiable, ``create_graph=True``) and
    the predicted anchors (or None) at ``points`` (B, N, 3) for latents ``z`` (B, D)."""
    points = points.detach().requires_grad_(True)
    sdf, anchors = model(points, z, mode=mode)
    (grad,) = torch.autograd.grad(sdf, points, grad_outputs=torch.ones_like(sdf), create_graph=True)
    return sdf[..., 0], grad, anchors


def latent_pair_distances(z: torch.Tensor, lat_dim_glob: int, lat_dim_loc: int, n_loc: int,
                          n_symm_pairs: int) -> tuple:
    """Per item (B,): mean distance between the local codes of each symmetric pair
    (``symm_dist``) and between consecutive pairs of the midline codes (``middle_dist``,
    the release's definition; an odd last code is left out)."""
    B = z.shape[0]
    loc = z[:, lat_dim_glob:].reshape(B, n_loc + 1, lat_dim_loc)
    symm = loc[:, : 2 * n_symm_pairs]
    symm_dist = torch.linalg.vector_norm(symm[:, 0::2] - symm[:, 1::2], dim=-1).mean(dim=1)
    middle = loc[:, 2 * n_symm_pairs : n_loc]
    m = middle.shape[1] // 2
    if m == 0:
        middle_dist = torch.zeros(B, dtype=z.dtype, device=z.device)
    else:
        middle_dist = torch.linalg.vector_norm(middle[:, 0 : 2 * m : 2] - middle[:, 1 : 2 * m : 2], dim=-1).mean(dim=1)
    return symm_dist, middle_dist


def identity_losses(model: nn.Module, batch: Dict[str, torch.Tensor], z: torch.Tensor,
                    mode: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """Stage-1 losses per item.

    Args:
        model: NPHM or NPM identity model.
        batch: a collated :class:`~nphm.training.data.IdentityDataset` batch on the model's device.
        z: (B, D) identity latents of the batch.
        mode: NPHM query mode (``sparse`` / ``exact``).
    Returns:
        ``surf_sdf``, ``normals``, ``space_sdf``, ``grad``, ``lat_reg`` and, for NPHM,
        ``anchors``, ``symm_dist``, ``middle_dist``; each (B,).
    """
    face, non_face = batch["points_face"], batch["points_non_face"]
    far, near = batch["points_far"], batch["points_near"]
    sizes = [face.shape[1], non_face.shape[1], far.shape[1], near.shape[1]]
    points = torch.cat([face, non_face, far, near], dim=1)
    sdf, grad, anchors = sdf_and_gradient(model, points, z, mode)
    sdf_face, sdf_non, sdf_far, _ = torch.split(sdf, sizes, dim=1)
    grad_face, grad_non, _, _ = torch.split(grad, sizes, dim=1)

    normal_err_face = torch.linalg.vector_norm(grad_face - batch["normals_face"], dim=-1)
    normal_err_non = torch.clamp(torch.linalg.vector_norm(grad_non - batch["normals_non_face"], dim=-1),
                                 max=NON_FACE_NORMAL_CAP) / 2
    losses = {
        "surf_sdf": torch.cat([sdf_face.abs(), sdf_non.abs()], dim=1).mean(dim=1),
        "normals": torch.cat([normal_err_face, normal_err_non], dim=1).mean(dim=1),
        "space_sdf": torch.exp(-SPACE_SDF_DECAY * sdf_far.abs()).mean(dim=1),
        "grad": (torch.linalg.vector_norm(grad, dim=-1) - 1.0).abs().mean(dim=1),
        "lat_reg": (z**2).sum(dim=-1),
    }
    if anchors is not None:
        losses["anchors"] = ((anchors - batch["gt_anchors"]) ** 2).mean(dim=(1, 2))
        symm, middle = latent_pair_distances(z, model.lat_dim_glob, model.lat_dim_loc, model.n_loc, model.n_symm_pairs)
        losses["symm_dist"] = symm
        losses["middle_dist"] = middle
    return losses


def deformation_losses(deformation: nn.Module, batch: Dict[str, torch.Tensor], z_ex: torch.Tensor,
                       z_id: torch.Tensor, anchors: Optional[torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Stage-2 losses per item.

    Args:
        deformation: NPHM or NPM deformation model.
        batch: a collated :class:`~nphm.training.data.DeformationDataset` batch.
        z_ex: (B, D_ex) expression latents; z_id: (B, D_id) identity latents (frozen);
        anchors: (B, 39, 3) anchors of the identities (NPHM) or None.
    Returns:
        ``corresp`` (squared error of ``x_neutral + D(x_neutral)`` vs ``x_posed``),
        ``lat_reg`` (``||z_ex||^2``), ``loss_reg_zero`` (squared offsets at the uniform
        points); each (B,).
    """
    neutral, posed, zero = batch["points_neutral"], batch["points_posed"], batch["points_zero"]
    n = neutral.shape[1]
    offsets = deformation(torch.cat([neutral, zero], dim=1), z_id, z_ex, anchors)
    pred = neutral + offsets[:, :n]
    return {
        "corresp": ((pred - posed) ** 2).mean(dim=(1, 2)),
        "lat_reg": (z_ex**2).sum(dim=-1),
        "loss_reg_zero": (offsets[:, n:] ** 2).mean(dim=(1, 2)),
    }


def weighted_total(losses: Dict[str, torch.Tensor], lambdas: Dict[str, float]) -> torch.Tensor:
    """Per-item total ``sum_k lambdas[k] * losses[k]`` (B,); every loss must have a weight (the
    fitting's lenient variant is :func:`nphm.fitting.losses.weighted_total_skipping_unweighted`).

    Raises:
        KeyError: a loss has no weight in ``lambdas``.
    """
    missing = [k for k in losses if k not in lambdas]
    if missing:
        raise KeyError(f"training.lambdas has no weight for loss(es) {missing}")
    return sum(float(lambdas[k]) * v for k, v in losses.items())
