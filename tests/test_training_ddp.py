"""Data-parallel training: ``torchrun`` with 2 CPU processes (gloo) gives the parameters of a
single-process run with the same global batch (up to float summation order).

The tiny dataset has 3 training subjects and the batch size is 2, so every epoch ends with a
batch that leaves the second process without an item.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from nphm.checkpoints import read_checkpoint
from nphm.training import stage1, stage2
from support.training_fixtures import expression_config, identity_config, state_arrays

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(script: str, args: list, cwd: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(REPO / "scripts" / "training" / script)] + args
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _compare(dir_a: Path, dir_b: Path, epoch: int) -> None:
    a, b = state_arrays(read_checkpoint(dir_a, epoch)), state_arrays(read_checkpoint(dir_b, epoch))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=2e-4, atol=2e-6, err_msg=k)


def test_two_process_stage1_equals_single_process(tiny, tmp_path):
    cfg = identity_config("nphm", nepochs=3)
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    _torchrun("train.py", ["-cfg_file", str(cfg_file), "-exp_name", "ddp", "-local", "--experiment_dir",
                           str(tmp_path), "--data_dir", str(tiny["data"]), "--supervision_dir", str(tiny["identity"]),
                           "--device", "cpu", "--wandb", "disabled", "--no_progress"], tmp_path)
    single = stage1.train(cfg, tmp_path / "single", data_dir=tiny["data"], supervision_dir=tiny["identity"],
                          device="cpu", wandb_mode="disabled", progress=False)
    assert single["last_epoch"] == 2
    ckpt = read_checkpoint(tmp_path / "ddp", 2)
    assert ckpt["world_size"] == 2
    _compare(tmp_path / "ddp", tmp_path / "single", 2)


@pytest.mark.slow
def test_two_process_stage2_equals_single_process(tiny, tmp_path):
    stage1.train(identity_config("npm", nepochs=1), tmp_path / "npm_id", data_dir=tiny["data"],
                 supervision_dir=tiny["identity"], device="cpu", wandb_mode="disabled", progress=False)
    cfg = expression_config("npm", "npm_id", nepochs=2)
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    _torchrun("train_corresp.py", ["-cfg_file", str(cfg_file), "-exp_name", "ddp", "-mode", "npm",
                                   "--experiment_dir", str(tmp_path), "--data_dir", str(tiny["data"]),
                                   "--supervision_dir", str(tiny["deformation"]), "--device", "cpu",
                                   "--wandb", "disabled", "--no_progress"], tmp_path)
    stage2.train(cfg, tmp_path / "single", "npm", data_dir=tiny["data"], supervision_dir=tiny["deformation"],
                 device="cpu", wandb_mode="disabled", progress=False)
    _compare(tmp_path / "ddp", tmp_path / "single", 1)
