"""Training settings: the ``training`` section of a config, completed with defaults.

The release's configs (``configs/nphm.yaml`` etc.) hold only part of the knobs; the others
were hard-coded in its scripts. Their values are the defaults here, so a release config trains
exactly as the release did, and every value can be set in the yaml:

Both stages:
    ``nepochs`` (stage 1: 30001, stage 2: 8000), ``batch_size``, ``lr``, ``lr_lat``,
    ``weight_decay``, ``grad_clip``, ``grad_clip_lat``, ``lr_decay_*``, ``ckpt_interval``,
    ``lambdas``; ``lr_decay_start_lat``: latent learning rates decay only at multiples of
    ``lr_decay_interval_lat`` beyond this epoch (release: 1000 in stage 1, 0 in stage 2);
    ``lat_init_std`` (stage 1: ``0.1 / sqrt(D)``, stage 2: 0.01); ``val_interval`` (epochs
    between passes over the validation latents, release 1); ``num_workers`` (data loader
    processes, release 8); ``seed``; ``preview_resolution`` (release 256) and ``n_preview``
    (meshes per split at each checkpoint, release 5); ``ckpt`` (resume from this epoch
    instead of the newest).
Stage 1:
    ``npoints_decoder`` face points per subject (750), ``npoints_decoder_non`` (250; the
    release uses a fifth of it, ``npoints_non_face`` = 50), ``npoints_far`` points uniform in
    a ball of radius ``far_radius`` (``npoints_decoder // 8`` = 93; radius ``0.5 ** (1/3)``:
    the release's ``uniform_ball(rad=0.5)`` draws ``r = U(0, 0.5) ** (1/3)``, which is uniform
    in the ball of that radius, not of radius 0.5), ``sigma_near``
    (0.01), ``query_mode`` of the NPHM ensemble (``sparse`` or ``exact``) and, in sparse mode,
    ``sparse_tol`` (total blend weight per point that may be dropped; null: the model's default
    1e-6; larger values evaluate fewer members and train faster), ``anchors_mean``
    (``asset``: the dataset's anchors_39.npy; ``train_mean``: mean registration anchors of the
    training subjects).
Stage 2:
    ``npoints_decoder`` correspondences per item (1000), ``npoints_zero`` points uniform in
    ``[-zero_box, zero_box]^3`` for ``loss_reg_zero`` (100, 1.25), ``shape_exp_name`` /
    ``shape_ckpt`` the stage-1 experiment (``shape_ckpt`` null = its newest checkpoint).
"""
from __future__ import annotations

import copy
from typing import Any, Dict, Mapping

COMMON_DEFAULTS: Dict[str, Any] = {
    "batch_size": 32,
    "ckpt_interval": 500,
    "grad_clip": None,
    "grad_clip_lat": None,
    "lr_decay_factor": 0.5,
    "lr_decay_factor_lat": 0.5,
    "lr_decay_interval": None,
    "lr_decay_interval_lat": None,
    "lat_init_std": None,
    "val_interval": 1,
    "num_workers": 8,
    "seed": 0,
    "preview_resolution": 256,
    "n_preview": 5,
    "ckpt": None,
}

STAGE1_DEFAULTS: Dict[str, Any] = {
    **COMMON_DEFAULTS,
    "nepochs": 30001,
    "npoints_decoder": 750,
    "npoints_decoder_non": 250,
    "npoints_non_face": None,
    "npoints_far": None,
    "far_radius": 0.5 ** (1.0 / 3.0),
    "sigma_near": 0.01,
    "lr_decay_start_lat": 1000,
    "query_mode": "sparse",
    "sparse_tol": None,
    "anchors_mean": "asset",
}

STAGE2_DEFAULTS: Dict[str, Any] = {
    **COMMON_DEFAULTS,
    "nepochs": 8000,
    "npoints_decoder": 1000,
    "npoints_zero": 100,
    "zero_box": 1.25,
    "lr_decay_start_lat": 0,
    "lat_init_std": 0.01,
    "shape_exp_name": None,
    "shape_ckpt": None,
}

REQUIRED = ("lr", "lr_lat", "weight_decay", "lambdas")


def training_settings(cfg: Mapping[str, Any], stage: int) -> Dict[str, Any]:
    """The ``training`` section of ``cfg`` with defaults filled in and derived counts resolved.

    Raises:
        KeyError: a required key (lr, lr_lat, weight_decay, lambdas) is missing.
        ValueError: a value is out of range.
    """
    if "training" not in cfg or not isinstance(cfg["training"], Mapping):
        raise KeyError("config has no 'training' section")
    given = cfg["training"]
    missing = [k for k in REQUIRED if k not in given]
    if missing:
        raise KeyError(f"config 'training' section lacks {missing}")
    defaults = STAGE1_DEFAULTS if stage == 1 else STAGE2_DEFAULTS
    out = copy.deepcopy(defaults)
    out.update(copy.deepcopy(dict(given)))
    if stage == 1:
        if out["npoints_non_face"] is None:
            out["npoints_non_face"] = int(out["npoints_decoder_non"]) // 5
        if out["npoints_far"] is None:
            out["npoints_far"] = int(out["npoints_decoder"]) // 8
        if out["query_mode"] not in ("sparse", "exact"):
            raise ValueError(f"training.query_mode must be 'sparse' or 'exact', got {out['query_mode']!r}")
        if out["anchors_mean"] not in ("asset", "train_mean"):
            raise ValueError(f"training.anchors_mean must be 'asset' or 'train_mean', got {out['anchors_mean']!r}")
    for key in ("batch_size", "nepochs", "ckpt_interval", "val_interval"):
        if int(out[key]) < 1:
            raise ValueError(f"training.{key} must be >= 1, got {out[key]}")
    if not isinstance(out["lambdas"], Mapping):
        raise ValueError("training.lambdas must be a mapping {loss name: weight}")
    return out


def lr_at(epoch: int, base: float, factor: float, interval, start: int = -1) -> float:
    """Learning rate of a step schedule at ``epoch``: ``base * factor ** (epoch // interval)``,
    where a decay at epoch ``m`` (a multiple of ``interval``) only applies if ``m > start``
    (the release decays stage-1 latents only after epoch 1000)."""
    if not interval:
        return float(base)
    k = int(epoch) // int(interval)
    if k * int(interval) <= start:
        return float(base)
    return float(base) * float(factor) ** k
