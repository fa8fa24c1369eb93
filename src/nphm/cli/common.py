"""Command-line arguments that several scripts share (one definition each)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Dict, Iterable, List, Optional

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


def missing_selected(manager, args: argparse.Namespace, use: str):
    """:func:`nphm.data.expected.missing_items` of the subjects chosen by :func:`add_subject_args`'s flags."""
    from nphm.data.expected import missing_items

    if args.subjects:
        return missing_items(manager, args.subjects, use=use)
    found = {}
    for split in args.splits:
        for m in missing_items(manager, None, split, use=use):
            found[(m.subject, m.expression)] = m
    return [found[k] for k in sorted(found)]


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


def add_shard_arg(p: argparse.ArgumentParser, unit: str) -> None:
    """``--shard K/N`` (read back with :func:`shard_of`)."""
    p.add_argument("--shard", default=None, metavar="K/N",
                   help=f"do only every N-th {unit} starting at the K-th (0 <= K < N), e.g. a job array's "
                        "task id / task count; workers on one folder also share the rest by claiming each "
                        f"{unit} (default: all)")


def shard_of(args: argparse.Namespace):
    """``(K, N)`` of ``--shard`` (None when absent); a malformed value ends the script with
    the usage exit code."""
    from nphm.utils.batch import parse_shard

    if getattr(args, "shard", None) is None:
        return None
    try:
        return parse_shard(args.shard)
    except ValueError as e:
        usage_error(str(e))


def usage_error(message: str):
    """End a script with ``error: message`` on stderr and :data:`nphm.utils.batch.EXIT_USAGE`."""
    import sys

    from nphm.utils.batch import EXIT_USAGE

    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_USAGE)


def close_batch(folder, counts: Dict[str, int], subjects: Optional[Iterable[int]], what: str, out_dir: Path,
                verb: str = "done") -> int:
    """The closing summary of a batch script: this run's ``counts`` ("done", "skipped",
    "elsewhere" = left to another worker, "failed"), then the ledger of ``folder`` (a
    :class:`nphm.utils.batch.BatchFolder`) over ``subjects``: its totals over all runs and every
    item that is still failed, with the culprit. Returns the exit code (failures in the ledger:
    :data:`nphm.utils.batch.EXIT_ITEMS_FAILED`)."""
    ledger = folder.ledger.counts(subjects)
    failed = folder.ledger.with_status("failed", subjects)
    skipped = folder.ledger.with_status("skipped", subjects)
    print(f"this run: {counts.get('done', 0)} {verb}, {counts.get('skipped', 0)} already done, "
          f"{counts.get('elsewhere', 0)} left to other workers, {counts.get('failed', 0)} failed -> {out_dir}")
    print(f"ledger {folder.ledger.folder} (all runs): {ledger['done']} {what} done, {ledger['failed']} failed, "
          f"{ledger['skipped']} skipped")
    for entry in failed:
        print(f"  failed  {entry.line()}")
    for entry in skipped:
        print(f"  skipped {entry.line()}")
    return folder.exit_code(subjects)


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


def open_selection(args: argparse.Namespace):
    """``(manager, subjects, shard)`` of a preparation script (:func:`add_dataset_args`,
    :func:`add_subject_args`, :func:`add_shard_arg`); a bad dataset or flag ends the script
    with the usage exit code."""
    from nphm.data import DataManager

    shard = shard_of(args)
    try:
        manager = DataManager(args.data_dir, args.description)
        return manager, selected_subjects(manager, args), shard
    except (OSError, ValueError) as e:
        usage_error(str(e))


def run_supervision(args: argparse.Namespace, manager, subjects, shard, kind: str, settings, preset: str) -> int:
    """Sample the ``kind`` ("identity" or "deformation") supervision of ``subjects`` into
    ``args.out_dir``: missing subjects/scans reported, the batch run, the closing summary;
    returns the exit code."""
    from nphm.preprocessing import jobs

    folder = jobs.identity_folder(args.out_dir) if kind == "identity" else jobs.deformation_folder(args.out_dir)
    missing = missing_selected(manager, args, "subjects" if kind == "identity" else "all")
    present = [s for s in subjects if manager.subject_dir(s).is_dir()]
    subjects = report_missing(missing, folder, subjects)
    print(f"{len(present)} subjects, preset {preset}: {settings}")
    run = jobs.sample_identity_dataset if kind == "identity" else jobs.sample_deformation_dataset
    results = run(manager, args.out_dir, present, settings, seed=args.seed, workers=args.workers,
                  overwrite=args.overwrite, shard=shard)
    return report_item_results(results, len(present), f"{kind} supervision", folder, subjects, args.out_dir)


def report_item_results(results, n_subjects: int, desc: str, folder, subjects, out_dir: Path,
                        verb: str = "sampled") -> int:
    """Consume per-subject lists of item results (``status``, ``subject``, ``expression``,
    ``message``) with a progress bar, print failures and the closing summary
    (:func:`close_batch`); returns the exit code."""
    from tqdm import tqdm

    from nphm.utils.ledger import describe_item

    counts = {"done": 0, "skipped": 0, "elsewhere": 0, "failed": 0}
    for subject_results in tqdm(results, total=n_subjects, desc=desc, unit="subject"):
        for r in subject_results:
            counts[_count_key(r)] += 1
            if r.status == "failed":
                tqdm.write(f"FAILED {describe_item(r.subject, r.expression)}: {r.message}")
    return close_batch(folder, counts, subjects, desc, out_dir, verb)


def _count_key(r) -> str:
    from nphm.utils.batch import left_to_another_worker

    return "elsewhere" if left_to_another_worker(r) else r.status


def count_result(counts: Dict[str, int], r) -> None:
    """Count one item result into ``counts`` (the keys of :func:`close_batch`)."""
    key = _count_key(r)
    counts[key] = counts.get(key, 0) + 1


def report_missing(missing, folder, subjects) -> list:
    """Print the expected subjects/scans missing on disk and record them in ``folder``'s ledger
    (:meth:`nphm.utils.batch.BatchFolder.record_missing`); returns ``subjects`` plus the missing
    subjects (the subjects whose ledger entries the closing summary reads)."""
    from nphm.utils.ledger import describe_item

    for m in missing:
        print(f"MISSING {describe_item(m.subject, m.expression)}: {m.message}")
    folder.record_missing(missing, subjects)
    return sorted(set(subjects) | {m.subject for m in missing})
