"""Compact copies of trained experiments, for shipping small pretrained models.

:func:`export_compact` copies one checkpoint of an experiment into a new experiment folder in the
same (official) layout, ``configs.yaml`` + ``checkpoints/checkpoint_epoch_{N}.tar``, but keeps only
what inference and fitting need: the decoder weights, the training/validation latents, the mean
anchors of NPHM identity models and the lists saying which subject/scan each latent row belongs
to. Optimiser, scheduler and random-number states are dropped and floating-point tensors are
stored as float32, so a compact copy loads with :func:`nphm.checkpoints.load_identity` /
:func:`~nphm.checkpoints.load_expression` (and the fitting) but cannot resume training.

:func:`held_out_fingerprints` records a few registration vertices of the held-out (test)
subjects of a synthetic training set; :func:`fingerprint_mismatches` checks regenerated subjects
against them (the demo regenerates test heads instead of shipping them).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from nphm.checkpoints import (
    MEAN_ANCHORS_KEY,
    available_epochs,
    checkpoint_path,
    load_config,
    read_checkpoint,
    save_config,
)
from nphm.utils.io import PathLike, atomic_path


#: Top-level checkpoint entries kept by :func:`export_compact` (tensors or small lists).
KEPT_KEYS = (
    "epoch",
    "decoder_state_dict",
    "latent_codes_state_dict",
    "latent_codes_val_state_dict",
    MEAN_ANCHORS_KEY,
    "subjects_train",
    "subjects_val",
    "expressions_train",
    "expressions_val",
    "items_train",
    "items_val",
)
#: Release keys that a compact checkpoint stores as None (nothing to resume from).
EMPTY_KEYS = ("optimizer_encoder_state_dict", "optimizer_lat_state_dict", "optimizer_lat_val_state_dict")


def _float32(value: Any) -> Any:
    """``value`` with every floating-point tensor (also inside dicts) cast to float32, contiguous."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        return value.float().contiguous() if value.is_floating_point() else value.contiguous()
    if isinstance(value, dict):  # keeps OrderedDict state dicts ordered
        return type(value)((k, _float32(v)) for k, v in value.items())
    return value


def compact_checkpoint(ckpt: Mapping[str, Any]) -> Dict[str, Any]:
    """The compact form of a loaded checkpoint dict (see the module docstring)."""
    out: Dict[str, Any] = {k: _float32(ckpt[k]) for k in KEPT_KEYS if k in ckpt}
    for key in EMPTY_KEYS:
        out[key] = None
    out.setdefault("latent_codes_val_state_dict", None)
    return out


def export_compact(
    src_exp_dir: PathLike,
    dst_exp_dir: PathLike,
    epoch: Optional[int] = None,
    overwrite: bool = False,
) -> Path:
    """Copy checkpoint ``epoch`` (default: the newest) of ``src_exp_dir`` compactly to ``dst_exp_dir``.

    Writes ``dst_exp_dir/configs.yaml`` (the source's config) and
    ``dst_exp_dir/checkpoints/checkpoint_epoch_{epoch}.tar``, both atomically. Stage-2 configs
    keep ``training.shape_exp_name``/``shape_ckpt``: export the identity experiment under the
    same name and epoch beside it.

    Returns:
        the path of the written checkpoint.
    Raises:
        FileNotFoundError: no such experiment or checkpoint.
        FileExistsError: ``dst_exp_dir`` already holds a checkpoint and not ``overwrite``.
    """
    src, dst = Path(src_exp_dir), Path(dst_exp_dir)
    if src.resolve() == dst.resolve():
        raise ValueError(f"source and destination are the same folder: {src}")
    cfg = load_config(src)
    if epoch is None:
        epochs = available_epochs(src)
        if not epochs:
            raise FileNotFoundError(f"no checkpoints in {src / 'checkpoints'}")
        epoch = epochs[-1]
    existing = available_epochs(dst)
    if existing and not overwrite:
        raise FileExistsError(f"{dst} already holds checkpoints (epochs {existing}); pass overwrite to replace them")
    compact = compact_checkpoint(read_checkpoint(src, int(epoch)))
    save_config(dst, cfg)
    path = checkpoint_path(dst, int(epoch))
    with atomic_path(path) as tmp:
        torch.save(compact, tmp)
    for old in existing:  # overwrite: the folder holds exactly the exported epoch
        if old != int(epoch):
            checkpoint_path(dst, old).unlink()
    return path


# ------------------------------------------------------------------------ training-set fingerprints
#: Number of registration vertices recorded per test subject by :func:`held_out_fingerprints`.
N_FINGERPRINT_VERTICES = 32


def _fingerprint_vertices(manager, subject: int) -> Tuple[int, List[int], np.ndarray]:
    expression = manager.neutral_expression(subject, "open")
    vertices = np.asarray(manager.load_registration(subject, expression).vertices, dtype=np.float64)
    ids = np.linspace(0, len(vertices) - 1, N_FINGERPRINT_VERTICES).round().astype(int)
    return expression, ids.tolist(), vertices[ids]


def held_out_fingerprints(manager, subjects: Sequence[int]) -> Dict[str, Dict[str, Any]]:
    """A few neutral-registration vertices per subject (nphm frame), so that a regenerated
    synthetic test subject can be checked against the one a model was held out from.

    Returns:
        ``{str(subject): {"expression": e, "vertex_ids": [...], "vertices": [[x, y, z], ...]}}``.
    """
    out = {}
    for subject in subjects:
        expression, ids, verts = _fingerprint_vertices(manager, int(subject))
        out[str(int(subject))] = {"expression": expression, "vertex_ids": ids,
                                  "vertices": np.round(verts, 7).tolist()}
    return out


def fingerprint_mismatches(manager, fingerprints: Mapping[str, Mapping[str, Any]], subjects: Sequence[int],
                           tol: float = 1e-5) -> List[str]:
    """Subjects of ``subjects`` whose data differ from ``fingerprints`` (one message each;
    subjects without a fingerprint are not checked)."""
    problems = []
    for subject in subjects:
        entry = fingerprints.get(str(int(subject)))
        if entry is None:
            continue
        mesh = manager.load_registration(int(subject), int(entry["expression"]))
        ids = np.asarray(entry["vertex_ids"], dtype=int)
        if ids.max() >= len(mesh.vertices):
            problems.append(f"subject {subject}: registration has {len(mesh.vertices)} vertices, the fingerprint "
                            f"needs vertex {ids.max()}")
            continue
        diff = float(np.abs(np.asarray(mesh.vertices)[ids] - np.asarray(entry["vertices"])).max())
        if diff > tol:
            problems.append(f"subject {subject}: registration differs by up to {diff:.2e} nphm units")
    return problems


__all__ = [
    "KEPT_KEYS",
    "EMPTY_KEYS",
    "compact_checkpoint",
    "export_compact",
    "fingerprint_mismatches",
    "held_out_fingerprints",
]
