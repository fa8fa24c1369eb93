"""Fit NPHM to your own scan(s): any frame, any unit, one or several expressions.

Every --points file is one expression of the same person (.ply/.obj/.off/.stl mesh or point
cloud, .xyz/.txt text with x y z per row, .npy (N, 3) array). The scans are brought into the
model's (nphm) frame by a similarity:

  * with --landmarks (one file for all scans, or one per scan; .npy or text, (L, 3)):
    Umeyama to the models folder's reference landmarks (68 iBUG, 51 = the 68 without the jaw line,
    39 = the NPHM anchors in the release's order; for 68 and 51 over the nose, the eye corners and
    the top of the face contour, which expressions hardly move), then refined by the model; any
    other set: pass its nphm-frame reference with --reference_landmarks;
  * without landmarks (--alignment auto): a pose search from every orientation (upright, lying,
    facing any side): ICP to the model's mean head from 84 starts, the best candidates refined
    and ranked by the identity model; it prints how confident it is and draws
    {name}_alignment.png;
  * --alignment none: the points are already in the nphm frame (identity transform).

Size: with --units (mm, cm, m) the scale is the unit's and the alignment (and the pose refined
in the fit) only rotates and moves the scan, so the fitted head keeps its real size. Without
--units the scale is estimated; within 25 % of a unit's it is taken as that unit (the scan at
its real size, as above), else the estimate stays, which brings the head to about the model's
mean size (points at an arbitrary scale cannot tell a large head from a mean one; the fit in
your scan's own frame, {name}_input_frame.ply, still follows the scan). --size estimate always
estimates it (a scan whose unit is not calibrated).

Landmark formats (--landmark_format, default: from the number of rows): 68 iBUG, 51 (iBUG
without the jaw line), 39 NPHM anchors; their reference positions come from the models folder
(--experiment_dir/landmarks_reference.json), so no dataset is needed. After alignment, sanity
checks refuse a wrong unit or landmarks that do not fit (exit code 2, --force to fit anyway);
the alignment is then refined in the fit with the latents (--no_refine_pose to keep it fixed).
--robust (for real scans): a robust surface loss and a crop at the neck plane. --depth maps
with --intrinsics replace --points; --identity lat_shape.npy fits only the expressions, with
--sequence frame after frame (--smoothness).

Written to --out (default FITTING_DIR/custom/<first scan name>):
  {name}_nphm.ply          fitted mesh in the nphm frame
  {name}_input_frame.ply   the fitted mesh in your scan's own frame and unit
  {name}_transform.json    the similarity input -> nphm
  {name}_error.ply         the fit coloured by its distance to the scan (0-5 mm, per-vertex mm)
  overview.png             the first scan: front/side/top of scan over fit and both coloured by
                           the distance in mm ({name}_fit.png for every further scan)
  {name}_alignment.png     the aligned input over the model's mean head
  fitting.json             per scan: distances in mm (median, mean, p90, max; head and face),
                           landmark residuals, alignment and its confidence, final transform
  {name}_aligned_points.ply, canonical_nphm.ply, lat_shape.npy, lat_expr.npy

Examples (the shipped CPU models by default):
    python scripts/fitting/fit_custom.py --points me_neutral.ply me_smile.ply --units mm --robust
    python scripts/fitting/fit_custom.py --points me.ply --landmarks me_51.txt --landmark_format 51
    python scripts/fitting/fit_custom.py --depth frame.png --intrinsics 525 525 319.5 239.5 --robust
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nphm import paths


#: Points drawn from a scan per draw: a dense scan needs fewer per step than the config's
#: single-view observations (measured on the README's example, see --points_per_observation).
SCAN_POINTS_PER_DRAW = 300


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--points", type=Path, nargs="+", help="scan file(s), one per expression")
    src.add_argument("--depth", type=Path, nargs="+",
                     help="depth map(s) (.png raw units / .npy metres, z-depth), one per expression, instead of "
                          "--points: back-projected with --intrinsics into the camera frame (OpenCV: x right, "
                          "y down, z forward), in metres (so --units defaults to m)")
    p.add_argument("--intrinsics", type=float, nargs=4, metavar=("FX", "FY", "CX", "CY"), default=None,
                   help="pinhole intrinsics of the --depth maps in pixels (OpenCV: pixel (row, col) centred at "
                        "(col, row)); required with --depth")
    p.add_argument("--depth_scale", type=float, default=None,
                   help="raw depth units per metre (default: 1000 for .png, i.e. millimetres; 1 for .npy)")
    p.add_argument("--mask", type=Path, nargs="+", default=[],
                   help="mask file(s) of the --depth maps (.png/.npy, nonzero = keep): one for all or one per map")
    p.add_argument("--landmarks", type=Path, nargs="+", default=[],
                   help="landmark file(s): one for all scans or one per scan (default: automatic alignment)")
    p.add_argument("--landmark_format", default="auto", choices=["auto", "68", "51", "39"],
                   help="landmark set: 68 iBUG, 51 (iBUG without the jaw line), 39 NPHM anchors; auto: from the "
                        "number of rows (default: %(default)s). The reference comes from the models folder's "
                        "landmarks_reference.json (--experiment_dir), else the dataset's mean (68/51)")
    p.add_argument("--units", default="auto", choices=["auto", "mm", "cm", "m", "nphm"],
                   help="unit of the scans: the scale of the alignment (the head keeps its real size), checked "
                        "against the landmarks' scale with them (default: guessed from the size; m for --depth)")
    p.add_argument("--size", default="auto", choices=["auto", "unit", "estimate"],
                   help="scale of the alignment: unit (the declared --units: real size), estimate (from the "
                        "landmarks or the pose search: the mean head's size); auto: the declared unit, else the "
                        "unit guessed from the estimate when it lies within 25%% of one (default: %(default)s)")
    p.add_argument("--reference_landmarks", type=Path, default=None,
                   help="(L, 3) .npy: where your L landmarks lie on the mean head, nphm frame (overrides the "
                        "models folder's reference)")
    p.add_argument("--alignment", default=None, choices=["auto", "landmarks", "none"],
                   help="landmarks: Umeyama to the reference; auto: unit + multi-start ICP to the mean head; "
                        "none: the points are already in the nphm frame (identity transform) "
                        "(default: landmarks with --landmarks, else auto)")
    pose = p.add_mutually_exclusive_group()
    pose.add_argument("--refine_pose", dest="refine_pose", action="store_true", default=None,
                      help="refine the alignment in the fit, jointly with the latents (default: on unless "
                           "--alignment none); the refined transform is written to {name}_transform.json")
    pose.add_argument("--no_refine_pose", dest="refine_pose", action="store_false",
                      help="keep the alignment fixed during the fit (the behaviour before pose refinement)")
    p.add_argument("--robust", action="store_true",
                   help="for real scans: Geman-McClure surface loss (scale 0.03 nphm units = 7.5 mm, shrunk to "
                        "0.01 from release step 250) that ignores points far from the head, and crop at the "
                        "model's neck plane besides the box (unless --no_crop)")
    p.add_argument("--force", action="store_true",
                   help="fit even when the sanity checks after alignment refuse it (wrong unit, landmarks that "
                        "do not fit): the refusals become warnings")
    p.add_argument("--identity", type=Path, default=None,
                   help="lat_shape.npy of an earlier fit of this person: fit only the expression latents")
    p.add_argument("--sequence", action="store_true",
                   help="the scans are ordered frames: fit them one after the other, each starting from the "
                        "previous (needs --identity)")
    p.add_argument("--smoothness", type=float, default=0.0,
                   help="with --sequence: weight of |z_t - z_(t-1)|^2 (default: %(default)s)")
    p.add_argument("--shared_transform", action="store_true",
                   help="all scans are in one frame: estimate the alignment on the first scan only")
    p.add_argument("--neutral", action="store_true", help="fit the identity only (neutral scans, no expression model)")
    p.add_argument("--no_crop", action="store_true", help="keep points outside the model's box after alignment")
    p.add_argument("--cfg_file", type=Path, default=paths.CONFIGS / "fitting_nphm_cpu.yaml",
                   help="fitting config naming the models (default: %(default)s, the shipped CPU models; "
                        "configs/fitting_nphm.yaml with --experiment_dir for the official ones)")
    p.add_argument("--steps", type=int, default=None, help="override fitting.steps of the config (release steps)")
    p.add_argument("--step_scale", type=float, default=None,
                   help="override fitting.step_scale: the fit runs int(steps * step_scale) optimisation steps over "
                        "the whole schedule (the CPU config: 1000 x 0.3 = 300; 0.15 halves the fitting time)")
    p.add_argument("--points_per_observation", type=int, default=SCAN_POINTS_PER_DRAW,
                   help="points drawn from a scan each time a step draws it (each step draws the config's "
                        "observations_per_step scans, with replacement; default: %(default)s; the CPU config's 500 "
                        "fitted the README's 50k-point scan no closer, in 40 %% more time)")
    p.add_argument("--exact_jacobians", action="store_true",
                   help="exact Jacobians of the deformation at the roots (default: the tested approximate ones, "
                        "Broyden's last estimate in the implicit step and bfloat16 tangents: the same fit on the "
                        "README's scan, about 17 %% faster)")
    p.add_argument("--resolution", type=int, default=256, help="marching-cubes grid per axis (default: %(default)s)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: FITTING_DIR/custom/<name>)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, auto (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--experiment_dir", type=Path, default=paths.PRETRAINED,
                   help="trained models and their landmarks_reference.json (default: %(default)s, the "
                        "shipped models)")
    p.add_argument("--data_dir", type=Path, default=paths.DATA,
                   help="dataset, only for the mean of 68 landmarks when the models folder has no reference "
                        "(default: %(default)s)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.depth and args.intrinsics is None:
        print("error: --depth needs --intrinsics FX FY CX CY", file=sys.stderr)
        return 2
    if not args.depth and (args.intrinsics is not None or args.mask or args.depth_scale is not None):
        print("error: --intrinsics, --depth_scale and --mask go with --depth", file=sys.stderr)
        return 2
    if args.sequence and args.identity is None:
        print("error: --sequence needs --identity (fit a neutral scan first, then pass its lat_shape.npy)",
              file=sys.stderr)
        return 2
    if args.identity is not None and args.neutral:
        print("error: --identity fits expressions: it cannot go with --neutral", file=sys.stderr)
        return 2
    import numpy as np

    from nphm.fitting import io as fio
    from nphm.fitting.custom import robust_settings, run_custom_fit
    from nphm.fitting.landmarks import read_landmark_array, reference_path
    from nphm.utils.device import resolve_device

    try:
        cfg = fitting_config(args)
        settings = cfg.settings
        if args.robust:
            settings = robust_settings(settings)
        device = resolve_device(args.device)
        if args.neutral:
            cfg = cfg.replace(exp_name_expr=None)
        models = fio.load_models(cfg, device, args.experiment_dir)
        z_id = None
        if args.identity is not None:
            if not args.identity.is_file():
                raise FileNotFoundError(f"identity latent not found: {args.identity}")
            z_id = np.load(args.identity, allow_pickle=False).reshape(-1)
            if z_id.size != models.identity.lat_dim:
                raise ValueError(f"{args.identity}: {z_id.size} values, the identity model's latent has "
                                 f"{models.identity.lat_dim}")
        mean_68 = None
        if (args.landmarks and args.reference_landmarks is None and not reference_path(args.experiment_dir).is_file()
                and len(read_landmark_array(args.landmarks[0])) in (68, 51)):
            from nphm.data import DataManager
            from nphm.fitting.custom import dataset_mean_landmarks

            mean_68 = dataset_mean_landmarks(DataManager(args.data_dir))
        clouds, units = None, args.units
        if args.depth:
            from nphm.fitting.depth import POINTS_UNIT, Intrinsics, load_depth_frames

            frames = load_depth_frames(args.depth, Intrinsics(*args.intrinsics), args.depth_scale, args.mask)
            clouds = [(f.name, f.source, f.points) for f in frames]
            units = POINTS_UNIT if units == "auto" else units
        neck = None
        if args.robust and not args.no_crop:
            from nphm.fitting.crop import neck_plane_for

            neck = neck_plane_for(models.identity)
        first = (args.depth or args.points)[0]
        out = args.out or Path(paths.FITTING_DIR) / "custom" / first.stem
        outputs = run_custom_fit(
            models.identity, models.deformation, args.points or [], out, settings, args.landmarks, units,
            args.reference_landmarks, mean_68, args.shared_transform, crop=not args.no_crop,
            resolution=args.resolution, seed=args.seed, clouds=clouds, landmark_format=args.landmark_format,
            models_dir=args.experiment_dir, alignment=args.alignment, refine_pose=args.refine_pose,
            neck_plane=neck, checks=True, force=args.force, identity_latent=z_id, sequence=args.sequence,
            smoothness=args.smoothness, log=print, size=args.size,
        )
    except (FileNotFoundError, ValueError) as e:  # AlignmentCheckError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    for name, path in outputs.meshes_input.items():
        report = outputs.reports[name]
        print(f"{name}: {distance_line(report)}")
        print(f"{name}: {path} (input frame), {outputs.meshes_nphm[name]} (nphm frame), {outputs.transforms[name]}")
    phases = ", ".join(f"{k} {v:.1f} s" for k, v in outputs.seconds.items())
    print(f"time: {phases}")
    print(f"pictures and fitting.json in {outputs.out_dir}")
    return 0


def fitting_config(args: argparse.Namespace):
    """The fitting config of ``--cfg_file`` with the command line's changes (steps, points per
    draw, Jacobians); raises ValueError for a bad value."""
    from nphm.fitting import io as fio

    cfg = fio.load_fitting_config(args.cfg_file)
    if args.steps is not None:
        cfg = cfg.with_steps(args.steps)
    if args.step_scale is not None:
        cfg = cfg.with_settings(step_scale=args.step_scale)
    if args.points_per_observation < 1:
        raise ValueError(f"--points_per_observation must be >= 1, got {args.points_per_observation}")
    cfg = cfg.with_settings(points_per_observation=args.points_per_observation)
    if not args.exact_jacobians:
        cfg = cfg.with_settings(broyden=cfg.settings.broyden.approximate())
    return cfg


def distance_line(report: dict) -> str:
    """One line of a scan's distances to the fit (mm) from its :func:`nphm.fitting.report.fit_report`."""
    d = report["distances_mm"]
    parts = [f"{region} median {d[region]['median']:.2f} / p90 {d[region]['p90']:.2f} mm"
             for region in ("face", "head") if d.get(region)]
    line = "scan to fit: " + ", ".join(parts)
    if "landmark_residuals_mm" in report:
        line += f"; landmarks {report['landmark_residuals_mm']['mean']:.2f} mm mean"
    return line


if __name__ == "__main__":
    sys.exit(main())
