"""Command-line arguments that several scripts share (one definition each)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import List

#: ``DataManager.description.name`` of the real NPHM release (selects the release presets).
RELEASE_NAME = "nphm_release"


def add_dataset_args(p: argparse.ArgumentParser, data_dir: Path) -> None:
    """``--data_dir`` (dataset root) and ``--description`` (dataset description JSON)."""
    p.add_argument("--data_dir", type=Path, default=data_dir, help="dataset root (default: %(default)s)")
    p.add_argument("--description", type=Path, default=None,
                   help="dataset description JSON (default: DATA_DIR/dataset.json, else the real release's)")


def add_subject_args(p: argparse.ArgumentParser) -> None:
    """``--splits`` or ``--subjects`` (read back with :func:`selected_subjects`)."""
    who = p.add_mutually_exclusive_group()
    who.add_argument("--splits", nargs="+", choices=["train", "eval", "test", "all"], default=["train", "eval"],
                     help="subject splits to process (default: train eval, the subjects training uses)")
    who.add_argument("--subjects", type=int, nargs="+", help="explicit subject ids instead of --splits")


def selected_subjects(manager, args: argparse.Namespace) -> List[int]:
    """Sorted subject ids chosen by :func:`add_subject_args`'s flags."""
    if args.subjects:
        return sorted(set(args.subjects))
    return sorted({s for split in args.splits for s in manager.subjects(split)})


def add_preset_arg(p: argparse.ArgumentParser) -> None:
    """``--preset auto|release|synthetic`` (read back with :func:`resolve_preset`)."""
    p.add_argument("--preset", choices=["auto", "release", "synthetic"], default="auto",
                   help="sample counts: release values or small ones (default: by the dataset's name)")


def resolve_preset(manager, preset: str) -> str:
    """``release`` for the real release's description, ``synthetic`` otherwise (when ``auto``)."""
    if preset != "auto":
        return preset
    return "release" if manager.description.name == RELEASE_NAME else "synthetic"


def add_job_args(p: argparse.ArgumentParser, overwrite_help: str) -> None:
    """``--seed``, ``--workers`` and ``--overwrite`` of the batch jobs."""
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--workers", type=int, default=1, help="parallel processes (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help=overwrite_help)


def add_training_run_args(p: argparse.ArgumentParser, experiment_dir: Path) -> None:
    """``--experiment_dir``, ``--device``, ``--wandb``, ``--stop_after`` and ``--no_progress``."""
    p.add_argument("--experiment_dir", type=Path, default=experiment_dir,
                   help="EXPERIMENT_DIR (default: %(default)s)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: %(default)s)")
    p.add_argument("--wandb", choices=["disabled", "offline", "online"], default="offline",
                   help="Weights & Biases logging (default: %(default)s)")
    p.add_argument("--stop_after", type=int, default=None,
                   help="train at most this many epochs in this call, then checkpoint and exit")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")


def load_yaml_config(path: Path) -> dict:
    """:func:`nphm.config.load_yaml` for scripts: a missing or unreadable file ends the script
    with a message naming it (not a traceback)."""
    from nphm.config import load_yaml

    try:
        return load_yaml(path, "config file")
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(str(e)) from e


def report_item_results(results, n_subjects: int, desc: str, out_dir: Path) -> int:
    """Consume per-subject lists of item results (``status``, ``subject``, ``expression``,
    ``message``) with a progress bar, print failures and a summary; 1 if any failed, else 0."""
    from tqdm import tqdm

    counts = {"done": 0, "skipped": 0, "failed": 0}
    for subject_results in tqdm(results, total=n_subjects, desc=desc, unit="subject"):
        for r in subject_results:
            counts[r.status] += 1
            if r.status == "failed":
                where = f"subject {r.subject}" + (f" expression {r.expression}" if r.expression >= 0 else "")
                tqdm.write(f"FAILED {where}: {r.message}")
    print(f"{counts['done']} sampled, {counts['skipped']} already done, {counts['failed']} failed -> {out_dir}")
    return 1 if counts["failed"] else 0
