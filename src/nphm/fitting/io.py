"""Fitting configs, the models they name, and the files a fit writes.

A fitting config (``configs/fitting_*.yaml``) names the experiments (release keys)::

    exp_name_shape: nphm_identity_space_pretrained   # EXPERIMENT_DIR/{exp_name_shape}/
    checkpoint_shape: 15000                          # epoch; null = the newest checkpoint
    exp_name_expr: nphm_expression_space_pretrained  # null = identity-only fitting
    checkpoint_expr: 2500
    fitting: {...}                                   # nphm.fitting.schedule.FittingSettings

Outputs of a fit in ``FITTING_DIR/forward_{exp_name}/{exp_tag}/`` (the release's names, plus the
canonical mesh and a summary)::

    configs.yaml                              copy of the fitting config
    {subject}_{expression}.ply                posed mesh, nphm frame
    {subject}_{expression}_lat_shape.npy      (1, 1, D_id) identity latent
    {subject}_{expression}_lat_expr.npy       (1, 1, D_ex) expression latent
    {subject}_canonical.ply                   canonical (neutral) mesh
    {subject}_fitting.json                    expressions, timings, final losses
    {subject}.png                             observations over the fitted meshes
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import numpy as np
import torch
import trimesh
import yaml
from torch import nn

from nphm import paths
from nphm.checkpoints import MEAN_ANCHORS_KEY, available_epochs, load_expression, load_identity, read_checkpoint
from nphm.fitting.schedule import FittingSettings
from nphm.utils.io import atomic_path, save_json, save_mesh, save_npy

PathLike = Union[str, os.PathLike]


def load_fitting_config(path: PathLike) -> Dict[str, Any]:
    """Read and check a fitting config (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"fitting config not found: {path}")
    with open(path) as f:
        cfg = yaml.safe_load(f)
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: expected a mapping")
    if not cfg.get("exp_name_shape"):
        raise ValueError(f"{path}: 'exp_name_shape' (the identity experiment) is required")
    try:
        FittingSettings.from_config(cfg.get("fitting"))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: {e}") from e
    return cfg


def fitting_settings(cfg: Mapping[str, Any]) -> FittingSettings:
    """The :class:`FittingSettings` of a fitting config."""
    return FittingSettings.from_config(cfg.get("fitting"))


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
    cfg: Mapping[str, Any],
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
    shape_dir = root / str(cfg["exp_name_shape"])
    if not shape_dir.is_dir():
        raise FileNotFoundError(f"identity experiment not found: {shape_dir}")
    epoch_shape = _epoch(shape_dir, cfg.get("checkpoint_shape"))
    if anchors_path is None:
        ckpt = read_checkpoint(shape_dir, epoch_shape)
        if MEAN_ANCHORS_KEY not in ckpt and "ensembled_deep_sdf.lin0.weight" in ckpt["decoder_state_dict"]:
            anchors_path = paths.ANCHOR_MEAN_PATH
        del ckpt
    identity, latents = load_identity(shape_dir, epoch_shape, device, anchors_path)
    epochs = {"shape": epoch_shape}
    deformation = None
    if cfg.get("exp_name_expr"):
        expr_dir = root / str(cfg["exp_name_expr"])
        if not expr_dir.is_dir():
            raise FileNotFoundError(f"expression experiment not found: {expr_dir}")
        epochs["expr"] = _epoch(expr_dir, cfg.get("checkpoint_expr"))
        deformation, _ = load_expression(expr_dir, epochs["expr"], device)
        lat_id = getattr(deformation, "lat_dim_id", identity.lat_dim)
        if lat_id != identity.lat_dim:
            raise ValueError(
                f"expression model {expr_dir} expects identity latents of size {lat_id}, "
                f"identity model {shape_dir} has {identity.lat_dim}"
            )
    return FittingModels(identity=identity, deformation=deformation, latents_train=latents["train"], epochs=epochs)


def output_dir(exp_name: str, exp_tag: str, fitting_dir: Optional[PathLike] = None) -> Path:
    """``FITTING_DIR/forward_{exp_name}/{exp_tag}`` (the release's layout)."""
    if fitting_dir is None:
        fitting_dir = paths.FITTING_DIR
    return Path(fitting_dir) / f"forward_{exp_name}" / str(exp_tag)


def save_config_copy(out_dir: PathLike, cfg: Mapping[str, Any]) -> Path:
    """Write ``out_dir/configs.yaml`` atomically."""
    path = Path(out_dir) / "configs.yaml"
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(dict(cfg), sort_keys=False))
    return path


def posed_mesh_path(out_dir: PathLike, subject: Union[int, str], expression: int) -> Path:
    return Path(out_dir) / f"{subject}_{expression}.ply"


def canonical_mesh_path(out_dir: PathLike, subject: Union[int, str]) -> Path:
    return Path(out_dir) / f"{subject}_canonical.ply"


def summary_path(out_dir: PathLike, subject: Union[int, str]) -> Path:
    return Path(out_dir) / f"{subject}_fitting.json"


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
    save_mesh(canonical_mesh_path(out_dir, subject), canonical)
    for i, (expression, mesh) in enumerate(zip(expressions, posed)):
        save_mesh(posed_mesh_path(out_dir, subject, expression), mesh)
        save_npy(Path(out_dir) / f"{subject}_{expression}_lat_shape.npy", lat_shape)
        if z_ex is not None:
            save_npy(Path(out_dir) / f"{subject}_{expression}_lat_expr.npy",
                     z_ex[i].detach().cpu().numpy().reshape(1, 1, -1))
    if summary is not None:
        save_json(summary_path(out_dir, subject), dict(summary))


def read_latents(out_dir: PathLike, subject: Union[int, str], expression: int) -> Dict[str, np.ndarray]:
    """The stored latents of one fitted scan: ``{"shape": (D_id,), "expr": (D_ex,) or absent}``."""
    out = {"shape": np.load(Path(out_dir) / f"{subject}_{expression}_lat_shape.npy").reshape(-1)}
    expr = Path(out_dir) / f"{subject}_{expression}_lat_expr.npy"
    if expr.is_file():
        out["expr"] = np.load(expr).reshape(-1)
    return out
