"""A first look at a dataset in the NPHM layout: a printed summary and off-screen pictures.

Shows how to use ``nphm.data.DataManager`` (the code is meant to be read; the pictures are
drawn by :mod:`nphm.pictures.dataset`). Writes to --out:

- ``subject_SSS_meshes.png``: raw scan, registration and FLAME fit of one scan side by
  side (nphm frame), each with the facial anchors (red) and 68 landmarks (white) of the
  registration; a fourth panel shows the neck cut (scan kept above the throat plane in red).
- ``subject_SSS_expressions.png``: the scans of several expressions of the subject.
- ``subject_SSS_observations.png``: the single-view observations, if they exist.

Example:
    python scripts/dataset/example_usage.py --data_dir work/synthetic --subject 1 --out demo_output/data
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


from nphm import paths
from nphm.cli.common import add_dataset_args


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataset_args(p, paths.DATA)
    p.add_argument("--single_view_dir", type=Path, default=paths.DATA_SINGLE_VIEW,
                   help="single-view observations root (default: %(default)s)")
    p.add_argument("--subject", type=int, default=None, help="subject id (default: the first one on disk)")
    p.add_argument("--expression", type=int, default=None,
                   help="expression for the mesh picture (default: the neutral-open one, else the first)")
    p.add_argument("--n_expressions", type=int, default=8, help="expressions in the grid (default: %(default)s)")
    p.add_argument("--out", type=Path, required=True, help="output folder for the PNG files")
    p.add_argument("--size", type=int, default=400, help="pixels per panel (default: %(default)s)")
    return p.parse_args(argv)


def summary(manager, subject: int):
    """A short text summary of the dataset and one subject, and the subject's expressions."""
    import warnings

    d = manager.description
    lines = [f"dataset '{d.name}' at {manager.data_dir} (description: {d.source})"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        counts = {split: len(manager.subjects(split)) for split in ("train", "eval", "test", "all")}
    lines.append("subjects: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    lines += [f"  note: {w.message}" for w in caught]
    split = [s for s in ("eval", "test") if subject in getattr(d, f"subjects_{s}")] or ["train"]
    expressions = manager.expressions(subject)
    lines.append(f"subject {subject} ({split[0]}): {len(expressions)} expressions {expressions}")
    if split[0] == "test":
        lines.append(f"  test expressions: {manager.test_expressions(subject)}")
    bad = d.bad_scans.get(subject)
    if bad:
        lines.append(f"  bad scans excluded: {bad}")
    lines.append(f"  neutral open: {d.neutral(subject, 'open')}, closed: {d.neutral(subject, 'closed')} "
                 "(None = missing)")
    return "\n".join(lines), expressions


def describe_scan(manager, subject: int, expression: int) -> str:
    import numpy as np

    scan = manager.load_scan(subject, expression)
    reg = manager.load_registration(subject, expression)
    flame = manager.load_flame(subject, expression)
    s, _, _ = manager.transform(subject, expression)
    extent = scan.vertices.max(axis=0) - scan.vertices.min(axis=0)
    keep = manager.neck_keep_mask(scan.vertices, subject, expression)
    return (f"scan {subject}/{expression}: vertices scan {len(scan.vertices)}, registration {len(reg.vertices)}, "
            f"FLAME {len(flame.vertices)}\n"
            f"  scale s = {s:.6g} (1 nphm unit = {1 / s:.1f} mm); scan extent {np.round(extent, 3).tolist()} nphm "
            f"= {np.round(extent / s, 1).tolist()} mm\n"
            f"  neck cut keeps {keep.mean() * 100:.1f}% of the scan vertices")


def main(argv=None) -> int:
    args = parse_args(argv)
    from nphm import pictures
    from nphm.data import DataManager
    from nphm.pictures.base import quiet_vtk

    quiet_vtk()  # no "bad X server" chatter without a display

    manager = DataManager(args.data_dir, args.description, args.single_view_dir)
    subject = args.subject if args.subject is not None else manager.subjects("all")[0]
    text, expressions = summary(manager, subject)
    print(text)
    expression = args.expression
    if expression is None:
        neutral = manager.description.neutral(subject, "open")
        expression = neutral if neutral in expressions else expressions[0]
    print(describe_scan(manager, subject, expression))

    args.out.mkdir(parents=True, exist_ok=True)
    written = [args.out / f"subject_{subject:03d}_meshes.png", args.out / f"subject_{subject:03d}_expressions.png"]
    pictures.scan_registration_flame_figure(written[0], manager, subject, expression, args.size)
    grid = expressions[: args.n_expressions]
    pictures.expression_scans_figure(written[1], manager, subject, grid, args.size)
    obs_path = args.out / f"subject_{subject:03d}_observations.png"
    if pictures.observations_figure(obs_path, manager, subject,
                                    manager.test_expressions(subject)[: args.n_expressions], args.size):
        written.append(obs_path)
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
