"""Export trained experiments as compact pretrained models (weights + latents, float32).

Each experiment EXPERIMENT_DIR/NAME is copied to OUT/NAME in the official layout
(configs.yaml + checkpoints/checkpoint_epoch_N.tar) without optimiser or scheduler states, so it
loads for fitting and meshing but cannot resume training. With --dataset, the description of
the training set (DATA/dataset.json, which records the synthetic generator's seed and splits)
is copied to OUT/training_dataset.json with a few vertices of every test subject, so that users
can regenerate the held-out test subjects and check that they are the same, and
OUT/landmarks_reference.json is written: the mean 68 landmarks and 39 anchors of the training
subjects' neutral registrations and the NPHM identity models' anchors at z = 0, the reference
positions for aligning scans by landmarks (nphm.fitting.landmarks). Every exported identity
model gets OUT/NAME/mean_head.npz, the automatic alignment's reference surface (its mean head),
so that fit_custom.py reads it instead of meshing it.

Examples (the shipped models in pretrained/ict_cpu and pretrained/synthetic_cpu, see their README.md):
    python scripts/training/export_compact.py --experiment_dir work/ict/experiments \\
        --names nphm_ict_cpu:250=nphm_cpu nphm_def_ict_cpu=nphm_def_cpu npm_ict_cpu=npm_cpu npm_def_ict_cpu=npm_def_cpu \\
        --dataset work/ict/dataset --out pretrained/ict_cpu
    python scripts/training/export_compact.py --experiment_dir work/experiments \\
        --names nphm_cpu nphm_def_cpu npm_cpu npm_def_cpu --dataset work/dataset --out pretrained/synthetic_cpu
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from nphm import paths


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment_dir", type=Path, default=paths.EXPERIMENT_DIR,
                   help="trained experiments (default: %(default)s)")
    p.add_argument("--names", nargs="+", required=True,
                   help="experiments to export, NAME[:EPOCH][=EXPORTED_NAME] (default epoch: the newest; "
                        "EXPORTED_NAME: the folder name in OUT, e.g. nphm_ict_cpu:250=nphm_cpu to match the "
                        "fitting configs; stage-2 configs then name the renamed identity experiment)")
    p.add_argument("--out", type=Path, default=paths.PRETRAINED, help="output folder (default: %(default)s)")
    p.add_argument("--dataset", type=Path, default=None,
                   help="dataset the models were trained on: copy its dataset.json to OUT/training_dataset.json "
                        "and write OUT/landmarks_reference.json")
    p.add_argument("--overwrite", action="store_true", help="replace exported experiments that exist")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from nphm.data import DataManager
    from nphm.pretrained import export_compact, held_out_fingerprints, write_landmark_reference, write_mean_heads
    from nphm.utils.io import save_json

    failed = 0
    items = []
    for item in args.names:
        source, _, exported = item.partition("=")
        name, _, epoch = source.partition(":")
        items.append((name, epoch, exported or name))
    renamed = {name: exported for name, _, exported in items}
    for name, epoch, exported in items:
        try:
            path = export_compact(args.experiment_dir / name, args.out / exported, int(epoch) if epoch else None,
                                  overwrite=args.overwrite, renamed=renamed)
        except (FileNotFoundError, FileExistsError, ValueError) as e:
            print(f"error: {name}: {e}", file=sys.stderr)
            failed += 1
            continue
        print(f"{name}: {path} ({path.stat().st_size / 1e6:.2f} MB)")
    exported_names = [exported for _, _, exported in items if (args.out / exported / "configs.yaml").is_file()]
    for path in write_mean_heads(args.out, exported_names):
        print(f"mean head: {path}")
    if args.dataset is not None:
        src = args.dataset / "dataset.json"
        if not src.is_file():
            print(f"error: dataset description not found: {src}", file=sys.stderr)
            return 1
        manager = DataManager(args.dataset)
        description = json.loads(src.read_text())
        description["held_out_fingerprints"] = held_out_fingerprints(manager, manager.subjects("test"))
        save_json(args.out / "training_dataset.json", description)
        print(f"training set description: {args.out / 'training_dataset.json'}")
        try:
            print(f"landmark reference: {write_landmark_reference(args.out, manager)}")
        except (FileNotFoundError, ValueError) as e:
            print(f"error: landmark reference: {e}", file=sys.stderr)
            return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
