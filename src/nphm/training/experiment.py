"""Experiment folders: the saved config decides, so that re-running a command resumes it."""
from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any, Dict, Mapping

import numpy as np
import torch
from tqdm import tqdm

from nphm.checkpoints import load_config, save_config
from nphm.training.distributed import DistInfo, barrier
from nphm.utils.io import PathLike


def prepare_experiment(exp_dir: PathLike, cfg: Mapping[str, Any], dist_info: DistInfo = DistInfo()) -> Dict[str, Any]:
    """The config of the experiment: ``exp_dir/configs.yaml`` when it exists (the release's
    behaviour: an existing experiment keeps its config), else ``cfg``, which is then saved."""
    exp_dir = Path(exp_dir)
    barrier(dist_info)
    exists = (exp_dir / "configs.yaml").is_file()
    barrier(dist_info)
    if exists:
        saved = load_config(exp_dir)
        if dist_info.is_main and _plain(saved) != _plain(cfg):
            tqdm.write(f"note: {exp_dir / 'configs.yaml'} exists and differs from the given config; "
                       "continuing with the saved one")
        return saved
    out = copy.deepcopy(dict(cfg))
    if dist_info.is_main:
        (exp_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        save_config(exp_dir, out)
    barrier(dist_info)
    return out


def _plain(cfg: Mapping[str, Any]) -> Any:
    import yaml

    return yaml.safe_load(yaml.safe_dump(dict(cfg)))


def seed_everything(seed: int) -> None:
    """Seed torch, NumPy and Python (the networks and latent tables are initialised from these)."""
    torch.manual_seed(int(seed))
    np.random.seed(int(seed) % 2**32)
    random.seed(int(seed))
