"""Every path the project uses, in one place.

Each path has a default inside this repository and can be overridden by an environment
variable (``NPHM_<NAME>``), so nothing needs to be edited to run on a new machine::

    export NPHM_DATA=/data/nphm/dataset          # the real NPHM release
    export NPHM_EXPERIMENT_DIR=/checkpoints/nphm # official pretrained models

Names follow the release's ``env_paths.py``.
"""
from __future__ import annotations

import os
from pathlib import Path

CODE_BASE = Path(__file__).resolve().parent


def _path(name: str, default: Path) -> Path:
    return Path(os.environ.get(f"NPHM_{name}", str(default))).expanduser()


#: Root of all generated or downloaded data (the defaults below live under it).
WORK_DIR = _path("WORK_DIR", CODE_BASE / "work")
#: Dataset in the NPHM layout: DATA/{subject:03d}/{expression:03d}/scan.ply, ...
DATA = _path("DATA", WORK_DIR / "dataset")
#: Single-view test observations: DATA_SINGLE_VIEW/{subject:03d}/{expression}/obs.npy
DATA_SINGLE_VIEW = _path("DATA_SINGLE_VIEW", WORK_DIR / "single_view")
#: Identity supervision (surface samples of the neutral scans).
SUPERVISION_IDENTITY = _path("SUPERVISION_IDENTITY", WORK_DIR / "supervision" / "identity")
#: Deformation supervision (neutral <-> expression correspondences).
SUPERVISION_DEFORMATION_OPEN = _path(
    "SUPERVISION_DEFORMATION_OPEN", WORK_DIR / "supervision" / "deformation_open"
)
#: Training experiments: EXPERIMENT_DIR/{exp_name}/configs.yaml, checkpoints/...
EXPERIMENT_DIR = _path("EXPERIMENT_DIR", WORK_DIR / "experiments")
#: Fitting results: FITTING_DIR/forward_{exp_name}/{exp_tag}/
FITTING_DIR = _path("FITTING_DIR", WORK_DIR / "fitting")
#: Compact models shipped with the repository (trained on the synthetic set; see its README.md).
PRETRAINED = _path("PRETRAINED", CODE_BASE / "pretrained" / "synthetic_cpu")
#: Model assets (anchors_39.npy, face.npy, ...). The synthetic generator writes its own
#: assets next to its dataset; for the real release point this at the release's assets/.
ASSETS = _path("ASSETS", DATA / "assets")
#: Dataset description (splits, neutral expressions, index tables). Looked up as
#: DATA/dataset.json first; this is the fallback for the real release.
DATASET_DESCRIPTION = _path("DATASET_DESCRIPTION", CODE_BASE / "dataset" / "nphm_release.json")

ANCHOR_MEAN_PATH = ASSETS / "anchors_39.npy"
ANCHOR_INDICES_PATH = ASSETS / "lm_inds_39.npy"
FACE_MASK_PATH = ASSETS / "face.npy"
