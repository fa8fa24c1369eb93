"""Stage 2: the expression model (forward deformation field) and one expression latent per
training (subject, expression), with the identity network and latents of a stage-1 experiment
frozen.

Entry point: :func:`train`. Losses: :func:`nphm.training.losses.deformation_losses`.
The identity experiment is ``training.shape_exp_name`` (a folder next to the new experiment
unless given explicitly) at epoch ``training.shape_ckpt`` (null: its newest checkpoint); the
saved ``configs.yaml`` records the resolved epoch, the deformation ``mode`` in
``ex_decoder.mode`` and the identity model's settings in ``id_decoder``.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from nphm.checkpoints import (
    MEAN_ANCHORS_KEY,
    available_epochs,
    checkpoint_path,
    load_config,
    load_state_dict_checked,
    read_checkpoint,
)
from nphm.models.deformation import NPMDeformation
from nphm.models.factory import config_is_local, deformation_from_config, identity_from_config, identity_section
from nphm.pictures import render_mesh_grid
from nphm.query import deform_points
from nphm.reconstruction import PREVIEW_BOUNDS, mesh_identity
from nphm.training.config import ExpressionTrainingSettings
from nphm.training.data import DeformationDataset
from nphm.training.distributed import init_distributed, shutdown_distributed
from nphm.training.experiment import prepare_experiment, seed_everything
from nphm.training.latents import renormalized
from nphm.training.losses import deformation_losses
from nphm.training.preview import save_preview_mesh, try_mesh
from nphm.training.trainer import run_training
from nphm.utils.io import PathLike


MODES = ("compress", "glob_only", "expr_only", "npm")
LOSSES = ("corresp", "lat_reg", "loss_reg_zero")


def build_deformation(cfg: Mapping[str, Any], mode: str) -> nn.Module:
    """The deformation network of a stage-2 config.

    NPM mode: the release always builds 8 x 1024 (its yaml's width is ignored); a config that
    sets ``ex_decoder.decoder_nlayers`` gets ``decoder_hidden_dim`` x ``decoder_nlayers``
    instead (used by the small CPU configs; checkpoints load either way).
    """
    ex = cfg["ex_decoder"]
    if mode == "npm" and "decoder_nlayers" in ex:
        id_cfg = identity_section(cfg)
        return NPMDeformation(lat_dim_id=int(id_cfg["decoder_lat_dim"]),
                              lat_dim_expr=int(ex.get("decoder_lat_dim_expr", ex.get("decoder_lat_dim", 200))),
                              hidden_dim=int(ex["decoder_hidden_dim"]), n_layers=int(ex["decoder_nlayers"]))
    return deformation_from_config(cfg, mode=mode)


class FrozenIdentity:
    """The identity model and latents of a stage-1 checkpoint, mapped to the subjects of a
    stage-2 dataset.

    Latent rows follow the checkpoint's ``subjects_train`` / ``subjects_val`` lists (written by
    our trainer); a checkpoint without them (the release's) is assumed to list the subjects in
    the order of the current dataset, which is checked by count.
    """

    def __init__(self, exp_dir: Path, epoch: int, device: torch.device, anchors_path: Optional[Path]) -> None:
        cfg = load_config(exp_dir)
        ckpt = read_checkpoint(exp_dir, epoch)
        self.source = checkpoint_path(exp_dir, epoch)
        self.decoder_cfg = dict(identity_section(cfg))
        state = ckpt["decoder_state_dict"]
        self.local = config_is_local(self.decoder_cfg)
        anchors = None
        if self.local:
            if MEAN_ANCHORS_KEY in ckpt:
                anchors = torch.as_tensor(ckpt[MEAN_ANCHORS_KEY], dtype=torch.float32).reshape(-1, 3)
            elif anchors_path is not None and Path(anchors_path).is_file():
                anchors = torch.from_numpy(np.load(anchors_path).astype(np.float32)).reshape(-1, 3)
            else:
                raise ValueError(f"{self.source} stores no mean anchors and no anchors file was found "
                                 f"({anchors_path})")
        self.model = identity_from_config(self.decoder_cfg, anchors_mean=anchors, state_dict=state)
        load_state_dict_checked(self.model, state, str(self.source))
        self.model.to(device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.latents = {}
        self.subjects = {}
        for split, key, subj_key in (("train", "latent_codes_state_dict", "subjects_train"),
                                     ("val", "latent_codes_val_state_dict", "subjects_val")):
            entry = ckpt.get(key)
            weight = entry["weight"].float() if entry is not None else torch.zeros(0, self.model.lat_dim)
            self.latents[split] = renormalized(weight).to(device)
            self.subjects[split] = [int(s) for s in ckpt[subj_key]] if subj_key in ckpt else None

    def rows_for(self, split: str, subjects: Sequence[int]) -> torch.Tensor:
        """Latent rows (n,) of ``subjects`` in the ``split`` table.

        Raises:
            ValueError: a subject has no identity latent.
        """
        known = self.subjects[split]
        if known is None:
            if len(subjects) != len(self.latents[split]):
                raise ValueError(f"{self.source}: {len(self.latents[split])} {split} identity latents but the dataset "
                                 f"has {len(subjects)} {split} subjects (and the checkpoint lists no subjects)")
            return torch.arange(len(subjects))
        missing = [s for s in subjects if s not in known]
        if missing:
            raise ValueError(f"{self.source}: no {split} identity latent for subject(s) {missing}; "
                             f"train stage 1 on the same subjects")
        return torch.as_tensor([known.index(s) for s in subjects], dtype=torch.long)


class ExpressionTask:
    """Stage-2 task for :class:`~nphm.training.trainer.AutoDecoderTrainer`."""

    name = "expression"

    def __init__(self, cfg: Mapping[str, Any], settings: ExpressionTrainingSettings, manager,
                 supervision_dir: PathLike, identity: FrozenIdentity, mode: str, device: torch.device) -> None:
        self.manager = manager
        self.settings = settings
        self.identity = identity
        self.device = device
        common = dict(n_points=settings.npoints_decoder, n_zero=settings.npoints_zero, zero_box=settings.zero_box,
                      seed=settings.seed)
        self.train_set = DeformationDataset(manager, supervision_dir, "train", **common)
        self.val_set = DeformationDataset(manager, supervision_dir, "eval", **common)
        if len(self.train_set) == 0:
            raise ValueError(f"no training expressions found in {manager.data_dir}")
        self.network = build_deformation(cfg, mode)
        self.latent_dim = int(self.network.lat_dim_expr)
        self.loss_keys = LOSSES
        self.z_id, self.anchors = {}, {}
        for split, dataset in (("train", self.train_set), ("val", self.val_set)):
            rows = identity.rows_for(split, dataset.subjects).to(device)
            self.z_id[split] = identity.latents[split][rows]
            with torch.no_grad():
                self.anchors[split] = identity.model.anchors(self.z_id[split]) if identity.local else None

    def losses(self, batch: Dict[str, torch.Tensor], z: torch.Tensor, split: str) -> Dict[str, torch.Tensor]:
        subject = batch["subject_index"]
        anchors = self.anchors[split][subject] if self.anchors[split] is not None else None
        return deformation_losses(self.network, batch, z, self.z_id[split][subject], anchors)

    def checkpoint_extra(self) -> Dict[str, Any]:
        return {
            "items_train": [list(map(int, item[:2])) for item in self.train_set.items],
            "items_val": [list(map(int, item[:2])) for item in self.val_set.items],
            "identity_checkpoint": str(self.identity.source),
        }

    def preview(self, epoch: int, out_dir: Path, latents: Dict[str, torch.Tensor]) -> Optional[Path]:
        """Posed meshes of ``n_preview`` training and validation items
        (``{split}_{subject}_{expression}.ply``) next to their registrations, in ``preview.png``."""
        n = self.settings.n_preview
        res = self.settings.preview_resolution
        tiles: List = []
        canonical: Dict = {}
        for split, dataset in (("train", self.train_set), ("val", self.val_set)):
            if len(dataset) == 0 or n <= 0:
                continue
            for index in np.unique(np.linspace(0, len(dataset) - 1, min(n, len(dataset))).round().astype(int)):
                s, e, k = dataset.items[index]
                z_id = self.z_id[split][k]
                if (split, k) not in canonical:
                    canonical[(split, k)] = try_mesh(mesh_identity, self.identity.model, z_id, resolution=res,
                                                     bounds=PREVIEW_BOUNDS, device=self.device)[0]
                base = canonical[(split, k)]
                posed = None
                if base is not None:
                    verts = torch.as_tensor(np.asarray(base.vertices), dtype=torch.float32, device=self.device)
                    anchors = self.anchors[split][k] if self.anchors[split] is not None else None
                    moved = deform_points(self.network, verts, z_id, latents[split][index], anchors)
                    posed = type(base)(moved.cpu().numpy(), np.asarray(base.faces), process=False)
                save_preview_mesh(out_dir / f"{split}_{s}_{e}.ply", posed)
                tiles.append((f"{split} {s}/{e}", posed))
                tiles.append((f"registration {s}/{e}", self.manager.load_registration(s, e)))
        if not tiles:
            return None
        return render_mesh_grid(out_dir / "preview.png", tiles, title=f"epoch {epoch}")


def _resolve_identity(cfg: Mapping[str, Any], exp_dir: Path, identity_exp_dir: Optional[PathLike]) -> tuple:
    t = cfg.get("training", {})
    name = t.get("shape_exp_name")
    if identity_exp_dir is None:
        if not name:
            raise KeyError("training.shape_exp_name (the stage-1 experiment) is not set")
        identity_exp_dir = exp_dir.parent / str(name)
    identity_exp_dir = Path(identity_exp_dir)
    if not (identity_exp_dir / "configs.yaml").is_file():
        raise FileNotFoundError(f"stage-1 experiment not found: {identity_exp_dir} (set training.shape_exp_name "
                                "or pass the identity experiment explicitly)")
    epoch = t.get("shape_ckpt")
    if epoch is None:
        epochs = available_epochs(identity_exp_dir)
        if not epochs:
            raise FileNotFoundError(f"stage-1 experiment {identity_exp_dir} has no checkpoints")
        epoch = epochs[-1]
    elif isinstance(epoch, bool) or not str(epoch).lstrip("-").isdigit():
        raise ValueError(f"training.shape_ckpt must be an epoch number or null, got {epoch!r}")
    return identity_exp_dir, int(epoch)


def train(
    cfg: Mapping[str, Any],
    exp_dir: PathLike,
    mode: str,
    data_dir: Optional[PathLike] = None,
    supervision_dir: Optional[PathLike] = None,
    description: Optional[PathLike] = None,
    identity_exp_dir: Optional[PathLike] = None,
    device: Optional[Union[str, torch.device]] = None,
    wandb_mode: str = "offline",
    stop_after: Optional[int] = None,
    progress: bool = True,
) -> Dict[str, Any]:
    """Train (or resume) a stage-2 experiment.

    Args:
        cfg: config with ``ex_decoder``, ``id_decoder`` and ``training`` sections
            (``configs/nphm_def.yaml`` style); ignored in favour of ``exp_dir/configs.yaml``
            when that exists.
        exp_dir: ``EXPERIMENT_DIR/{exp_name}``.
        mode: ``compress`` / ``glob_only`` / ``expr_only`` (NPHM identity) or ``npm`` (NPM).
        identity_exp_dir: the stage-1 experiment (default: ``exp_dir``'s sibling named
            ``training.shape_exp_name``).
        Other arguments as in :func:`nphm.training.stage1.train`; supervision_dir defaults to
        ``nphm.paths.SUPERVISION_DEFORMATION_OPEN``.
    """
    from nphm.data import DataManager
    from nphm import paths

    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
    exp_dir = Path(exp_dir)
    dist_info, device = init_distributed(device)
    try:
        if (exp_dir / "configs.yaml").is_file():
            cfg = load_config(exp_dir)
            saved_mode = cfg.get("ex_decoder", {}).get("mode")
            if saved_mode is not None and saved_mode != mode:
                raise ValueError(f"{exp_dir / 'configs.yaml'} was trained with -mode {saved_mode}, not {mode}")
        cfg = copy.deepcopy(dict(cfg))
        if "ex_decoder" not in cfg or "training" not in cfg:
            raise KeyError("a stage-2 config needs 'ex_decoder' and 'training' sections")
        id_dir, id_epoch = _resolve_identity(cfg, exp_dir, identity_exp_dir)
        id_cfg = load_config(id_dir)
        cfg["ex_decoder"]["mode"] = mode
        cfg["id_decoder"] = dict(identity_section(id_cfg))
        cfg["training"]["shape_exp_name"] = id_dir.name
        cfg["training"]["shape_ckpt"] = id_epoch
        local = config_is_local(cfg["id_decoder"])
        if (mode == "npm") == local:
            kind = "NPHM" if local else "NPM"
            raise ValueError(f"mode {mode!r} does not fit the {kind} identity model of {id_dir}")
        cfg = prepare_experiment(exp_dir, cfg, dist_info)
        settings = ExpressionTrainingSettings.from_config(cfg)
        seed_everything(settings.seed)
        manager = DataManager(data_dir, description)
        if supervision_dir is None:
            supervision_dir = paths.SUPERVISION_DEFORMATION_OPEN
        anchors_path = manager.asset_path("anchors_mean") if local else None
        identity = FrozenIdentity(id_dir, id_epoch, device, anchors_path)
        task = ExpressionTask(cfg, settings, manager, supervision_dir, identity, mode, device)
        return run_training(task, settings, exp_dir, device, dist_info, wandb_mode, "nphm_expression", cfg, progress,
                            stop_after)
    finally:
        shutdown_distributed(dist_info)
