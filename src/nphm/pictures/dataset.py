"""Pictures of a dataset in the NPHM layout, read through a :class:`~nphm.data.DataManager`.

All panels use the same front view of the nphm frame (as in the release's viewer): the
camera at (0, -0.05, 6) looks along -z at (0, -0.05, 0), zoomed so that about 1.4 nphm
units are visible (a head with its neck).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from nphm.pictures.base import (
    MESH_COLOR, PathLike, grid_shape, mesh_polydata, off_screen_plotter, save_screenshot, set_camera,
)


def _dataset_camera(pl) -> None:
    set_camera(pl, (0.0, -0.05, 6.0), (0.0, -0.05, 0.0), zoom=2.3)


def scan_registration_flame_figure(path: PathLike, manager, subject: int, expression: int,
                                   size: int = 400) -> Path:
    """Four ``size`` x ``size`` panels of one scan: the raw scan, its registration and its FLAME
    fit, each with the registration's facial anchors (red) and 68 landmarks (white), and the
    neck cut (scan vertices kept above the throat plane in red). Returns ``path``."""
    scan = manager.load_scan(subject, expression)
    reg = manager.load_registration(subject, expression)
    flame = manager.load_flame(subject, expression)
    anchors = manager.anchors(subject, expression)
    landmarks = manager.landmarks(subject, expression)
    keep = manager.neck_keep_mask(scan.vertices, subject, expression)

    with off_screen_plotter((1, 4), (size, size), border="interior") as pl:
        for col, (title, mesh) in enumerate((("raw scan", scan), ("registration", reg), ("FLAME fit", flame))):
            pl.subplot(0, col)
            pl.add_text(title, font_size=10)
            pl.add_mesh(mesh_polydata(mesh), color=MESH_COLOR, smooth_shading=True)
            pl.add_points(landmarks, color="white", point_size=6, render_points_as_spheres=True)
            pl.add_points(anchors, color="red", point_size=10, render_points_as_spheres=True)
            _dataset_camera(pl)
        pl.subplot(0, 3)
        pl.add_text("neck cut (red = kept)", font_size=10)
        poly = mesh_polydata(scan)
        poly["kept"] = keep.astype(float)
        pl.add_mesh(poly, scalars="kept", cmap=[MESH_COLOR, "red"], show_scalar_bar=False)
        _dataset_camera(pl)
        return save_screenshot(pl, path)


def expression_scans_figure(path: PathLike, manager, subject: int, expressions: Sequence[int],
                            size: int = 400) -> Path:
    """The scans of ``expressions`` of ``subject``, four ``size`` x ``size`` panels per row; an
    unreadable scan leaves its panel with a red note. Returns ``path``."""
    rows, cols = grid_shape(len(expressions), 4)
    with off_screen_plotter((rows, cols), (size, size), border="interior") as pl:
        for i, e in enumerate(expressions):
            pl.subplot(i // cols, i % cols)
            pl.add_text(f"expression {e}", font_size=10)
            try:
                pl.add_mesh(mesh_polydata(manager.load_scan(subject, e)), color=MESH_COLOR, smooth_shading=True)
            except (OSError, ValueError) as err:
                pl.add_text(f"\n\nunreadable: {type(err).__name__}", font_size=8, color="red")
            _dataset_camera(pl)
        return save_screenshot(pl, path)


def observations_figure(path: PathLike, manager, subject: int, expressions: Sequence[int],
                        size: int = 400) -> bool:
    """The stored single-view observations of ``expressions`` as point clouds (nphm frame; the
    frontal observation in black, the one from behind, if stored, in blue), one ``size`` x
    ``size`` panel each.

    Returns:
        False (and writes nothing) when none of the expressions has an observation.
    """
    available = [e for e in expressions if manager.observation_path(subject, e).is_file()]
    if not available:
        return False
    with off_screen_plotter((1, len(available)), (size, size), border="interior") as pl:
        for i, e in enumerate(available):
            pl.subplot(0, i)
            pl.add_text(f"obs {e}", font_size=10)
            pl.add_points(manager.load_observation(subject, e), color="black", point_size=3)
            if manager.observation_path(subject, e, back=True).is_file():
                pl.add_points(manager.load_observation(subject, e, back=True), color="royalblue", point_size=3)
            _dataset_camera(pl)
        save_screenshot(pl, path)
    return True
