"""Experiment logs: a CSV of the losses per epoch and Weights & Biases (offline by default)."""
from __future__ import annotations

import csv
import uuid
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from nphm.utils.io import PathLike, atomic_path

WANDB_MODES = ("disabled", "offline", "online")


class LossCSV:
    """``exp_dir/losses.csv``: one row per epoch with fixed columns.

    On resume (``start_epoch`` > 0) rows of epochs ``>= start_epoch`` (written after the
    checkpoint that is resumed) are dropped, so the file matches the continued run.
    """

    def __init__(self, path: PathLike, columns: Sequence[str], start_epoch: int = 0) -> None:
        self.path = Path(path)
        self.columns = ["epoch"] + [c for c in columns if c != "epoch"]
        kept: List[Dict[str, str]] = []
        if self.path.is_file() and start_epoch > 0:
            with open(self.path, newline="") as f:
                kept = [row for row in csv.DictReader(f) if row.get("epoch", "").isdigit()
                        and int(row["epoch"]) < start_epoch]
        with atomic_path(self.path) as tmp:
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(kept)

    def write(self, row: Mapping[str, Any]) -> None:
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
            writer.writerow({k: (f"{v:.8g}" if isinstance(v, float) else v) for k, v in row.items()})


def read_loss_csv(path: PathLike) -> List[Dict[str, float]]:
    """Rows of a :class:`LossCSV` file as floats (empty cells skipped)."""
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


class WandbLogger:
    """Thin wrapper around ``wandb``; ``mode="disabled"`` logs nothing and imports nothing.

    The run id is kept in ``exp_dir/wandb_run_id.txt`` so that a resumed training continues the
    same run; offline runs are written under ``exp_dir/wandb`` (sync with ``wandb sync``).
    """

    def __init__(self, mode: str, exp_dir: PathLike, project: str, name: str, config: Mapping[str, Any]) -> None:
        if mode not in WANDB_MODES:
            raise ValueError(f"unknown wandb mode {mode!r}; expected one of {WANDB_MODES}")
        self.run = None
        if mode == "disabled":
            return
        import wandb

        exp_dir = Path(exp_dir)
        id_file = exp_dir / "wandb_run_id.txt"
        run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:12]
        if not id_file.is_file():
            with atomic_path(id_file) as tmp:
                tmp.write_text(run_id + "\n")
        self.run = wandb.init(project=project, name=name, id=run_id, resume="allow", dir=str(exp_dir),
                              config=dict(config), mode=mode)

    def log(self, values: Mapping[str, Any], step: Optional[int] = None) -> None:
        if self.run is not None:
            self.run.log(dict(values), step=step)

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
