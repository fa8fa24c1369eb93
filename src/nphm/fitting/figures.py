"""Pictures of fits: observed points over the fitted meshes, and random identity samples."""
from __future__ import annotations

import math
import os
from typing import Optional, Sequence, Union

import numpy as np
import trimesh

from nphm.utils.io import atomic_path

PathLike = Union[str, os.PathLike]


def _pv_mesh(mesh: trimesh.Trimesh):
    import pyvista as pv

    faces = np.hstack([np.full((len(mesh.faces), 1), 3), np.asarray(mesh.faces)]).astype(np.int64)
    return pv.PolyData(np.asarray(mesh.vertices, dtype=np.float32), faces.ravel())


def _frontal_camera(pl, distance: float = 2.4) -> None:
    # nphm frame: face towards +z, +y up; a slightly rotated view shows the depth of the fit.
    pl.camera.position = (0.7, 0.2, distance)
    pl.camera.focal_point = (0.0, 0.0, 0.0)
    pl.camera.up = (0.0, 1.0, 0.0)


def fit_figure(
    path: PathLike,
    meshes: Sequence[trimesh.Trimesh],
    observations: Sequence[Optional[np.ndarray]],
    titles: Sequence[str],
    columns: int = 6,
    panel: int = 300,
    max_points: int = 5000,
) -> None:
    """One panel per expression: the fitted mesh (grey) with its observed points (red).

    Args:
        meshes: posed meshes (nphm frame); observations: (N_i, 3) points or None per mesh.
    """
    import pyvista as pv

    pv.OFF_SCREEN = True
    n = len(meshes)
    if n == 0:
        raise ValueError("no meshes to draw")
    cols = min(columns, n)
    rows = math.ceil(n / cols)
    pl = pv.Plotter(off_screen=True, shape=(rows, cols), window_size=[panel * cols, panel * rows], border=False)
    rng = np.random.default_rng(0)
    for i, (mesh, obs, title) in enumerate(zip(meshes, observations, titles)):
        pl.subplot(i // cols, i % cols)
        pl.add_mesh(_pv_mesh(mesh), color="lightgrey", smooth_shading=True)
        if obs is not None and len(obs):
            pts = obs if len(obs) <= max_points else obs[rng.choice(len(obs), max_points, replace=False)]
            pl.add_points(np.asarray(pts, dtype=np.float32), color="red", point_size=2.0)
        pl.add_text(title, font_size=8)
        _frontal_camera(pl)
    with atomic_path(path) as tmp:
        pl.screenshot(str(tmp))
    pl.close()


def mesh_picture(path: PathLike, mesh: trimesh.Trimesh, size: int = 512) -> None:
    """A frontal picture of one mesh (random identity samples)."""
    import pyvista as pv

    pv.OFF_SCREEN = True
    pl = pv.Plotter(off_screen=True, window_size=[size, size])
    pl.add_mesh(_pv_mesh(mesh), color="lightgrey", smooth_shading=True)
    pl.camera.position = (0.0, 0.0, 2.6)
    pl.camera.focal_point = (0.0, 0.0, 0.0)
    pl.camera.up = (0.0, 1.0, 0.0)
    with atomic_path(path) as tmp:
        pl.screenshot(str(tmp))
    pl.close()
