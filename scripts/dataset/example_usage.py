"""A first look at a dataset in the NPHM layout: a printed summary and off-screen pictures.

Shows how to use ``nphm.data.DataManager`` (the code is meant to be read). Writes to --out:

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

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import env_paths  # noqa: E402
from nphm.utils.cli import add_dataset_args  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataset_args(p, env_paths.DATA)
    p.add_argument("--single_view_dir", type=Path, default=env_paths.DATA_SINGLE_VIEW,
                   help="single-view observations root (default: %(default)s)")
    p.add_argument("--subject", type=int, default=None, help="subject id (default: the first one on disk)")
    p.add_argument("--expression", type=int, default=None,
                   help="expression for the mesh picture (default: the neutral-open one, else the first)")
    p.add_argument("--n_expressions", type=int, default=8, help="expressions in the grid (default: %(default)s)")
    p.add_argument("--out", type=Path, required=True, help="output folder for the PNG files")
    p.add_argument("--size", type=int, default=400, help="pixels per panel (default: %(default)s)")
    return p.parse_args(argv)


def _poly(mesh):
    """trimesh -> pyvista PolyData (keeps vertex order)."""
    import numpy as np
    import pyvista as pv

    return pv.PolyData.from_regular_faces(np.asarray(mesh.vertices), np.asarray(mesh.faces))


def _frame_camera(pl) -> None:
    # frontal view of the nphm frame (face towards +z, up +y), as in the release's viewer
    pl.camera_position = [(0.0, -0.05, 6.0), (0.0, -0.05, 0.0), (0.0, 1.0, 0.0)]
    pl.camera.zoom(2.3)  # ~1.4 nphm units visible: a head with its neck


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


def render_meshes(manager, subject: int, expression: int, path: Path, size: int) -> None:
    import pyvista as pv

    scan = manager.load_scan(subject, expression)
    reg = manager.load_registration(subject, expression)
    flame = manager.load_flame(subject, expression)
    anchors = manager.anchors(subject, expression)
    landmarks = manager.landmarks(subject, expression)
    keep = manager.neck_keep_mask(scan.vertices, subject, expression)

    pl = pv.Plotter(off_screen=True, shape=(1, 4), window_size=(4 * size, size))
    for col, (title, mesh) in enumerate((("raw scan", scan), ("registration", reg), ("FLAME fit", flame))):
        pl.subplot(0, col)
        pl.add_text(title, font_size=10)
        pl.add_mesh(_poly(mesh), color="lightgray", smooth_shading=True)
        pl.add_points(landmarks, color="white", point_size=6, render_points_as_spheres=True)
        pl.add_points(anchors, color="red", point_size=10, render_points_as_spheres=True)
        _frame_camera(pl)
    pl.subplot(0, 3)
    pl.add_text("neck cut (red = kept)", font_size=10)
    poly = _poly(scan)
    poly["kept"] = keep.astype(float)
    pl.add_mesh(poly, scalars="kept", cmap=["lightgray", "red"], show_scalar_bar=False)
    _frame_camera(pl)
    pl.screenshot(str(path))
    pl.close()


def render_expressions(manager, subject: int, expressions, path: Path, size: int) -> None:
    import pyvista as pv

    cols = min(4, len(expressions))
    rows = -(-len(expressions) // cols)
    pl = pv.Plotter(off_screen=True, shape=(rows, cols), window_size=(cols * size, rows * size))
    for i, e in enumerate(expressions):
        pl.subplot(i // cols, i % cols)
        pl.add_text(f"expression {e}", font_size=10)
        try:
            pl.add_mesh(_poly(manager.load_scan(subject, e)), color="lightgray", smooth_shading=True)
        except (OSError, ValueError) as err:
            pl.add_text(f"\n\nunreadable: {type(err).__name__}", font_size=8, color="red")
        _frame_camera(pl)
    pl.screenshot(str(path))
    pl.close()


def render_observations(manager, subject: int, expressions, path: Path, size: int) -> bool:
    """Point clouds of the stored observations (back view in blue); False if there are none."""
    import pyvista as pv

    available = [e for e in expressions if manager.observation_path(subject, e).is_file()]
    if not available:
        return False
    pl = pv.Plotter(off_screen=True, shape=(1, len(available)), window_size=(len(available) * size, size))
    for i, e in enumerate(available):
        pl.subplot(0, i)
        pl.add_text(f"obs {e}", font_size=10)
        pl.add_points(manager.load_observation(subject, e), color="black", point_size=3)
        if manager.observation_path(subject, e, back=True).is_file():
            pl.add_points(manager.load_observation(subject, e, back=True), color="royalblue", point_size=3)
        _frame_camera(pl)
    pl.screenshot(str(path))
    pl.close()
    return True


def main(argv=None) -> int:
    args = parse_args(argv)
    import pyvista as pv
    from vtkmodules.vtkCommonCore import vtkLogger

    from nphm.data import DataManager

    pv.OFF_SCREEN = True
    vtkLogger.SetStderrVerbosity(vtkLogger.VERBOSITY_ERROR)  # no "bad X server" chatter without a display

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
    render_meshes(manager, subject, expression, written[0], args.size)
    grid = expressions[: args.n_expressions]
    render_expressions(manager, subject, grid, written[1], args.size)
    obs_path = args.out / f"subject_{subject:03d}_observations.png"
    if render_observations(manager, subject, manager.test_expressions(subject)[: args.n_expressions], obs_path,
                           args.size):
        written.append(obs_path)
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
