"""Demo: fit NPHM to single-view point clouds of held-out synthetic heads, on a CPU, in minutes.

Needs nothing but this repository: the test identities of the synthetic set that the shipped
compact models (pretrained/ict_cpu/, see its README.md) were trained on are regenerated,
observed from a single frontal view (plus one view from behind), fitted with NPHM (identity +
expression latents), meshed, evaluated against the scans and reported:

    OUT/report.md            metric tables (full head, face region), pictures, settings, timings
    OUT/renders/*.png        scans above fits;  OUT/fits/*.ply  fitted meshes (nphm frame)
    OUT/fits/evaluation/     per-scan metrics and pictures

Compared with the release's protocol the demo fits fewer steps and evaluates at a lower image
resolution (flags below); an interrupted run resumes where it stopped.

Example:
    python scripts/demo.py
    python scripts/demo.py --subjects 3 --expressions 6 --step_scale 0.3 --resolution 256 --out demo_full
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nphm import paths


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder (default: %(default)s)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: %(default)s)")
    p.add_argument("--subjects", type=int, default=2, help="test identities to fit (default: %(default)s)")
    p.add_argument("--expressions", type=int, default=4,
                   help="expressions per identity: neutral closed/open, jaw open, smile, laugh, ... "
                        "(default: %(default)s)")
    p.add_argument("--step_scale", type=float, default=0.2,
                   help="fitting steps as a fraction of the release's 1000 (config: 0.3; default: %(default)s)")
    p.add_argument("--resolution", type=int, default=192,
                   help="marching-cubes grid over the fitting box (release: 256-400; default: %(default)s)")
    p.add_argument("--eval_scale", type=float, default=0.5,
                   help="evaluation image scale (release: 1.0; default: %(default)s)")
    p.add_argument("--eval_samples", type=int, default=100_000,
                   help="evaluation samples per scan (release: 250000; default: %(default)s)")
    p.add_argument("--models", type=Path, default=paths.PRETRAINED,
                   help="pretrained experiments + training_dataset.json (default: %(default)s)")
    p.add_argument("--fitting_config", type=Path, default=paths.CONFIGS / "fitting_nphm_cpu.yaml",
                   help="fitting config naming the experiments (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="redo everything (else finished steps are reused)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from nphm.evaluation.pipeline import EvalSettings
    from nphm.experiments.demo import DemoConfig, DemoFailure, run_demo

    try:
        cfg = DemoConfig(out_dir=args.out, models_dir=args.models, fitting_config=args.fitting_config,
                         n_subjects=args.subjects, n_expressions=args.expressions, step_scale=args.step_scale,
                         resolution=args.resolution,
                         evaluation=EvalSettings(n_samples=args.eval_samples, resolution_scale=args.eval_scale),
                         device=args.device, overwrite=args.overwrite)
        report, failed = run_demo(cfg), None
    except DemoFailure as e:  # some items failed; the others are in the report
        report, failed = e.report, e
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = report.read_text()
    start = text.find("## Metrics")
    print(text[start:text.find("## Pictures")].strip() if start >= 0 else "")
    print(f"\nreport: {report}")
    if failed is not None:
        print(f"FAILED: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
