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

PRESETS = {"release": {"n_per_direction": 250_000}, "synthetic": {"n_per_direction": 10_000}}
RELEASE_NAME = "nphm_release"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", type=Path, default=env_paths.DATA, help="dataset root (default: %(default)s)")
    p.add_argument("--description", type=Path, default=None,
                   help="dataset description JSON (default: DATA_DIR/dataset.json, else the real release's)")
    p.add_argument("--out_dir", type=Path, default=env_paths.SUPERVISION_DEFORMATION_OPEN,
                   help="output root, SUPERVISION_DEFORMATION_OPEN (default: %(default)s)")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--splits", nargs="+", choices=["train", "eval", "test", "all"], default=["train", "eval"],
                     help="subject splits to process (default: train eval, the subjects training uses)")
    who.add_argument("--subjects", type=int, nargs="+", help="explicit subject ids instead of --splits")
    p.add_argument("--preset", choices=["auto", "release", "synthetic"], default="auto",
                   help="sample counts: release values or small ones (default: by the dataset's name)")
    p.add_argument("--n_per_direction", type=int, default=None,
                   help="pairs per direction and sigma (release: 250000)")
    p.add_argument("--sigmas", type=float, nargs="+", default=[0.01, 0.002],
                   help="standard deviations of the normal offsets (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--workers", type=int, default=1, help="parallel processes (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="re-sample items whose files exist")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from tqdm import tqdm

    from nphm.data import DataManager
    from nphm.preprocessing import DeformationSettings, sample_deformation_dataset

    manager = DataManager(args.data_dir, args.description)
    preset = args.preset
    if preset == "auto":
        preset = "release" if manager.description.name == RELEASE_NAME else "synthetic"
    n = args.n_per_direction if args.n_per_direction is not None else PRESETS[preset]["n_per_direction"]
    settings = DeformationSettings(n_per_direction=n, sigmas=tuple(args.sigmas))
    if args.subjects:
        subjects = sorted(set(args.subjects))
    else:
        subjects = sorted({s for split in args.splits for s in manager.subjects(split)})
    print(f"{len(subjects)} subjects, preset {preset}: {settings}")
    counts = {"done": 0, "skipped": 0, "failed": 0}
    results = sample_deformation_dataset(manager, args.out_dir, subjects, settings, seed=args.seed,
                                         workers=args.workers, overwrite=args.overwrite)
    for subject_results in tqdm(results, total=len(subjects), desc="deformation supervision", unit="subject"):
        for r in subject_results:
            counts[r.status] += 1
            if r.status == "failed":
                where = f"subject {r.subject}" + (f" expression {r.expression}" if r.expression >= 0 else "")
                tqdm.write(f"FAILED {where}: {r.message}")
    print(f"{counts['done']} sampled, {counts['skipped']} already done, {counts['failed']} failed -> {args.out_dir}")
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
