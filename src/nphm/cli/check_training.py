"""How well a trained experiment reproduces its own training scans.

Identity experiments (stage 1): the mesh of each chosen training subject's latent against its
neutral-open scan. Expression experiments (stage 2): the subject's canonical mesh posed by the
training expression latents against those scans. Metrics with the evaluation protocol (rendered
samples, neck cut, millimetres); a PNG per scan with --out_dir. This checks training, it is not
the benchmark (that fits held-out people from single views: scripts/benchmark/quality.py).

Examples:
    python scripts/training/check_training.py -exp_name nphm_cpu --subjects 0 1 2 --resolution 128
    python scripts/training/check_training.py -exp_name npm_def_cpu --items 10:4 20:7 --resolution 128
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nphm import paths
from nphm.cli.common import add_dataset_args


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-exp_name", required=True, help="experiment in EXPERIMENT_DIR (stage 1 or stage 2)")
    p.add_argument("--epoch", type=int, default=None, help="checkpoint epoch (default: the newest)")
    p.add_argument("--experiment_dir", type=Path, default=paths.EXPERIMENT_DIR,
                   help="EXPERIMENT_DIR (default: %(default)s)")
    add_dataset_args(p, paths.DATA)
    p.add_argument("--subjects", type=int, nargs="+", default=None,
                   help="stage 1: training subjects to check (default: the first three)")
    p.add_argument("--items", nargs="+", default=None,
                   help="stage 2: training scans SUBJECT:EXPRESSION to check (default: three spread over the set)")
    p.add_argument("--resolution", type=int, default=128, help="marching cubes resolution (default: %(default)s)")
    p.add_argument("--eval_scale", type=float, default=0.5,
                   help="image resolution of the evaluation cameras relative to the release's (default: %(default)s)")
    p.add_argument("--out_dir", type=Path, default=None, help="write meshes and PNGs here")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: %(default)s)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from nphm.checkpoints import available_epochs, load_config, read_checkpoint
    from nphm.data import DataManager
    from nphm.evaluation.pipeline import EvalSettings
    from nphm.training.inspect import expression_fit, identity_fit, summarize
    from nphm.utils.device import resolve_device

    exp_dir = args.experiment_dir / args.exp_name
    if not available_epochs(exp_dir):
        print(f"error: no checkpoints in {exp_dir}", file=sys.stderr)
        return 1
    device = resolve_device(args.device)
    manager = DataManager(args.data_dir, args.description)
    settings = EvalSettings(resolution_scale=args.eval_scale)
    stage2 = "shape_exp_name" in (load_config(exp_dir).get("training") or {})
    try:
        if stage2:
            if args.items:
                items = [tuple(int(v) for v in it.split(":")) for it in args.items]
            else:
                ckpt = read_checkpoint(exp_dir, args.epoch or available_epochs(exp_dir)[-1])
                listed = [tuple(map(int, it)) for it in ckpt["items_train"]]
                items = [listed[i] for i in sorted({0, len(listed) // 2, len(listed) - 1})]
            rows = expression_fit(exp_dir, manager, args.epoch, items, args.resolution, settings, args.out_dir, device)
            labels = [f"{s}:{e}" for s, e in items]
        else:
            subjects = args.subjects or manager.subjects("train")[:3]
            rows = identity_fit(exp_dir, manager, args.epoch, subjects, args.resolution, settings, args.out_dir,
                                device)
            labels = [str(s) for s in subjects]
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"error: {exp_dir}: {e}", file=sys.stderr)
        return 1
    keys = ("chamfer_l1", "face_chamfer_l1", "normals consistency", "f_score_05")
    print(f"{args.exp_name} ({'expressions' if stage2 else 'identity'}), marching cubes {args.resolution}^3, mm:")
    print("scan      " + "  ".join(f"{k:>20}" for k in keys))
    for label, row in zip(labels, rows):
        print(f"{label:<10}" + "  ".join(f"{row.get(k, float('nan')):>20.4f}" for k in keys))
    mean = summarize(rows, keys)
    print(f"{'mean':<10}" + "  ".join(f"{mean.get(k, float('nan')):>20.4f}" for k in keys))
    return 0


if __name__ == "__main__":
    sys.exit(main())
