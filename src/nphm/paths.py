"""Every path the project uses, in one place.

Each path has a default inside the repository checkout and can be overridden by an
environment variable (``NPHM_<NAME>``), so nothing needs to be edited to run on a new machine::

    export NPHM_DATA=/data/nphm/dataset          # the real NPHM release
    export NPHM_EXPERIMENT_DIR=/checkpoints/nphm # official pretrained models

Names follow the release's ``env_paths.py`` (the repository's root ``env_paths.py`` re-exports
this module for the release's habits). ``CODE_BASE`` is the checkout this package was installed
from (``pip install -e .``); ``NPHM_CODE_BASE`` moves it.

The variables are read when this module is first imported.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "ANCHOR_INDICES_PATH", "ANCHOR_MEAN_PATH", "ASSETS", "CODE_BASE", "CONFIGS", "DATA", "DATASET_DESCRIPTION",
    "DATA_SINGLE_VIEW", "EXPERIMENT_DIR", "FACE_MASK_PATH", "FITTING_DIR", "PRETRAINED", "SUPERVISION_DEFORMATION_OPEN",
    "SUPERVISION_IDENTITY", "WORK_DIR",
]


def _path(name: str, default: Path) -> Path:
    return Path(os.environ.get(f"NPHM_{name}", str(default))).expanduser()


#: The checkout: configs/, pretrained/ and dataset/ live here.
CODE_BASE = _path("CODE_BASE", Path(__file__).resolve().parents[2])
#: Root of all generated or downloaded data (the defaults below live under it).
WORK_DIR = _path("WORK_DIR", CODE_BASE / "work")
#: Dataset in the NPHM layout: DATA/{subject:03d}/{expression:03d}/scan.ply, ...
DATA = _path("DATA", WORK_DIR / "dataset")
#: Single-view test observations: DATA_SINGLE_VIEW/{subject:03d}/{expression}/obs.npy
DATA_SINGLE_VIEW = _path("DATA_SINGLE_VIEW", WORK_DIR / "single_view")
#: Identity supervision (surface samples of the neutral scans).
SUPERVISION_IDENTITY = _path("SUPERVISION_IDENTITY", WORK_DIR / "supervision" / "identity")
#: Deformation supervision (neutral <-> expression correspondences).
SUPERVISION_DEFORMATION_OPEN = _path("SUPERVISION_DEFORMATION_OPEN",
                                     WORK_DIR / "supervision" / "deformation_open")
#: Training experiments: EXPERIMENT_DIR/{exp_name}/configs.yaml, checkpoints/...
EXPERIMENT_DIR = _path("EXPERIMENT_DIR", WORK_DIR / "experiments")
#: Fitting results: FITTING_DIR/forward_{exp_name}/{exp_tag}/
FITTING_DIR = _path("FITTING_DIR", WORK_DIR / "fitting")
#: Compact models shipped with the repository (trained on the realistic ICT heads; see its README.md).
PRETRAINED = _path("PRETRAINED", CODE_BASE / "pretrained" / "ict_cpu")
#: Training and fitting configs (the release's and the small CPU ones).
CONFIGS = _path("CONFIGS", CODE_BASE / "configs")
#: Model assets (anchors_39.npy, face.npy, ...). The synthetic generator writes its own
#: assets next to its dataset; for the real release point this at the release's assets/.
ASSETS = _path("ASSETS", DATA / "assets")
#: Dataset description (splits, neutral expressions, index tables). Looked up as
#: DATA/dataset.json first; this is the fallback for the real release.
DATASET_DESCRIPTION = _path("DATASET_DESCRIPTION", CODE_BASE / "dataset" / "nphm_release.json")
ANCHOR_MEAN_PATH = ASSETS / "anchors_39.npy"
ANCHOR_INDICES_PATH = ASSETS / "lm_inds_39.npy"
FACE_MASK_PATH = ASSETS / "face.npy"
