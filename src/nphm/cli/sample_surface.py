"""Identity supervision: oriented surface samples of every subject's neutral-open scan.

Per subject: points sampled uniformly on the scan with interpolated vertex normals, cut at the
neck plane, split into face points (within --face_radius of the registration's face region;
all kept) and non-face points (--n_non_face kept). Output, one pair of files per subject:

    OUT_DIR/{subject:03d}/{expression}_face.npy, {expression}_non_face.npy   (N, 6) float32

(see nphm.preprocessing.storage), and the ledger OUT_DIR/ledger/ (every item's last outcome,
all runs). Several workers may prepare one OUT_DIR at once (each item is claimed first);
--shard K/N splits the subjects statically. Finished subjects are skipped; a failing subject is reported
and the run continues; expected subjects (and scans) the disk lacks are reported as failures.
Exit code: 0 all done, 3 some items failed (the others were done), 2 usage error.

Sample counts: --preset release uses the release's values (25 M samples, 1 M non-face points);
--preset synthetic small ones for the generated dataset; the default picks "release" for the
real release's description and "synthetic" otherwise. Explicit flags override the preset.

Example:
    python scripts/data_processing/sample_surface.py --data_dir work/dataset --workers 2
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nphm import paths
from nphm.cli.common import (
    add_dataset_args, add_job_args, add_preset_arg, add_shard_arg, add_subject_args, open_selection, resolve_preset,
    run_supervision,
)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataset_args(p, paths.DATA)
    p.add_argument("--out_dir", type=Path, default=paths.SUPERVISION_IDENTITY,
                   help="output root, SUPERVISION_IDENTITY (default: %(default)s)")
    add_subject_args(p)
    add_preset_arg(p)
    p.add_argument("--n_samples", type=int, default=None, help="points sampled per scan before the neck cut")
    p.add_argument("--n_non_face", type=int, default=None, help="non-face points kept per subject")
    p.add_argument("--face_radius", type=float, default=0.2,
                   help="face label: distance to the nearest face-region registration vertex, nphm units "
                        "(default: %(default)s)")
    add_shard_arg(p, "subject")
    add_job_args(p, "re-sample subjects whose files exist")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from dataclasses import replace

    from nphm.preprocessing import PRESETS

    manager, subjects, shard = open_selection(args)
    preset = resolve_preset(manager, args.preset)
    overrides = {k: getattr(args, k) for k in ("n_samples", "n_non_face") if getattr(args, k) is not None}
    settings = replace(PRESETS[preset]["identity"], face_radius=args.face_radius, **overrides)
    return run_supervision(args, manager, subjects, shard, "identity", settings, preset)


if __name__ == "__main__":
    sys.exit(main())
