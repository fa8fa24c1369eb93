"""Stage 1: the identity model (NPHM local ensemble or NPM global DeepSDF) and one identity
latent per training subject, from surface samples of the neutral-open scans.

Entry point: :func:`train`. Losses and weights: :func:`nphm.training.losses.identity_losses`
and the config's ``training.lambdas``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import numpy as np
import torch

from nphm.models.factory import config_is_local, identity_from_config
from nphm.pictures import render_mesh_grid
from nphm.reconstruction import PREVIEW_BOUNDS, mesh_identity
from nphm.training.config import IdentityTrainingSettings
from nphm.training.data import IdentityDataset
from nphm.training.distributed import init_distributed, shutdown_distributed
from nphm.training.experiment import prepare_experiment, seed_everything
from nphm.training.losses import identity_losses
from nphm.training.preview import save_preview_mesh, try_mesh
from nphm.training.trainer import run_training
from nphm.utils.io import PathLike


NPHM_LOSSES = ("surf_sdf", "normals", "space_sdf", "grad", "lat_reg", "anchors", "symm_dist", "middle_dist")
NPM_LOSSES = ("surf_sdf", "normals", "space_sdf", "grad", "lat_reg")


def mean_anchors(manager, train_set: IdentityDataset, source: str) -> torch.Tensor:
    """(39, 3) mean anchors: the dataset's ``anchors_mean`` asset or the training-set mean of
    the registration anchors."""
    if source == "asset":
        return torch.from_numpy(manager.anchors_mean.astype(np.float32))
    if train_set.gt_anchors is None or len(train_set) == 0:
        raise ValueError("anchors_mean: train_mean needs training subjects with registration anchors")
    return torch.from_numpy(train_set.gt_anchors.mean(axis=0).astype(np.float32))


class IdentityTask:
    """Stage-1 task for :class:`~nphm.training.trainer.AutoDecoderTrainer`."""

    name = "identity"

    def __init__(self, cfg: Mapping[str, Any], settings: IdentityTrainingSettings, manager,
                 supervision_dir: PathLike, device: torch.device) -> None:
        decoder_cfg = cfg["decoder"]
        self.local = config_is_local(decoder_cfg)
        self.manager = manager
        self.settings = settings
        self.device = device
        common = dict(
            n_face=settings.npoints_decoder,
            n_non_face=settings.npoints_non_face,
            n_far=settings.npoints_far,
            sigma_near=settings.sigma_near,
            far_radius=settings.far_radius,
            with_anchors=self.local,
            seed=settings.seed,
        )
        self.train_set = IdentityDataset(manager, supervision_dir, "train", **common)
        self.val_set = IdentityDataset(manager, supervision_dir, "eval", **common)
        if len(self.train_set) == 0:
            raise ValueError(f"no training subjects with a neutral-open scan in {manager.data_dir}")
        anchors = mean_anchors(manager, self.train_set, settings.anchors_mean) if self.local else None
        self.network = identity_from_config(decoder_cfg, anchors_mean=anchors)
        if self.local:
            self.network.query_mode = settings.query_mode
            if settings.sparse_tol is not None:
                self.network.sparse_tol = settings.sparse_tol
        self.latent_dim = int(self.network.lat_dim)
        self.loss_keys = NPHM_LOSSES if self.local else NPM_LOSSES
        self.query_mode = settings.query_mode if self.local else None

    def losses(self, batch: Dict[str, torch.Tensor], z: torch.Tensor, split: str) -> Dict[str, torch.Tensor]:
        return identity_losses(self.network, batch, z, mode=self.query_mode)

    def checkpoint_extra(self) -> Dict[str, Any]:
        return {
            "subjects_train": list(map(int, self.train_set.subjects)),
            "subjects_val": list(map(int, self.val_set.subjects)),
            "expressions_train": list(map(int, self.train_set.expressions)),
            "expressions_val": list(map(int, self.val_set.expressions)),
        }

    def preview(self, epoch: int, out_dir: Path, latents: Dict[str, torch.Tensor]) -> Optional[Path]:
        """Meshes of the first ``n_preview`` training and validation latents
        (``{split}_{subject}_{expression}.ply``) and ``preview.png`` next to the training scans."""
        n = self.settings.n_preview
        res = self.settings.preview_resolution
        tiles = []
        for split, dataset in (("train", self.train_set), ("val", self.val_set)):
            for i in range(min(n, len(dataset))):
                s, e = dataset.subjects[i], dataset.expressions[i]
                mesh, _ = try_mesh(mesh_identity, self.network, latents[split][i], resolution=res,
                                   bounds=PREVIEW_BOUNDS, device=self.device)
                save_preview_mesh(out_dir / f"{split}_{s}_{e}.ply", mesh)
                tiles.append((f"{split} {s}", mesh))
                if split == "train":
                    tiles.append((f"scan {s}", self.manager.load_scan(s, e)))
        if not tiles:
            return None
        return render_mesh_grid(out_dir / "preview.png", tiles, title=f"epoch {epoch}")


def train(
    cfg: Mapping[str, Any],
    exp_dir: PathLike,
    data_dir: Optional[PathLike] = None,
    supervision_dir: Optional[PathLike] = None,
    description: Optional[PathLike] = None,
    device: Optional[Union[str, torch.device]] = None,
    wandb_mode: str = "offline",
    local: Optional[bool] = None,
    stop_after: Optional[int] = None,
    progress: bool = True,
) -> Dict[str, Any]:
    """Train (or resume) a stage-1 experiment.

    Args:
        cfg: config with ``decoder`` and ``training`` sections (``configs/nphm.yaml`` style);
            ignored in favour of ``exp_dir/configs.yaml`` when that exists.
        exp_dir: ``EXPERIMENT_DIR/{exp_name}``.
        data_dir: dataset root (default ``nphm.paths.DATA``); description: its description file.
        supervision_dir: identity supervision root (default ``nphm.paths.SUPERVISION_IDENTITY``).
        device: ``cpu``, ``cuda`` or None/"auto"; under ``torchrun`` every process takes its GPU.
        wandb_mode: ``disabled``, ``offline`` or ``online``.
        local: the release's ``-local`` flag: True requires an NPHM config, False an NPM one
            (None: whatever the config describes).
        stop_after: train at most this many epochs in this call (then checkpoint and return).
    Returns:
        The trainer's summary (``start_epoch``, ``last_epoch``, ``history``).
    """
    from nphm.data import DataManager
    from nphm import paths

    dist_info, device = init_distributed(device)
    try:
        cfg = prepare_experiment(exp_dir, cfg, dist_info)
        decoder_cfg = cfg.get("decoder")
        if decoder_cfg is None:
            raise KeyError(f"{Path(exp_dir) / 'configs.yaml'}: a stage-1 config needs a 'decoder' section")
        if local is not None and local != config_is_local(decoder_cfg):
            kind = "NPHM (decoder_nloc set)" if config_is_local(decoder_cfg) else "NPM (no decoder_nloc)"
            flag = "with -local" if local else "without -local"
            raise ValueError(f"the config describes an {kind} identity model, but training was started {flag}")
        settings = IdentityTrainingSettings.from_config(cfg)
        seed_everything(settings.seed)
        if supervision_dir is None:
            supervision_dir = paths.SUPERVISION_IDENTITY
        manager = DataManager(data_dir, description)
        task = IdentityTask(cfg, settings, manager, supervision_dir, device)
        return run_training(task, settings, exp_dir, device, dist_info, wandb_mode, "nphm_identity", cfg, progress,
                            stop_after)
    finally:
        shutdown_distributed(dist_info)
