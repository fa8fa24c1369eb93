"""Preview meshes during training and off-screen PNG renders of them (pyvista)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import trimesh

from nphm.utils.io import atomic_path, save_mesh

PathLike = Union[str, os.PathLike]

#: Front and side view directions (nphm frame: +z is the face's front, +y up).
VIEWS = ((np.array([0.0, 0.0, 1.0]), "front"), (np.array([1.0, 0.0, 0.0]), "side"))


def save_preview_mesh(path: PathLike, mesh: Optional[trimesh.Trimesh]) -> Optional[Path]:
    """Write ``mesh`` (skipped when None); returns the path written."""
    if mesh is None:
        return None
    save_mesh(path, mesh)
    return Path(path)


def render_meshes(
    path: PathLike,
    meshes: Sequence[Tuple[str, Optional[trimesh.Trimesh]]],
    title: str = "",
    tile: Tuple[int, int] = (320, 320),
    colors: Optional[Sequence[str]] = None,
    max_columns: int = 6,
) -> Path:
    """Render labelled meshes in a grid: at most ``max_columns`` per row, each mesh seen from
    the front and (in the row below) from the side.

    A ``None`` mesh is shown as an empty tile with its label (e.g. no surface yet).
    The camera looks at the centre of all meshes from a distance fitted to their extent.
    """
    import pyvista as pv

    pv.OFF_SCREEN = True
    present = [m for _, m in meshes if m is not None and len(m.vertices)]
    if present:
        verts = np.concatenate([np.asarray(m.vertices) for m in present])
        center = 0.5 * (verts.min(axis=0) + verts.max(axis=0))
        extent = float(np.linalg.norm(verts.max(axis=0) - verts.min(axis=0)))
    else:
        center, extent = np.zeros(3), 1.0
    dist = 1.9 * max(extent, 1e-3)
    n_cols = max(1, min(len(meshes), max_columns))
    n_blocks = max(1, -(-len(meshes) // n_cols))
    n_rows = n_blocks * len(VIEWS)
    pl = pv.Plotter(off_screen=True, shape=(n_rows, n_cols), window_size=[tile[0] * n_cols, tile[1] * n_rows],
                    border=False)
    for i, (label, mesh) in enumerate(meshes):
        block, col = divmod(i, n_cols)
        for v, (view, _) in enumerate(VIEWS):
            pl.subplot(block * len(VIEWS) + v, col)
            if mesh is not None and len(mesh.faces):
                faces = np.hstack([np.full((len(mesh.faces), 1), 3), np.asarray(mesh.faces)]).ravel()
                color = colors[i] if colors is not None else "lightgrey"
                pl.add_mesh(pv.PolyData(np.asarray(mesh.vertices, dtype=np.float64), faces), color=color,
                            smooth_shading=True)
            else:
                pl.add_text("(no surface)", position="left_edge", font_size=9)
            if v == 0:
                pl.add_text(label, position="upper_edge", font_size=9)
            if i == 0 and v == 1 and title:
                pl.add_text(title, position="lower_left", font_size=8)
            pl.camera_position = [tuple(center + dist * view), tuple(center), (0.0, 1.0, 0.0)]
            pl.camera.view_angle = 30.0
    path = Path(path)
    with atomic_path(path) as tmp:
        pl.screenshot(str(tmp))
    pl.close()
    return path


def try_mesh(fn, *args, **kwargs) -> Tuple[Optional[trimesh.Trimesh], str]:
    """``fn(*args, **kwargs)`` or ``(None, reason)`` when the level set has no surface yet."""
    try:
        return fn(*args, **kwargs), ""
    except ValueError as e:
        return None, str(e)
