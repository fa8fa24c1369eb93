"""Deformation supervision: neutral <-> posed correspondences of every expression.

Per (subject, expression), on the face region of the two registrations (same topology):
points drawn on one mesh, moved along its face normal by N(0, sigma), and mapped to the other
mesh by the same face, barycentric coordinates and normal offset; both directions and each
sigma (release: 0.01 and 0.002). Output, one file per item:

    OUT_DIR/{subject:03d}/{expression:03d}/corresp.npy   (N, 6) float32 [x_neutral, x_posed]

(see nphm.preprocessing.storage). Finished items are skipped; a failing item is reported and
the run continues.

Sample counts: --preset release uses the release's 250 k points per direction and sigma;
--preset synthetic fewer; the default picks by the dataset's name. Explicit flags override.

Example:
    python scripts/data_processing/sample_deformation_field.py --data_dir work/dataset --workers 2
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import env_paths  # noqa: E402
from nphm.utils.cli import (  # noqa: E402
    add_dataset_args, add_job_args, add_preset_arg, add_subject_args, report_item_results, resolve_preset,
    selected_subjects,
)

PRESETS = {"release": {"n_per_direction": 250_000}, "synthetic": {"n_per_direction": 10_000}}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataset_args(p, env_paths.DATA)
    p.add_argument("--out_dir", type=Path, default=env_paths.SUPERVISION_DEFORMATION_OPEN,
                   help="output root, SUPERVISION_DEFORMATION_OPEN (default: %(default)s)")
    add_subject_args(p)
    add_preset_arg(p)
    p.add_argument("--n_per_direction", type=int, default=None,
                   help="pairs per direction and sigma (release: 250000)")
    p.add_argument("--sigmas", type=float, nargs="+", default=[0.01, 0.002],
                   help="standard deviations of the normal offsets (default: %(default)s)")
    add_job_args(p, "re-sample items whose files exist")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from nphm.data import DataManager
    from nphm.preprocessing import DeformationSettings, sample_deformation_dataset

    manager = DataManager(args.data_dir, args.description)
    preset = resolve_preset(manager, args.preset)
    n = args.n_per_direction if args.n_per_direction is not None else PRESETS[preset]["n_per_direction"]
    settings = DeformationSettings(n_per_direction=n, sigmas=tuple(args.sigmas))
    subjects = selected_subjects(manager, args)
    print(f"{len(subjects)} subjects, preset {preset}: {settings}")
    results = sample_deformation_dataset(manager, args.out_dir, subjects, settings, seed=args.seed,
                                         workers=args.workers, overwrite=args.overwrite)
    return report_item_results(results, len(subjects), "deformation supervision", args.out_dir)


if __name__ == "__main__":
    sys.exit(main())
