"""Stage 1: train (or resume) an identity model, NPHM (-local) or NPM, with its latents.

Experiment folder: EXPERIMENT_DIR/{exp_name}/ with configs.yaml, checkpoints/checkpoint_epoch_{N}.tar
(the release's layout), losses.csv, recs/epoch_{N}/ (preview meshes and preview.png) and wandb/.
Re-running the same command resumes from the newest checkpoint; an existing experiment keeps
its saved configs.yaml.

Examples:
    python scripts/training/train.py -cfg_file configs/nphm_cpu.yaml -exp_name nphm_cpu -local
    python scripts/training/train.py -cfg_file configs/npm_cpu.yaml -exp_name npm_cpu
    torchrun --nproc_per_node 2 scripts/training/train.py -cfg_file configs/nphm.yaml -exp_name nphm -local
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nphm import paths
from nphm.cli.common import add_dataset_args, add_training_run_args, load_yaml_config


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-cfg_file", "--cfg_file", type=Path, required=True, help="yaml config (decoder + training)")
    p.add_argument("-exp_name", "--exp_name", required=True, help="experiment name (folder in EXPERIMENT_DIR)")
    p.add_argument("-local", "--local", action="store_true",
                   help="NPHM (local ensemble); without it the config must describe NPM (release flag)")
    add_dataset_args(p, paths.DATA)
    p.add_argument("--supervision_dir", type=Path, default=paths.SUPERVISION_IDENTITY,
                   help="identity supervision, SUPERVISION_IDENTITY (default: %(default)s)")
    add_training_run_args(p, paths.EXPERIMENT_DIR)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from nphm.training import stage1

    cfg = load_yaml_config(args.cfg_file)
    result = stage1.train(cfg, args.experiment_dir / args.exp_name, data_dir=args.data_dir,
                          supervision_dir=args.supervision_dir, description=args.description, device=args.device,
                          wandb_mode=args.wandb, local=args.local, stop_after=args.stop_after,
                          progress=not args.no_progress)
    from nphm.training.trainer import training_summary

    print(training_summary(result, args.experiment_dir / args.exp_name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
