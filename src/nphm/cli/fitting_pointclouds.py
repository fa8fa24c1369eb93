"""Fit NPHM (or NPM) to the single-view test observations, or mesh random identities.

For every test subject (or --subjects, or the demo subjects): one identity latent and one
expression latent per test expression are fitted jointly (Broyden root finding through the
forward deformation), then the canonical mesh is extracted and posed per expression. Written to
FITTING_DIR/forward_{exp_name}/{exp_tag}/ (the release's names):

    configs.yaml, {subject}_{expression}.ply, {subject}_{expression}_lat_shape.npy,
    {subject}_{expression}_lat_expr.npy, {subject}_canonical.ply, {subject}_fitting.json,
    {subject}.png (observations over the fitted meshes)

Finished subjects are skipped (--overwrite to redo); a failing subject is reported (naming the
file to blame) and the others continue; test scans the dataset description expects but the disk
lacks are reported as failures. Every subject's last outcome is kept in the ledger .../ledger/.
Several workers may fit into one folder at once (each subject is claimed first); --shard K/N
splits the subjects statically. With -sample, random identities (training-latent mean + 0.85
std noise) are meshed and rendered into .../samples/ instead.

Steps: --steps (like the config's fitting.steps) counts release steps, the unit of every
schedule; the fit runs int(steps * step_scale) optimisation steps, step_scale from the config
(the CPU configs: 0.3) or --step_scale. The plan printed at the start says how many.

Exit code: 0 every subject fitted, 3 some failed (the others were fitted), 2 usage or
configuration error (config, models or dataset not found).

Examples:
    python scripts/fitting/fitting_pointclouds.py -cfg_file configs/fitting_nphm.yaml -exp_name nphm -exp_tag test
    python scripts/fitting/fitting_pointclouds.py -cfg_file configs/fitting_nphm_cpu.yaml -exp_name nphm_cpu \\
        -exp_tag demo -demo --steps 200
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nphm import paths
from nphm.cli.common import add_dataset_args, add_shard_arg

#: Subjects fitted by -demo: the first N test subjects of the dataset.
N_DEMO_SUBJECTS = 2


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-cfg_file", "--cfg_file", type=Path, required=True, help="fitting config (configs/fitting_*.yaml)")
    p.add_argument("-exp_name", "--exp_name", required=True, help="output folder name: forward_{exp_name}")
    p.add_argument("-exp_tag", "--exp_tag", required=True, help="output sub-folder")
    p.add_argument("-resolution", "--resolution", type=int, default=256,
                   help="marching-cubes grid per axis over the fitting box (release: 256 demo, 400 test)")
    p.add_argument("-batch_points", "--batch_points", type=int, default=32768, help="points per SDF query chunk")
    p.add_argument("-demo", "--demo", action="store_true",
                   help=f"fit only the first {N_DEMO_SUBJECTS} test subjects")
    p.add_argument("-sample", "--sample", action="store_true", help="mesh random identities instead of fitting")
    p.add_argument("--n_samples", type=int, default=100, help="random identities for -sample (default: %(default)s)")
    p.add_argument("--subjects", type=int, nargs="+", default=None, help="fit these subjects")
    p.add_argument("--steps", type=int, default=None,
                   help="override fitting.steps of the config: release steps, the unit of the schedules; the fit "
                        "runs int(steps * step_scale) optimisation steps (e.g. 30 x 0.3 = 9 with the CPU configs)")
    p.add_argument("--step_scale", type=float, default=None,
                   help="override fitting.step_scale of the config (1 runs exactly --steps optimisation steps)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, auto (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the point draws (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="refit subjects that already have results")
    p.add_argument("--no_figures", action="store_true", help="do not render the per-subject PNG")
    add_dataset_args(p, paths.DATA)
    p.add_argument("--single_view_dir", type=Path, default=paths.DATA_SINGLE_VIEW,
                   help="single-view observations (default: %(default)s)")
    p.add_argument("--experiment_dir", type=Path, default=paths.EXPERIMENT_DIR,
                   help="trained models (default: %(default)s)")
    p.add_argument("--fitting_dir", type=Path, default=paths.FITTING_DIR, help="output root (default: %(default)s)")
    add_shard_arg(p, "subject")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from tqdm import tqdm

    from nphm import layout
    from nphm.cli.common import close_batch, count_result, report_missing, shard_of, usage_error
    from nphm.experiments.stages import load_fitting_run
    from nphm.fitting import io as fio
    from nphm.fitting.pipeline import fit_subjects, fitting_folder, sample_identities
    from nphm.utils.batch import EXIT_ITEMS_FAILED, EXIT_OK

    shard = shard_of(args)
    try:
        cfg, models, device = load_fitting_run(args.cfg_file, args.experiment_dir, args.device, args.seed,
                                               steps=args.steps, step_scale=args.step_scale)
    except (OSError, ValueError) as e:
        usage_error(str(e))
    settings = cfg.settings
    out_dir = layout.fitting_results_dir(args.exp_name, args.exp_tag, args.fitting_dir)
    fio.save_config_copy(out_dir, cfg)
    print(f"models: {cfg.exp_name_shape} epoch {models.epochs['shape']}"
          + (f", {cfg.exp_name_expr} epoch {models.epochs['expr']}" if models.deformation is not None else
             " (identity only)") + f"; device {device}; output {out_dir}")
    print(f"plan: {settings.n_iterations} optimisation steps per subject (fitting.steps {settings.steps} release "
          f"steps x step_scale {settings.step_scale:g}), marching cubes {args.resolution}^3")

    if args.sample:
        outcomes = sample_identities(models, args.n_samples, settings, out_dir, args.resolution, args.seed,
                                     chunk=args.batch_points)
        failed = [o for o in outcomes if o.status == "failed"]
        for o in failed:
            print(f"FAILED sample {o.subject}: {o.message}")
        print(f"{len(outcomes) - len(failed)} samples written to {out_dir / 'samples'}, {len(failed)} failed")
        return EXIT_ITEMS_FAILED if failed else EXIT_OK

    from nphm.data import DataManager
    from nphm.data.expected import missing_items

    try:
        manager = DataManager(args.data_dir, args.description, args.single_view_dir)
        subjects = args.subjects or manager.subjects("test")
    except (OSError, ValueError) as e:
        usage_error(str(e))
    if args.demo and not args.subjects:
        subjects = subjects[:N_DEMO_SUBJECTS]
    if not subjects:
        usage_error("no subjects to fit")
    folder = fitting_folder(out_dir)
    present = [s for s in subjects if manager.subject_dir(s).is_dir()]
    subjects = report_missing(missing_items(manager, args.subjects, "test", use="test"), folder, subjects)
    counts = {}
    for outcome in fit_subjects(manager, models, present, settings, out_dir, args.resolution, args.seed,
                                overwrite=args.overwrite, figure=not args.no_figures, chunk=args.batch_points,
                                shard=shard):
        count_result(counts, outcome)
        if outcome.status == "failed":
            tqdm.write(f"FAILED subject {outcome.subject}: {outcome.message}")
        elif outcome.status == "done":
            tqdm.write(f"subject {outcome.subject}: {len(outcome.expressions)} expressions, "
                       f"fit {outcome.seconds_fit / 60:.1f} min, total {outcome.seconds / 60:.1f} min")
    return close_batch(folder, counts, subjects, "subjects", out_dir, verb="fitted")


if __name__ == "__main__":
    sys.exit(main())
