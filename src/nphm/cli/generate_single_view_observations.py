"""Render the single-view test observations (obs.npy, obs_back.npy, full_obs*.npy).

Protocol of the NPHM release (random frontal camera per test expression, plus a view from
behind for the first one; 2500 points above the neck plane), rendered by CPU ray casting.
Finished scans are skipped, a broken scan is reported and the run continues.

Example:
    python scripts/data_processing/generate_single_view_observations.py --split test --seed 0
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nphm import paths
from nphm.cli.common import add_dataset_args


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataset_args(p, paths.DATA)
    p.add_argument("--out_dir", type=Path, default=paths.DATA_SINGLE_VIEW,
                   help="output root, DATA_SINGLE_VIEW (default: %(default)s)")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--split", choices=["train", "eval", "test", "all"], default="test",
                     help="subjects to render (default: %(default)s)")
    who.add_argument("--subjects", type=int, nargs="+", help="explicit subject ids instead of --split")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--n_points", type=int, default=2500, help="points kept per view (default: %(default)s)")
    p.add_argument("--resolution", type=int, default=1000,
                   help="image size in pixels; the focal length scales with it (default: %(default)s)")
    p.add_argument("--workers", type=int, default=1, help="parallel processes (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="re-render scans whose files exist")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from tqdm import tqdm

    from nphm.data import DataManager
    from nphm.preprocessing.observations import ObservationProtocol, generate_observations, plan

    manager = DataManager(args.data_dir, args.description, args.out_dir)
    subjects = args.subjects if args.subjects else manager.subjects(args.split)
    protocol = ObservationProtocol(n_points=args.n_points, resolution=args.resolution)
    n_items = len(plan(manager, subjects)[0])
    counts = {"done": 0, "skipped": 0, "failed": 0}
    results = generate_observations(manager, subjects, seed=args.seed, protocol=protocol,
                                    workers=args.workers, overwrite=args.overwrite)
    for r in tqdm(results, total=n_items, desc="single-view observations", unit="scan"):
        counts[r.status] += 1
        if r.status == "failed":
            where = f"subject {r.subject}" + (f" expression {r.expression}" if r.expression >= 0 else "")
            tqdm.write(f"FAILED {where}: {r.message}")
    print(f"{counts['done']} rendered, {counts['skipped']} already done, {counts['failed']} failed "
          f"-> {args.out_dir}")
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
