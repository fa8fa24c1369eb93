"""Speed benchmark: NPHM identity queries and mesh extraction vs the straightforward evaluation.

Builds the release-size NPHM identity network with random weights (briefly fitted to an
analytic head so that its zero level set is a closed head-sized surface) and prints, measured
in this one process, points/s of the naive all-members evaluation vs our exact and sparse
modes, their max |difference|, and mesh extraction at 128^3 and 256^3 (dense vs coarse-to-fine
with the fixed and with the per-cell measured Lipschitz bound, and traced: the last level walked
along the surface; median of --mesh_repeats runs),
with the peak memory of every measurement.
"""
import argparse
from dataclasses import asdict
from pathlib import Path

from nphm import paths
from nphm.experiments.speed import SpeedSettings, format_results, run_speed_benchmark
from nphm.utils.device import resolve_device
from nphm.utils.io import save_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--quick", action="store_true", help="fewer points, no 256^3 extraction (a smoke run)")
    parser.add_argument("--refit", action="store_true", help="refit the benchmark network even if cached")
    parser.add_argument("--dense_resolution", type=int, default=128,
                        help="largest resolution at which dense extraction is measured (above: extrapolated)")
    parser.add_argument("--resolutions", type=int, nargs="+", default=[128, 256],
                        help="mesh extraction resolutions (sparse extraction at each)")
    parser.add_argument("--mesh_repeats", type=int, default=1,
                        help="timed extractions per mesh row; the median is reported (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=paths.WORK_DIR / "benchmarks" / "speed.json",
                        help="where to write the results as JSON")
    args = parser.parse_args()

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    settings = SpeedSettings(dense_resolution=args.dense_resolution, resolutions=tuple(args.resolutions),
                             mesh_repeats=args.mesh_repeats)
    if args.quick:
        settings = SpeedSettings(n_points=8192, n_points_naive=1024, fit_steps=20, resolutions=(64,),
                                 dense_resolution=64, repeats=1)
    device = resolve_device(args.device)
    cache = args.out.parent / f"speed_network_{device.type}.pt"
    results = run_speed_benchmark(settings, device, cache=cache, refit=args.refit)
    print(format_results(results))
    save_json(args.out, asdict(results))
    print(f"\nresults written to {args.out}")


if __name__ == "__main__":
    main()
