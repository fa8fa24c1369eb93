"""Quality benchmark: NPHM vs NPM vs a linear (PCA) morphable model on held-out synthetic heads.

Generates the synthetic set if DATA has none (30 subjects x 8 expressions, seed 1: the set the
CPU models are trained on), reuses the experiments named by configs/fitting_{nphm,npm}_cpu.yaml
or trains the missing ones with the CPU configs (--train), fits every test scan from its
single-view point cloud (release protocol with the CPU fitting configs; closest-point least
squares for the linear model), evaluates full head and face region, and writes
OUT/quality.md (tables like the release README's), OUT/quality.json and OUT/pictures/.
Finished fits and evaluations are reused when the command is run again.

Examples:
    python scripts/benchmark/quality.py                      # full run (< 1 h on 2 cores with trained models)
    python scripts/benchmark/quality.py --quick              # 2 subjects x 4 expressions, fewer steps (~10 min)
    python scripts/benchmark/quality.py --quick --experiment_dir pretrained/ict_cpu --train never
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nphm import paths

#: --quick: fewer subjects and scans, fewer fitting steps, coarser meshes, cheaper evaluation
QUICK = {"max_subjects": 2, "max_expressions": 4, "step_scale": 0.2, "resolution": 192, "eval_scale": 0.5,
         "eval_samples": 100_000}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: WORK_DIR/benchmarks/quality, or quality_quick with --quick)")
    p.add_argument("--quick", action="store_true",
                   help=f"small run: {QUICK['max_subjects']} subjects x {QUICK['max_expressions']} expressions, "
                        f"step scale {QUICK['step_scale']}, resolution {QUICK['resolution']}, "
                        f"evaluation at image scale {QUICK['eval_scale']} with {QUICK['eval_samples']} samples "
                        "(explicit flags below win)")
    p.add_argument("--methods", nargs="+", choices=["npm", "nphm", "pca"], default=["npm", "nphm", "pca"],
                   help="methods to compare (default: all)")
    p.add_argument("--train", choices=["missing", "resume", "never"], default="missing",
                   help="missing: train experiments without checkpoints (default); resume: also finish "
                        "incomplete ones; never: leave out methods without trained models")
    p.add_argument("--subjects", type=int, nargs="+", default=None, help="test subjects (default: the test split)")
    p.add_argument("--max_subjects", type=int, default=None, help="only the first N test subjects")
    p.add_argument("--max_expressions", type=int, default=None, help="only the first N expressions per subject")
    p.add_argument("--step_scale", type=float, default=None,
                   help="override fitting.step_scale of the fitting configs (default: the configs' 0.3)")
    p.add_argument("--resolution", type=int, default=None, help="marching-cubes grid of neural fits (default 256)")
    p.add_argument("--eval_scale", type=float, default=None, help="evaluation image scale (default 1.0: release)")
    p.add_argument("--eval_samples", type=int, default=None, help="evaluation samples (default 250000: release)")
    p.add_argument("--pca_iterations", type=int, default=None,
                   help="closest-point iterations of the linear fit (default 10)")
    p.add_argument("--pca_components", type=int, nargs=2, default=[-1, 50], metavar=("N_ID", "N_EX"),
                   help="maximum identity / expression components, -1 = all (default: -1 50)")
    p.add_argument("--pictures", type=int, default=4, help="scans drawn with every method's fit (default 4)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: %(default)s)")
    p.add_argument("--workers", type=int, default=1, help="processes for data generation (default 1)")
    p.add_argument("--source", choices=["procedural", "ict"], default="ict",
                   help="heads generated when --data_dir has no dataset (default: ict, the heads the shipped "
                        "models of pretrained/ict_cpu were trained on; procedural for pretrained/synthetic_cpu)")
    p.add_argument("--overwrite", action="store_true", help="redo fits and evaluations that exist")
    p.add_argument("--data_dir", type=Path, default=paths.DATA, help="dataset (default: %(default)s)")
    p.add_argument("--single_view_dir", type=Path, default=paths.DATA_SINGLE_VIEW,
                   help="single-view observations (default: %(default)s)")
    p.add_argument("--experiment_dir", type=Path, default=paths.EXPERIMENT_DIR,
                   help="trained experiments (default: %(default)s)")
    p.add_argument("--supervision_identity", type=Path, default=paths.SUPERVISION_IDENTITY,
                   help="identity supervision, used when training (default: %(default)s)")
    p.add_argument("--supervision_deformation", type=Path, default=paths.SUPERVISION_DEFORMATION_OPEN,
                   help="deformation supervision, used when training (default: %(default)s)")
    p.add_argument("--config_dir", type=Path, default=paths.CONFIGS,
                   help="training and fitting configs (default: %(default)s)")
    return p.parse_args(argv)


def _pick(value, quick_key: str, quick: bool, default):
    if value is not None:
        return value
    return QUICK[quick_key] if quick else default


def main(argv=None) -> int:
    args = parse_args(argv)
    from nphm.baselines.pca import PCAFitSettings
    from nphm.experiments.quality import QualityConfig, metric_table, run_quality
    from nphm.evaluation.pipeline import EvalSettings

    out = args.out or paths.WORK_DIR / "benchmarks" / ("quality_quick" if args.quick else "quality")
    n_id, n_ex = (None if n < 0 else n for n in args.pca_components)
    try:
        cfg = QualityConfig(
            out_dir=out, data_dir=args.data_dir, single_view_dir=args.single_view_dir,
            experiment_dir=args.experiment_dir, supervision_identity=args.supervision_identity,
            supervision_deformation=args.supervision_deformation, config_dir=args.config_dir,
            methods=tuple(args.methods), subjects=args.subjects,
            max_subjects=_pick(args.max_subjects, "max_subjects", args.quick, None),
            max_expressions=_pick(args.max_expressions, "max_expressions", args.quick, None),
            step_scale=_pick(args.step_scale, "step_scale", args.quick, None),
            resolution=_pick(args.resolution, "resolution", args.quick, 256),
            evaluation=EvalSettings(n_samples=_pick(args.eval_samples, "eval_samples", args.quick, 250_000),
                                    resolution_scale=_pick(args.eval_scale, "eval_scale", args.quick, 1.0)),
            pca=PCAFitSettings(iterations=args.pca_iterations if args.pca_iterations is not None else 10),
            pca_components=(n_id, n_ex), train=args.train, device=args.device, workers=args.workers,
            dataset_source=args.source,
            pictures=args.pictures, overwrite=args.overwrite)
        path, results = run_quality(cfg)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\nFull head\n" + metric_table(results, "head"))
    print("\nFace region\n" + metric_table(results, "face"))
    print(f"\nreport: {path}")
    return 0 if any(r.totals for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
