"""Fitting configs, the models they name, and writing a fit.

A fitting config (``configs/fitting_*.yaml``, read by :func:`load_fitting_config` into a
:class:`nphm.fitting.config.FittingConfig`) names the experiments and holds the settings.
A fit is written in the results layout of :mod:`nphm.layout` (the release's names, plus the
canonical mesh and a summary).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import torch
import trimesh
from torch import nn

from nphm import layout, paths
from nphm.checkpoints import MEAN_ANCHORS_KEY, available_epochs, load_expression, load_identity, read_checkpoint
from nphm.config import save_yaml
from nphm.fitting.config import FittingConfig
from nphm.utils.io import PathLike, save_json, save_mesh, save_npy


def load_fitting_config(path: PathLike) -> FittingConfig:
    """Read and check a fitting config (:meth:`FittingConfig.load`)."""
    return FittingConfig.load(path)


def _epoch(exp_dir: Path, epoch: Optional[int]) -> int:
    if epoch is not None:
        return int(epoch)
    epochs = available_epochs(exp_dir)
    if not epochs:
        raise FileNotFoundError(f"no checkpoints in {exp_dir / 'checkpoints'}")
    return epochs[-1]


@dataclass
class FittingModels:
    """The models of a fitting config.

    Attributes:
        identity: identity model (eval mode).
        deformation: deformation model, or None for identity-only fitting.
        latents_train: (n, D_id) training identity latents (statistics for random samples).
        epochs: the checkpoint epochs used.
    """

    identity: nn.Module
    deformation: Optional[nn.Module]
    latents_train: torch.Tensor
    epochs: Dict[str, int]


def load_models(
    cfg: FittingConfig,
    device: Union[str, torch.device] = "cpu",
    experiment_dir: Optional[PathLike] = None,
    anchors_path: Optional[PathLike] = None,
) -> FittingModels:
    """Load the identity (and expression) model named by a fitting config.

    Args:
        experiment_dir: root of the experiments (default ``nphm.paths.EXPERIMENT_DIR``).
        anchors_path: mean anchors for official NPHM checkpoints, which do not store them
            (default ``nphm.paths.ANCHOR_MEAN_PATH`` when the checkpoint has none).
    """
    if experiment_dir is None:
        experiment_dir = paths.EXPERIMENT_DIR
    root = Path(experiment_dir)
    shape_dir = root / cfg.exp_name_shape
    if not shape_dir.is_dir():
        raise FileNotFoundError(f"identity experiment not found: {shape_dir}")
    epoch_shape = _epoch(shape_dir, cfg.checkpoint_shape)
    if anchors_path is None:
        ckpt = read_checkpoint(shape_dir, epoch_shape)
        if MEAN_ANCHORS_KEY not in ckpt and "ensembled_deep_sdf.lin0.weight" in ckpt["decoder_state_dict"]:
            anchors_path = paths.ANCHOR_MEAN_PATH
        del ckpt
    identity, latents = load_identity(shape_dir, epoch_shape, device, anchors_path)
    epochs = {"shape": epoch_shape}
    deformation = None
    if cfg.exp_name_expr:
        expr_dir = root / cfg.exp_name_expr
        if not expr_dir.is_dir():
            raise FileNotFoundError(f"expression experiment not found: {expr_dir}")
        epochs["expr"] = _epoch(expr_dir, cfg.checkpoint_expr)
        deformation, _ = load_expression(expr_dir, epochs["expr"], device)
        lat_id = getattr(deformation, "lat_dim_id", identity.lat_dim)
        if lat_id != identity.lat_dim:
            raise ValueError(
                f"expression model {expr_dir} expects identity latents of size {lat_id}, "
                f"identity model {shape_dir} has {identity.lat_dim}"
            )
    return FittingModels(identity=identity, deformation=deformation, latents_train=latents["train"], epochs=epochs)


def save_config_copy(out_dir: PathLike, cfg: FittingConfig) -> Path:
    """Write the fitting config to ``out_dir/configs.yaml`` atomically (:meth:`FittingConfig.to_config`)."""
    return save_yaml(layout.config_copy_path(out_dir), cfg.to_config())


def write_fit(
    out_dir: PathLike,
    subject: Union[int, str],
    expressions: Sequence[int],
    canonical: trimesh.Trimesh,
    posed: Sequence[trimesh.Trimesh],
    z_id: torch.Tensor,
    z_ex: Optional[torch.Tensor],
    summary: Optional[Mapping[str, Any]] = None,
) -> None:
    """Write the meshes and latents of one fitted subject (the summary JSON last, so that its
    presence marks a finished subject)."""
    if len(posed) != len(expressions):
        raise ValueError(f"{len(posed)} posed meshes for {len(expressions)} expressions")
    lat_shape = z_id.detach().cpu().numpy().reshape(1, 1, -1)
    save_mesh(layout.canonical_mesh_path(out_dir, subject), canonical)
    for i, (expression, mesh) in enumerate(zip(expressions, posed)):
        save_mesh(layout.posed_mesh_path(out_dir, subject, expression), mesh)
        save_npy(layout.latent_path(out_dir, subject, expression, "shape"), lat_shape)
        if z_ex is not None:
            save_npy(layout.latent_path(out_dir, subject, expression, "expr"),
                     z_ex[i].detach().cpu().numpy().reshape(1, 1, -1))
    if summary is not None:
        save_json(layout.summary_path(out_dir, subject), dict(summary))
