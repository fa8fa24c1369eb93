"""Evaluate reconstructions against the dataset's scans (the NPHM protocol, CPU only).

Reads RESULTS_DIR/{subject}_{expression}.ply (or {subject}_{expression}_fine.ply) for every
test expression of the split's subjects and writes, per scan,

    RESULTS_DIR/evaluation/{subject}/expression_{expression}/metrics.json       whole head
                                                            /metrics_face.json  face region
                                                            /report.png         pictures

plus the ledger RESULTS_DIR/evaluation/ledger/ (every scan's last outcome over all runs) and
RESULTS_DIR/evaluation/failures.json (its failures). Finished scans are skipped (--overwrite to
redo); a missing or broken prediction or ground truth is reported, naming the file, and the run
continues; scans the dataset description expects but the disk lacks are failures, predictions
without ground truth are reported. Ground-truth samples are cached per scan (--gt_cache_dir).
Then run gather.py for the totals and the summary page.

Several workers may evaluate one folder at once (each scan is claimed first); --shard K/N
splits the scans statically. Exit code: 0 all scans evaluated, 3 some failed (the others were
evaluated), 2 usage or configuration error.

Example:
    python scripts/evaluation/eval.py --results_dir work/fitting/forward_nphm/test
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nphm import paths
from nphm.cli.common import add_dataset_args, add_shard_arg


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results_dir", type=Path, required=True, help="folder with the reconstructed meshes")
    add_dataset_args(p, paths.DATA)
    p.add_argument("--single_view_dir", type=Path, default=paths.DATA_SINGLE_VIEW,
                   help="single-view observations, shown in the pictures (default: %(default)s)")
    p.add_argument("--split", default="test", choices=["train", "eval", "test", "all"],
                   help="subjects to evaluate (default: %(default)s)")
    p.add_argument("--subjects", type=int, nargs="+", default=None, help="only these subjects")
    p.add_argument("--n_samples", type=int, default=250_000,
                   help="random samples per mesh, for head and face each (default: %(default)s)")
    p.add_argument("--n_views", type=int, default=10, help="cameras of the render-based sampling (default: %(default)s)")
    p.add_argument("--resolution_scale", type=float, default=1.0,
                   help="scale of the 960x1280 images; < 1 for quick, coarser runs (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the sampling (default: %(default)s)")
    p.add_argument("--gt_cache_dir", type=Path, default=None,
                   help="cache of ground-truth samples (default: RESULTS_DIR/evaluation/gt_cache); "
                        "share it between result folders of the same dataset")
    p.add_argument("--overwrite", action="store_true", help="re-evaluate scans that already have metrics")
    p.add_argument("--no_figures", action="store_true", help="do not write the per-scan report.png")
    add_shard_arg(p, "scan")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from nphm.cli.common import close_batch, shard_of, usage_error
    from nphm.data import DataManager
    from nphm.evaluation import EvalSettings, evaluate_results_dir
    from nphm.evaluation.pipeline import evaluation_folder

    shard = shard_of(args)
    if not args.results_dir.is_dir():
        usage_error(f"results folder not found: {args.results_dir}")
    try:
        manager = DataManager(args.data_dir, args.description, args.single_view_dir)
        subjects = args.subjects if args.subjects else manager.subjects(args.split)
    except (OSError, ValueError) as e:
        usage_error(str(e))
    settings = EvalSettings(n_samples=args.n_samples, n_views=args.n_views,
                            resolution_scale=args.resolution_scale, seed=args.seed)
    summary = evaluate_results_dir(
        args.results_dir, manager, settings, subjects=args.subjects, split=args.split,
        cache_dir=args.gt_cache_dir, overwrite=args.overwrite, figures=not args.no_figures, shard=shard,
    )
    counts = {"done": len(summary.evaluated), "skipped": len(summary.skipped), "elsewhere": len(summary.elsewhere),
              "failed": len(summary.failed)}
    print(f"evaluated {len(summary.evaluated)}, skipped {len(summary.skipped)} already evaluated, "
          f"failed {len(summary.failed)} (see {args.results_dir / 'evaluation' / 'failures.json'})")
    wanted = sorted(set(subjects) | {int(f["subject"]) for f in summary.failed})  # with missing subjects
    return close_batch(evaluation_folder(args.results_dir), counts, wanted, "scans", args.results_dir / "evaluation",
                       verb="evaluated")


if __name__ == "__main__":
    sys.exit(main())
