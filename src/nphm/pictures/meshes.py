"""Mesh figures: labelled front/side grids, fits with their observed points, single meshes."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np
import trimesh

from nphm.pictures.base import (
    MESH_COLOR, VIEWS, PathLike, grid_shape, mesh_polydata, off_screen_plotter, save_screenshot, set_camera,
    view_from,
)


def render_mesh_grid(
    path: PathLike,
    meshes: Sequence[Tuple[str, Optional[trimesh.Trimesh]]],
    title: str = "",
    tile: Tuple[int, int] = (320, 320),
    colors: Optional[Sequence[str]] = None,
    max_columns: int = 6,
) -> Path:
    """Labelled meshes in a grid: at most ``max_columns`` per row, each mesh seen from the
    front (+z) and, in the row below, from the side (+x).

    Args:
        path: output PNG; ``tile`` (width, height) pixels per panel, so the image is
            ``(tile[0] * columns, tile[1] * 2 * blocks)`` (width, height).
        meshes: ``(label, mesh)`` pairs, nphm frame. A ``None`` (or faceless) mesh is an
            empty tile with its label and "(no surface)".
        title: written in the lower left of the first side view.
        colors: one colour per mesh (default: light grey).
    Returns:
        ``path``.

    The cameras look at the centre of the bounding box of all meshes from 1.9 times its
    diagonal, with a 30 degree view angle.
    """
    present = [m for _, m in meshes if m is not None and len(m.vertices)]
    if present:
        verts = np.concatenate([np.asarray(m.vertices) for m in present])
        center = 0.5 * (verts.min(axis=0) + verts.max(axis=0))
        extent = float(np.linalg.norm(verts.max(axis=0) - verts.min(axis=0)))
    else:
        center, extent = np.zeros(3), 1.0
    dist = 1.9 * max(extent, 1e-3)
    n_blocks, n_cols = grid_shape(len(meshes), max_columns)
    with off_screen_plotter((n_blocks * len(VIEWS), n_cols), tile) as pl:
        for i, (label, mesh) in enumerate(meshes):
            block, col = divmod(i, n_cols)
            for v, (view, _) in enumerate(VIEWS):
                pl.subplot(block * len(VIEWS) + v, col)
                if mesh is not None and len(mesh.faces):
                    color = colors[i] if colors is not None else MESH_COLOR
                    pl.add_mesh(mesh_polydata(mesh), color=color, smooth_shading=True)
                else:
                    pl.add_text("(no surface)", position="left_edge", font_size=9)
                if v == 0:
                    pl.add_text(label, position="upper_edge", font_size=9)
                if i == 0 and v == 1 and title:
                    pl.add_text(title, position="lower_left", font_size=8)
                view_from(pl, center, view, dist)
        return save_screenshot(pl, path)


def fit_figure(
    path: PathLike,
    meshes: Sequence[trimesh.Trimesh],
    observations: Sequence[Optional[np.ndarray]],
    titles: Sequence[str],
    columns: int = 6,
    panel: int = 300,
    max_points: int = 5000,
) -> Path:
    """One panel per expression: the fitted mesh (grey) with its observed points (red).

    Args:
        path: output PNG, ``panel`` x ``panel`` pixels per panel, at most ``columns`` per row.
        meshes: posed meshes, nphm frame.
        observations: (N_i, 3) points (nphm frame) or None per mesh; at most ``max_points``
            of them are drawn (a fixed random subset).
        titles: one per mesh.
    Returns:
        ``path``.

    The camera looks at the origin from (0.7, 0.2, 2.4): a slightly rotated front view that
    shows the depth of the fit.
    """
    n = len(meshes)
    if n == 0:
        raise ValueError("no meshes to draw")
    rows, cols = grid_shape(n, columns)
    rng = np.random.default_rng(0)
    with off_screen_plotter((rows, cols), (panel, panel)) as pl:
        for i, (mesh, obs, title) in enumerate(zip(meshes, observations, titles)):
            pl.subplot(i // cols, i % cols)
            pl.add_mesh(mesh_polydata(mesh, dtype=np.float32), color=MESH_COLOR, smooth_shading=True)
            if obs is not None and len(obs):
                pts = obs if len(obs) <= max_points else obs[rng.choice(len(obs), max_points, replace=False)]
                pl.add_points(np.asarray(pts, dtype=np.float32), color="red", point_size=2.0)
            pl.add_text(title, font_size=8)
            set_camera(pl, (0.7, 0.2, 2.4))
        return save_screenshot(pl, path)


def mesh_picture(path: PathLike, mesh: trimesh.Trimesh, size: int = 512) -> Path:
    """A ``size`` x ``size`` front view of one mesh (nphm frame), camera at (0, 0, 2.6) looking at
    the origin (random identity samples)."""
    with off_screen_plotter(tile=(size, size)) as pl:
        pl.add_mesh(mesh_polydata(mesh, dtype=np.float32), color=MESH_COLOR, smooth_shading=True)
        set_camera(pl, (0.0, 0.0, 2.6))
        return save_screenshot(pl, path)
