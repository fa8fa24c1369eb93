"""Shared test data of the supervision and training tests: the tiny dataset and tiny configs.

The tiny synthetic dataset (5 subjects x 3 expressions: 3 train, 1 eval, 1 test subjects) with
small identity and deformation supervision is built once per test session by the ``tiny``
fixture of ``conftest.py`` (:func:`build_tiny_dataset`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict

import numpy as np

from nphm.data import DataManager

N_SUBJECTS, N_EXPRESSIONS, SEED = 5, 3, 3
IDENTITY_SAMPLES, IDENTITY_NON_FACE, PAIRS_PER_DIRECTION = 60_000, 6_000, 1_500


def build_tiny_dataset(root: Path) -> Dict[str, Path]:
    """Generate the tiny dataset and its supervision under ``root``; returns its
    ``{"data", "identity", "deformation"}`` folders."""
    from nphm.data.synthetic import generate_dataset
    from nphm.preprocessing import (
        DeformationSettings,
        IdentitySettings,
        sample_deformation_dataset,
        sample_identity_dataset,
    )

    generate_dataset(root / "data", n_subjects=N_SUBJECTS, n_expressions=N_EXPRESSIONS, seed=SEED, workers=1,
                     progress=False)
    manager = DataManager(root / "data")
    subjects = manager.subjects("train") + manager.subjects("eval")
    for results in sample_identity_dataset(manager, root / "identity", subjects,
                                           IdentitySettings(IDENTITY_SAMPLES, IDENTITY_NON_FACE)):
        assert all(r.status == "done" for r in results), results
    for results in sample_deformation_dataset(manager, root / "deformation", subjects,
                                              DeformationSettings(PAIRS_PER_DIRECTION)):
        assert all(r.status == "done" for r in results), results
    return {"data": root / "data", "identity": root / "identity", "deformation": root / "deformation"}


LAMBDAS_NPHM = {"lat_reg": 0.01, "surf_sdf": 2.0, "normals": 0.3, "space_sdf": 0.01, "grad": 0.1,
                "anchors": 7.5, "symm_dist": 0.01, "middle_dist": 0.0}
LAMBDAS_NPM = {"lat_reg": 0.002, "surf_sdf": 2.0, "normals": 0.3, "space_sdf": 0.01, "grad": 0.1,
               "anchors": 0.0, "symm_dist": 0.0, "middle_dist": 0.0}
LAMBDAS_DEF = {"corresp": 100.0, "lat_reg": 5e-5, "loss_reg_zero": 5e-5}

_TRAINING = {
    "batch_size": 2, "ckpt_interval": 100, "grad_clip": 0.1, "grad_clip_lat": 0.1, "lr": 2e-3, "lr_lat": 5e-3,
    "lr_decay_factor": 0.5, "lr_decay_factor_lat": 0.5, "lr_decay_interval": 3, "lr_decay_interval_lat": 3,
    "lr_decay_start_lat": 0, "weight_decay": 0.01, "num_workers": 0, "n_preview": 0, "preview_resolution": 24,
}


def identity_config(kind: str, nepochs: int = 4, **training) -> dict:
    """A tiny stage-1 config: ``kind`` "nphm" or "npm"."""
    if kind == "nphm":
        decoder = {"decoder_lat_dim_glob": 6, "decoder_lat_dim_loc": 4, "decoder_hidden_dim": 24,
                   "decoder_nlayers": 2, "decoder_nloc": 39, "decoder_nsymm_pairs": 16}
        lambdas = LAMBDAS_NPHM
    else:
        decoder = {"decoder_lat_dim": 16, "decoder_hidden_dim": 32, "decoder_nlayers": 4}
        lambdas = LAMBDAS_NPM
    t = dict(_TRAINING, nepochs=nepochs, npoints_decoder=64, npoints_decoder_non=40, lambdas=dict(lambdas))
    t.update(training)
    return {"decoder": decoder, "training": t}


def expression_config(kind: str, shape_exp_name: str, nepochs: int = 4, **training) -> dict:
    """A tiny stage-2 config for an identity experiment of ``kind`` "nphm" or "npm"."""
    if kind == "nphm":
        ex = {"decoder_hidden_dim": 48, "decoder_lat_dim_expr": 6, "decoder_lat_dim_id": 6, "decoder_nlayers": 2}
    else:
        # 4 layers: the checkpoint loader reads the NPM width off lin0, which needs the skip beyond it
        ex = {"decoder_hidden_dim": 48, "decoder_lat_dim": 6, "decoder_nlayers": 4}
    t = dict(_TRAINING, nepochs=nepochs, npoints_decoder=64, npoints_zero=16, lambdas=dict(LAMBDAS_DEF),
             grad_clip=0.025, grad_clip_lat=0.025, lr=1e-3, shape_exp_name=shape_exp_name, shape_ckpt=None)
    t.update(training)
    return {"ex_decoder": ex, "training": t}


def state_arrays(ckpt: dict) -> Dict[str, np.ndarray]:
    """Every tensor of a checkpoint's network, latents and optimiser states, flattened by key."""
    import torch

    out = {}

    def walk(prefix, obj):
        if isinstance(obj, torch.Tensor):
            t = obj.to_dense() if obj.is_sparse else obj
            out[prefix] = t.detach().cpu().double().numpy()
        elif isinstance(obj, dict):
            for k, v in obj.items():
                walk(f"{prefix}/{k}", v)
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                walk(f"{prefix}/{i}", v)

    for key in ("decoder_state_dict", "latent_codes_state_dict", "latent_codes_val_state_dict",
                "optimizer_encoder_state_dict", "optimizer_lat_state_dict", "optimizer_lat_val_state_dict"):
        walk(key, ckpt[key])
    return out
