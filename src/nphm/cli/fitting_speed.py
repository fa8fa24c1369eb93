"""Fitting speed: one joint fitting step, straightforward (release-style) vs ours, and a whole fit.

1. One step at release sizes with random weights (NPHM identity 40 x (4 x 200), deformation
   6 x 512; 5 observations x 1000 points), the straightforward implementation (per-point latent
   copies, all ensemble members, Broyden over all points, backward-mode Jacobians, parameters
   requiring grad) vs ours, in the same process on the same draws; also checks that both give the
   same loss and latent gradients.
2. A whole fit of the same person (8 expressions) from zero latents with the release's schedule
   (--whole_fit_steps, default 1000; fewer compress the schedule) and 256^3 meshes of every
   expression: the straightforward release-style loop (fit only), ours (default) and ours with
   the approximate Jacobians (Broyden's estimate in the implicit step, bf16 tangents), on the
   same draws; prints minutes, speed-ups, the final loss of each fit (evaluated the exact way)
   and how far the roots under each fit's latents lie from the straightforward fit's.
   --whole_fit_variants chooses the fits (drop "straightforward" to save an hour at 1000 steps).
3. With --cfg_file (e.g. configs/fitting_nphm_cpu.yaml): the same comparison with that config's
   trained models on a test subject's observations (mid-fit latents), and a whole default fit of
   that subject with the config's settings (minutes per subject).

Example:
    python scripts/benchmark/fitting_speed.py --device cpu --cfg_file configs/fitting_nphm_cpu.yaml
"""
import argparse
import json
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from nphm import paths


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, auto (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="timed repetitions of each step (best counts)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--clamp_step", type=int, default=0,
                   help="release step whose SDF clamp and loss weights the timed step uses (default: %(default)s)")
    p.add_argument("--warm_steps", type=int, default=20,
                   help="random weights: fitting steps run from the true latents before the timed step "
                        "(default: %(default)s)")
    p.add_argument("--warm_steps_trained", type=int, default=100,
                   help="trained models (--cfg_file): fitting steps run from zero latents before the timed "
                        "step (default: %(default)s)")
    p.add_argument("--no_step", action="store_true", help="skip the single-step comparison")
    p.add_argument("--whole_fit_steps", type=int, default=1000,
                   help="steps of the release-size whole fit; 0 skips it (default: %(default)s)")
    p.add_argument("--whole_fit_resolution", type=int, default=256,
                   help="marching cubes resolution of the release-size whole fit (default: %(default)s)")
    p.add_argument("--whole_fit_variants", nargs="+", default=["straightforward", "ours", "ours_fast"],
                   choices=["straightforward", "ours", "ours_fast"],
                   help="fits of the whole-fit comparison; the first is the reference (default: all)")
    p.add_argument("--cfg_file", type=Path, default=None, help="also time a whole fit with this fitting config")
    p.add_argument("--subject", type=int, default=None, help="subject of the whole fit (default: first test subject)")
    p.add_argument("--steps", type=int, default=None, help="override fitting.steps for the whole fit")
    p.add_argument("--resolution", type=int, default=256, help="marching cubes resolution of the whole fit")
    p.add_argument("--data_dir", type=Path, default=paths.DATA, help="dataset root (default: %(default)s)")
    p.add_argument("--single_view_dir", type=Path, default=paths.DATA_SINGLE_VIEW,
                   help="single-view observations (default: %(default)s)")
    p.add_argument("--experiment_dir", type=Path, default=paths.EXPERIMENT_DIR,
                   help="trained models (default: %(default)s)")
    p.add_argument("--out", type=Path, default=paths.WORK_DIR / "benchmarks" / "fitting_speed.json",
                   help="results as JSON (default: %(default)s)")
    args = p.parse_args(argv)

    import torch

    from nphm.experiments.fitting_speed import (
        StepBenchmarkSettings,
        WholeFitSettings,
        compare_step_on_subject,
        format_step_results,
        format_whole_fit,
        release_size_setup,
        run_step_benchmark,
        run_whole_fit,
        time_subject_fit,
    )
    from nphm.experiments.timing import peak_memory_mb
    from nphm.utils.device import resolve_device
    from nphm.utils.io import save_json

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    report = {"device": str(device), "threads": torch.get_num_threads()}
    if not args.no_step:
        settings = StepBenchmarkSettings(repeats=args.repeats, clamp_step=args.clamp_step,
                                         warm_steps=args.warm_steps)
        cache = args.out.parent / f"speed_network_{device.type}.pt"
        result = run_step_benchmark(settings, device, cache=cache)
        print(format_step_results(result), flush=True)
        report["step"] = asdict(result)
    if args.whole_fit_steps > 0:
        cache = args.out.parent / f"speed_network_{device.type}.pt"
        setup = release_size_setup(StepBenchmarkSettings(), device, cache=cache)
        whole_settings = WholeFitSettings(steps=args.whole_fit_steps, resolution=args.whole_fit_resolution,
                                          variants=tuple(args.whole_fit_variants))
        whole_release = run_whole_fit(whole_settings, setup, device)
        print("\n" + format_whole_fit(whole_release), flush=True)
        report["whole_fit_release_size"] = whole_release
    if args.cfg_file is not None:
        try:
            trained = compare_step_on_subject(args.cfg_file, args.subject, device, repeats=args.repeats,
                                              warm_steps=args.warm_steps_trained,
                                              data_dir=args.data_dir, single_view_dir=args.single_view_dir,
                                              experiment_dir=args.experiment_dir)
            print("\n" + format_step_results(trained))
            report["step_trained_models"] = asdict(trained)
        except (FileNotFoundError, ValueError) as e:
            print(f"step comparison with trained models skipped: {e}", file=sys.stderr)
        with tempfile.TemporaryDirectory() as tmp:
            try:
                whole = time_subject_fit(args.cfg_file, args.subject, device, Path(tmp), args.data_dir,
                                         args.single_view_dir, args.experiment_dir, steps=args.steps,
                                         resolution=args.resolution)
            except (FileNotFoundError, ValueError) as e:
                print(f"whole fit skipped: {e}", file=sys.stderr)
                whole = {"skipped": str(e)}
        if "minutes_fit" in whole:
            print(f"\nWhole fit ({whole['config']}, subject {whole['subject']}, {whole['expressions']} expressions, "
                  f"{whole['steps']} steps): {whole['minutes_fit']:.1f} min fitting "
                  f"({whole['seconds_per_step']:.2f} s/step), {whole['minutes_total']:.1f} min with meshing")
        report["whole_fit"] = whole
    report["peak_memory_mb"] = peak_memory_mb(device)
    print(f"\nPeak memory of the process: {report['peak_memory_mb']:,.0f} MB "
          f"({'CUDA allocations' if device.type == 'cuda' else 'RSS'})")
    save_json(args.out, json.loads(json.dumps(report, default=float)))
    print(f"\nresults written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
