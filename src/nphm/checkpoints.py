"""Reading and writing experiments in the release's layout.

``exp_dir/configs.yaml`` and ``exp_dir/checkpoints/checkpoint_epoch_{epoch}.tar``: a
``torch.save`` dict with the keys of :data:`CHECKPOINT_KEYS`. Mean anchors are not part of the
release's ``decoder_state_dict``; our own checkpoints add them as the extra top-level entry
``mean_anchors``, official ones need the release's ``assets/anchors_39.npy``.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import numpy as np
import torch
from torch import nn

from nphm.config import load_yaml, save_yaml
from nphm.models.factory import deformation_from_config, identity_from_config, identity_section
from nphm.utils.device import resolve_device
from nphm.utils.io import PathLike, atomic_path


CHECKPOINT_KEYS = (
    "epoch",
    "decoder_state_dict",
    "optimizer_encoder_state_dict",
    "optimizer_lat_state_dict",
    "optimizer_lat_val_state_dict",
    "latent_codes_state_dict",
    "latent_codes_val_state_dict",
)
MEAN_ANCHORS_KEY = "mean_anchors"


def checkpoint_path(exp_dir: PathLike, epoch: int) -> Path:
    return Path(exp_dir) / "checkpoints" / f"checkpoint_epoch_{epoch}.tar"


def available_epochs(exp_dir: PathLike) -> list:
    """Sorted epochs with a checkpoint file in ``exp_dir/checkpoints``."""
    folder = Path(exp_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = (re.fullmatch(r"checkpoint_epoch_(\d+)\.tar", p.name) for p in folder.iterdir())
    return sorted(int(m.group(1)) for m in found if m)


def load_config(exp_dir: PathLike) -> Dict[str, Any]:
    """The config of an experiment, ``exp_dir/configs.yaml`` (see :func:`nphm.config.load_yaml`)."""
    return load_yaml(Path(exp_dir) / "configs.yaml", "experiment config")


def read_checkpoint(exp_dir: PathLike, epoch: int) -> Dict[str, Any]:
    path = checkpoint_path(exp_dir, epoch)
    if not path.is_file():
        have = available_epochs(exp_dir)
        raise FileNotFoundError(f"checkpoint not found: {path} (epochs available: {have or 'none'})")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupted / truncated files
        raise ValueError(f"cannot read checkpoint {path}: {err}") from err
    if "decoder_state_dict" not in ckpt:
        raise ValueError(f"{path}: not an NPHM checkpoint (no 'decoder_state_dict'; keys: {sorted(ckpt)})")
    return ckpt


def newest_readable_checkpoint(exp_dir: PathLike, warn=None) -> Tuple[Optional[int], Optional[Dict[str, Any]]]:
    """``(epoch, checkpoint)`` of the newest checkpoint of ``exp_dir`` that reads, or
    ``(None, None)`` without checkpoints.

    A newer one that does not read (truncated by a crash of the machine or a full disk, not an
    NPHM checkpoint) is passed over with a warning through ``warn`` (default
    :func:`warnings.warn`), naming it and the epoch used instead.

    Raises:
        ValueError: no checkpoint of the experiment reads.
    """
    import warnings

    warn = warn or (lambda message: warnings.warn(message, stacklevel=3))
    epochs = available_epochs(exp_dir)
    broken = []
    for epoch in reversed(epochs):
        try:
            ckpt = read_checkpoint(exp_dir, epoch)
        except ValueError as e:
            broken.append(str(e))
            continue
        if broken:
            warn(f"resuming from epoch {epoch}, the newest readable checkpoint; passed over: " + "; ".join(broken))
        return epoch, ckpt
    if broken:
        raise ValueError(f"no checkpoint of {exp_dir} can be read: " + "; ".join(broken))
    return None, None


def load_state_dict_checked(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Strict ``load_state_dict`` with one clear message listing every mismatch."""
    expected = model.state_dict()
    problems = []
    for key, tensor in expected.items():
        if key not in state_dict:
            problems.append(f"missing key {key!r} (expected shape {tuple(tensor.shape)})")
        elif tuple(state_dict[key].shape) != tuple(tensor.shape):
            problems.append(
                f"key {key!r}: checkpoint shape {tuple(state_dict[key].shape)} != model shape {tuple(tensor.shape)}"
            )
    for key in state_dict:
        if key not in expected:
            problems.append(f"unexpected key {key!r} with shape {tuple(state_dict[key].shape)}")
    if problems:
        raise ValueError(f"{source} does not match the architecture of its config:\n  " + "\n  ".join(problems))
    model.load_state_dict(state_dict, strict=True)


def _latents(ckpt: Mapping[str, Any], dim: int) -> Dict[str, torch.Tensor]:
    out = {}
    for split, key in (("train", "latent_codes_state_dict"), ("val", "latent_codes_val_state_dict")):
        entry = ckpt.get(key)
        out[split] = entry["weight"].float() if entry is not None else torch.zeros(0, dim)
    return out


def _mean_anchors(ckpt: Mapping[str, Any], anchors_path: Optional[PathLike], source: Path) -> torch.Tensor:
    if anchors_path is not None:
        path = Path(anchors_path)
        if not path.is_file():
            raise FileNotFoundError(f"mean anchors file not found: {path}")
        return torch.from_numpy(np.load(path).astype(np.float32)).reshape(-1, 3)
    if MEAN_ANCHORS_KEY in ckpt:
        return torch.as_tensor(ckpt[MEAN_ANCHORS_KEY], dtype=torch.float32).reshape(-1, 3)
    raise ValueError(
        f"{source} stores no mean anchors (official checkpoints do not): pass anchors_path, "
        "e.g. the release's assets/anchors_39.npy"
    )


def load_identity(
    exp_dir: PathLike, epoch: int, device: Union[str, torch.device] = "cpu", anchors_path: Optional[PathLike] = None
) -> Tuple[nn.Module, Dict[str, torch.Tensor]]:
    """Identity model and latents of a stage-1 experiment (ours or the release's).

    Returns:
        ``(model, {"train": (n, D), "val": (m, D)})``, the model in eval mode on ``device``.
    """
    cfg = load_config(exp_dir)
    ckpt = read_checkpoint(exp_dir, epoch)
    state = ckpt["decoder_state_dict"]
    decoder_cfg = identity_section(cfg)
    source = checkpoint_path(exp_dir, epoch)
    local = "ensembled_deep_sdf.lin0.weight" in state
    anchors = _mean_anchors(ckpt, anchors_path, source) if local else None
    model = identity_from_config(decoder_cfg, anchors_mean=anchors, state_dict=state)
    load_state_dict_checked(model, state, str(source))
    device = resolve_device(device)
    latents = {k: v.to(device) for k, v in _latents(ckpt, model.lat_dim).items()}
    return model.to(device).eval(), latents


def load_expression(
    exp_dir: PathLike, epoch: int, device: Union[str, torch.device] = "cpu", anchors_path: Optional[PathLike] = None
) -> Tuple[nn.Module, Dict[str, torch.Tensor]]:
    """Deformation model and expression latents of a stage-2 experiment.

    The deformation network receives anchors as an input, so ``anchors_path`` is not needed
    here; it is accepted so that both loaders take the same arguments.

    Returns:
        ``(model, {"train": (n, D_ex), "val": (m, D_ex)})``, the model in eval mode.
    """
    del anchors_path
    cfg = load_config(exp_dir)
    ckpt = read_checkpoint(exp_dir, epoch)
    state = ckpt["decoder_state_dict"]
    source = checkpoint_path(exp_dir, epoch)
    if "ex_decoder" not in cfg:
        raise ValueError(f"{Path(exp_dir) / 'configs.yaml'} has no 'ex_decoder' section: not an expression experiment")
    model = deformation_from_config(cfg, state_dict=state)
    load_state_dict_checked(model, state, str(source))
    device = resolve_device(device)
    latents = {k: v.to(device) for k, v in _latents(ckpt, model.lat_dim_expr).items()}
    return model.to(device).eval(), latents


def save_checkpoint(
    exp_dir: PathLike,
    epoch: int,
    decoder: nn.Module,
    latent_codes: nn.Module,
    latent_codes_val: Optional[nn.Module] = None,
    optimizer_encoder: Optional[torch.optim.Optimizer] = None,
    optimizer_lat: Optional[torch.optim.Optimizer] = None,
    optimizer_lat_val: Optional[torch.optim.Optimizer] = None,
    extra: Optional[Mapping[str, Any]] = None,
) -> Path:
    """Write ``checkpoint_epoch_{epoch}.tar`` in the release's layout (atomically).

    NPHM identity models also store their mean anchors under :data:`MEAN_ANCHORS_KEY`;
    ``extra`` adds further top-level entries (e.g. scheduler states for resuming).
    """
    ckpt: Dict[str, Any] = {
        "epoch": epoch,
        "decoder_state_dict": decoder.state_dict(),
        "optimizer_encoder_state_dict": optimizer_encoder.state_dict() if optimizer_encoder else None,
        "optimizer_lat_state_dict": optimizer_lat.state_dict() if optimizer_lat else None,
        "optimizer_lat_val_state_dict": optimizer_lat_val.state_dict() if optimizer_lat_val else None,
        "latent_codes_state_dict": latent_codes.state_dict(),
        "latent_codes_val_state_dict": latent_codes_val.state_dict() if latent_codes_val is not None else None,
    }
    if hasattr(decoder, "anchors_mean"):
        ckpt[MEAN_ANCHORS_KEY] = decoder.anchors_mean.detach().cpu()
    if extra:
        ckpt.update(extra)
    path = checkpoint_path(exp_dir, epoch)
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
    return path


def save_config(exp_dir: PathLike, cfg: Mapping[str, Any]) -> Path:
    """Write ``exp_dir/configs.yaml`` atomically."""
    return save_yaml(Path(exp_dir) / "configs.yaml", cfg)
