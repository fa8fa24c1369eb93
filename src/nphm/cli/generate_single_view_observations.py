"""Render the single-view test observations (obs.npy, obs_back.npy, full_obs*.npy).

Protocol of the NPHM release (random frontal camera per test expression, plus a view from
behind for the first one; 2500 points above the neck plane), rendered by CPU ray casting.
Finished scans are skipped, a broken scan is reported (naming the file and what is wrong) and
the run continues; expected subjects and test scans the disk lacks are reported as failures.
Every scan's last outcome is kept in the ledger OUT_DIR/ledger/. Several workers may render into
one OUT_DIR at once (each scan is claimed first); --shard K/N splits the scans statically.
Exit code: 0 all done, 3 some scans failed (the others were rendered), 2 usage error.

Example:
    python scripts/data_processing/generate_single_view_observations.py --split test --seed 0
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nphm import paths
from nphm.cli.common import add_dataset_args, add_shard_arg


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
    add_shard_arg(p, "scan")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from tqdm import tqdm

    from nphm.cli.common import close_batch, count_result, report_missing, shard_of, usage_error
    from nphm.data import DataManager
    from nphm.data.expected import missing_items
    from nphm.preprocessing.observations import (
        ObservationProtocol, generate_observations, observations_folder, plan,
    )
    from nphm.utils.batch import take_shard
    from nphm.utils.ledger import describe_item

    shard = shard_of(args)
    try:
        manager = DataManager(args.data_dir, args.description, args.out_dir)
        subjects = args.subjects if args.subjects else manager.subjects(args.split)
        protocol = ObservationProtocol(n_points=args.n_points, resolution=args.resolution)
    except (OSError, ValueError) as e:
        usage_error(str(e))
    folder = observations_folder(manager)
    present = [s for s in subjects if manager.subject_dir(s).is_dir()]
    subjects = report_missing(missing_items(manager, args.subjects, args.split, use="test"), folder, subjects)
    n_items = len(take_shard(plan(manager, present)[0], shard))
    counts = {}
    results = generate_observations(manager, present, seed=args.seed, protocol=protocol,
                                    workers=args.workers, overwrite=args.overwrite, shard=shard)
    for r in tqdm(results, total=n_items, desc="single-view observations", unit="scan"):
        count_result(counts, r)
        if r.status == "failed":
            tqdm.write(f"FAILED {describe_item(r.subject, r.expression)}: {r.message}")
    return close_batch(folder, counts, subjects, "scans", args.out_dir, verb="rendered")


if __name__ == "__main__":
    sys.exit(main())
