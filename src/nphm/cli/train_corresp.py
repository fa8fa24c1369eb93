"""Stage 2: train (or resume) an expression model (forward deformations) with its latents.

The identity network and latents come from the stage-1 experiment named by the config's
training.shape_exp_name (epoch training.shape_ckpt, null = newest); both stay frozen.
-mode compress|glob_only|expr_only for an NPHM identity, npm for an NPM one.

Experiment folder: EXPERIMENT_DIR/{exp_name}/ (configs.yaml with ex_decoder.mode, checkpoints/,
losses.csv, recs/, wandb/). Re-running the same command resumes from the newest checkpoint.

Examples:
    python scripts/training/train_corresp.py -cfg_file configs/nphm_def_cpu.yaml -exp_name nphm_def_cpu -mode compress
    python scripts/training/train_corresp.py -cfg_file configs/npm_def_cpu.yaml -exp_name npm_def_cpu -mode npm
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nphm import paths
from nphm.cli.common import add_dataset_args, add_training_run_args, load_yaml_config


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-cfg_file", "--cfg_file", type=Path, required=True, help="yaml config (ex_decoder + training)")
    p.add_argument("-exp_name", "--exp_name", required=True, help="experiment name (folder in EXPERIMENT_DIR)")
    p.add_argument("-mode", "--mode", required=True, choices=["compress", "glob_only", "expr_only", "npm"],
                   help="deformation conditioning (npm: the NPM baseline)")
    p.add_argument("--shape_exp_name", default=None, help="override training.shape_exp_name (stage-1 experiment)")
    p.add_argument("--shape_ckpt", type=int, default=None, help="override training.shape_ckpt (its epoch)")
    add_dataset_args(p, paths.DATA)
    p.add_argument("--supervision_dir", type=Path, default=paths.SUPERVISION_DEFORMATION_OPEN,
                   help="deformation supervision, SUPERVISION_DEFORMATION_OPEN (default: %(default)s)")
    add_training_run_args(p, paths.EXPERIMENT_DIR)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from nphm.training import stage2

    cfg = load_yaml_config(args.cfg_file)
    if args.shape_exp_name is not None:
        cfg.setdefault("training", {})["shape_exp_name"] = args.shape_exp_name
    if args.shape_ckpt is not None:
        cfg.setdefault("training", {})["shape_ckpt"] = args.shape_ckpt
    result = stage2.train(cfg, args.experiment_dir / args.exp_name, args.mode, data_dir=args.data_dir,
                          supervision_dir=args.supervision_dir, description=args.description, device=args.device,
                          wandb_mode=args.wandb, stop_after=args.stop_after, progress=not args.no_progress)
    from nphm.training.trainer import training_summary

    print(training_summary(result, args.experiment_dir / args.exp_name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
