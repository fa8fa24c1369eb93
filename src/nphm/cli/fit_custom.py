"""Fit NPHM to your own scan(s): any frame, any unit, one or several expressions.

Every --points file is one expression of the same person (.ply/.obj/.off/.stl mesh or point
cloud, .xyz/.txt text with x y z per row, .npy (N, 3) array). The scans are brought into the
model's (nphm) frame by a similarity:

  * with --landmarks (one file for all scans, or one per scan; .npy or text, (L, 3)):
    Umeyama to the model's reference landmarks. 39 landmarks = the NPHM anchors in the release's
    order (reference: the model's anchors at z = 0); 68 landmarks = the dataset's 68 landmarks
    (reference: their mean over the training subjects, needs the dataset); any other set: pass
    its nphm-frame reference with --reference_landmarks;
  * without landmarks: --units (or a guess from the size) and a multi-start ICP with scale to
    the model's mean head. Works for head scans that show the face; check overview.png and the
    *_aligned_points.ply file.

Written to --out (default FITTING_DIR/custom/<first scan name>):
  {name}_nphm.ply          fitted mesh in the nphm frame
  {name}_input_frame.ply   the fitted mesh in your scan's own frame and unit
  {name}_transform.json    the similarity input -> nphm
  {name}_aligned_points.ply, canonical_nphm.ply, lat_shape.npy, lat_expr.npy, overview.png, fitting.json

Example:
    python scripts/fitting/fit_custom.py --points me_neutral.ply me_smile.ply --units mm \\
        --cfg_file configs/fitting_nphm_cpu.yaml
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nphm import paths


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--points", type=Path, nargs="+", required=True, help="scan file(s), one per expression")
    p.add_argument("--landmarks", type=Path, nargs="+", default=[],
                   help="landmark file(s): one for all scans or one per scan (default: automatic alignment)")
    p.add_argument("--units", default="auto", choices=["auto", "mm", "cm", "m", "nphm"],
                   help="unit of the scans, used without landmarks (default: guessed from the size)")
    p.add_argument("--reference_landmarks", type=Path, default=None,
                   help="(L, 3) .npy: where your L landmarks lie on the mean head, nphm frame")
    p.add_argument("--shared_transform", action="store_true",
                   help="all scans are in one frame: estimate the alignment on the first scan only")
    p.add_argument("--neutral", action="store_true", help="fit the identity only (neutral scans, no expression model)")
    p.add_argument("--no_crop", action="store_true", help="keep points outside the model's box after alignment")
    p.add_argument("--cfg_file", type=Path, default=paths.CONFIGS / "fitting_nphm.yaml",
                   help="fitting config naming the models (default: %(default)s)")
    p.add_argument("--steps", type=int, default=None, help="override fitting.steps of the config")
    p.add_argument("--resolution", type=int, default=256, help="marching-cubes grid per axis (default: %(default)s)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: FITTING_DIR/custom/<name>)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, auto (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--experiment_dir", type=Path, default=paths.EXPERIMENT_DIR,
                   help="trained models (default: %(default)s)")
    p.add_argument("--data_dir", type=Path, default=paths.DATA,
                   help="dataset, only for the mean of 68 landmarks (default: %(default)s)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from nphm.fitting import io as fio
    from nphm.fitting.custom import load_landmark_file, run_custom_fit
    from nphm.utils.device import resolve_device

    try:
        cfg = fio.load_fitting_config(args.cfg_file)
        if args.steps is not None:
            cfg = cfg.with_steps(args.steps)
        settings = cfg.settings
        device = resolve_device(args.device)
        if args.neutral:
            cfg = cfg.replace(exp_name_expr=None)
        models = fio.load_models(cfg, device, args.experiment_dir)
        mean_68 = None
        if args.landmarks and args.reference_landmarks is None and len(load_landmark_file(args.landmarks[0])) == 68:
            from nphm.data import DataManager
            from nphm.fitting.custom import dataset_mean_landmarks

            mean_68 = dataset_mean_landmarks(DataManager(args.data_dir))
        out = args.out or Path(paths.FITTING_DIR) / "custom" / args.points[0].stem
        outputs = run_custom_fit(
            models.identity, models.deformation, args.points, out, settings, args.landmarks, args.units,
            args.reference_landmarks, mean_68, args.shared_transform, crop=not args.no_crop,
            resolution=args.resolution, seed=args.seed,
        )
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for name, path in outputs.meshes_input.items():
        print(f"{name}: {path} (input frame), {outputs.meshes_nphm[name]} (nphm frame), {outputs.transforms[name]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
