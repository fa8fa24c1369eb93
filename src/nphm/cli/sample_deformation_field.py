"""Deformation supervision: neutral <-> posed correspondences of every expression.

Per (subject, expression), on the face region of the two registrations (same topology):
points drawn on one mesh, moved along its face normal by N(0, sigma), and mapped to the other
mesh by the same face, barycentric coordinates and normal offset; both directions and each
sigma (release: 0.01 and 0.002). Output, one file per item:

    OUT_DIR/{subject:03d}/{expression:03d}/corresp.npy   (N, 6) float32 [x_neutral, x_posed]

(see nphm.preprocessing.storage), and the ledger OUT_DIR/ledger/ (every item's last outcome,
all runs). Several workers may prepare one OUT_DIR at once (each item is claimed first);
--shard K/N splits the subjects statically. Finished items are skipped; a failing item is reported and
the run continues; expected subjects (and scans) the disk lacks are reported as failures.
Exit code: 0 all done, 3 some items failed (the others were done), 2 usage error.

Sample counts: --preset release uses the release's 250 k points per direction and sigma, on the
face region only; --preset synthetic fewer, plus half as many on the rest of the head (the
synthetic registrations are exact everywhere, and without them nothing keeps the deformation of
the back of the head and the neck at zero; not in the release). The default picks by the
dataset's name. Explicit flags override.

Example:
    python scripts/data_processing/sample_deformation_field.py --data_dir work/dataset --workers 2
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
    p.add_argument("--out_dir", type=Path, default=paths.SUPERVISION_DEFORMATION_OPEN,
                   help="output root, SUPERVISION_DEFORMATION_OPEN (default: %(default)s)")
    add_subject_args(p)
    add_preset_arg(p)
    p.add_argument("--n_per_direction", type=int, default=None,
                   help="pairs per direction and sigma on the face region (release: 250000)")
    p.add_argument("--n_non_face_per_direction", type=int, default=None,
                   help="extra pairs per direction and sigma outside the face region (release: 0)")
    p.add_argument("--sigmas", type=float, nargs="+", default=[0.01, 0.002],
                   help="standard deviations of the normal offsets (default: %(default)s)")
    add_shard_arg(p, "subject")
    add_job_args(p, "re-sample items whose files exist")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from dataclasses import replace

    from nphm.preprocessing import PRESETS

    manager, subjects, shard = open_selection(args)
    preset = resolve_preset(manager, args.preset)
    overrides = {k: getattr(args, k) for k in ("n_per_direction", "n_non_face_per_direction") if getattr(args, k) is not None}
    settings = replace(PRESETS[preset]["deformation"], sigmas=tuple(args.sigmas), **overrides)
    return run_supervision(args, manager, subjects, shard, "deformation", settings, preset)


if __name__ == "__main__":
    sys.exit(main())
