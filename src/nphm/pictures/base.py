"""Primitives of off-screen pyvista pictures: conversion, plotters, cameras, screenshots.

Camera conventions (nphm frame): the face looks towards +z and +y is up, so the front view
looks from +z (:data:`FRONT`) and the side view from +x (:data:`SIDE`), both with up = +y.
pyvista is imported lazily: importing :mod:`nphm.pictures` does not load VTK.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional, Sequence, Tuple, Union

import numpy as np
import trimesh

from nphm.utils.io import PathLike, atomic_path

if TYPE_CHECKING:  # pragma: no cover
    import pyvista as pv

#: View directions from the centre of the scene towards the camera (nphm frame).
FRONT = np.array([0.0, 0.0, 1.0])
SIDE = np.array([1.0, 0.0, 0.0])
#: Front and side views with their names, in the row order of the two-view figures.
VIEWS: Tuple[Tuple[np.ndarray, str], ...] = ((FRONT, "front"), (SIDE, "side"))
#: The image's up direction (nphm frame).
UP = (0.0, 1.0, 0.0)
#: Colour of plain (unscored) surfaces.
MESH_COLOR = "lightgrey"


def polydata(vertices: np.ndarray, faces: np.ndarray, dtype=np.float64) -> "pv.PolyData":
    """A triangle surface as pyvista PolyData (vertex order kept).

    Args:
        vertices: (V, 3) vertex positions; faces: (F, 3) vertex indices.
        dtype: dtype of the stored points.
    """
    import pyvista as pv

    faces = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    cells = np.hstack([np.full((len(faces), 1), 3, dtype=np.int64), faces]).ravel()
    return pv.PolyData(np.asarray(vertices, dtype=dtype), cells)


def mesh_polydata(mesh: trimesh.Trimesh, dtype=np.float64) -> "pv.PolyData":
    """``mesh`` as pyvista PolyData (same vertices and faces, in order)."""
    return polydata(mesh.vertices, mesh.faces, dtype=dtype)


#: Faces a mesh keeps for drawing (:func:`display_mesh`): a 256^3 fit has about 340k, far more
#: than the pixels of a panel, and the software renderer's time grows with them.
DISPLAY_FACES = 100_000


def display_mesh(mesh: trimesh.Trimesh, max_faces: int = DISPLAY_FACES) -> trimesh.Trimesh:
    """``mesh`` itself when it has at most ``max_faces`` faces, else a copy for drawing only,
    simplified by vertex clustering (VTK's quadric clustering: one vertex per cell of a grid
    over the bounding box, placed where it best fits the faces of the cell) to about
    ``max_faces`` faces. The cell size follows from the area: a surface of area ``A`` gives
    about ``3 A / h^2`` faces on cells of size ``h`` (measured on marching-cubes heads). For
    pictures only: on a 256^3 fit the simplified mesh lies within 0.01 mm of the original at the
    median and 1 mm at most; never use it for distances.
    """
    faces = np.asarray(mesh.faces)
    if len(faces) <= max_faces:
        return mesh
    from vtkmodules.vtkFiltersCore import vtkQuadricClustering
    import pyvista as pv

    extent = float(np.ptp(np.asarray(mesh.vertices), axis=0).max())
    cell = np.sqrt(3.0 * float(mesh.area) / max_faces)
    divisions = max(8, int(np.ceil(extent / cell)))
    clustering = vtkQuadricClustering()
    clustering.SetInputData(mesh_polydata(mesh, dtype=np.float32))
    clustering.SetAutoAdjustNumberOfDivisions(False)
    clustering.SetNumberOfDivisions(divisions, divisions, divisions)
    clustering.Update()
    out = pv.wrap(clustering.GetOutput())
    tri = np.asarray(out.faces).reshape(-1, 4)[:, 1:]
    return trimesh.Trimesh(np.asarray(out.points, dtype=np.float64), tri, process=False)


def grid_shape(n: int, max_columns: int) -> Tuple[int, int]:
    """``(rows, columns)`` of a row-major grid of ``n`` panels, at most ``max_columns`` wide."""
    cols = max(1, min(n, max_columns))
    return max(1, -(-n // cols)), cols


@contextmanager
def off_screen_plotter(
    shape: Tuple[int, int] = (1, 1),
    tile: Tuple[int, int] = (400, 400),
    border: Union[bool, str] = False,
    window: Optional[Tuple[int, int]] = None,
) -> Iterator["pv.Plotter"]:
    """An off-screen plotter with ``shape`` (rows, columns) panels of ``tile`` (width, height)
    pixels each, or a ``window`` (width, height) in all; closed when the block ends.

    ``border``: pyvista's border mode (False: none; "interior": lines between the panels).
    """
    import pyvista as pv

    pv.OFF_SCREEN = True
    rows, cols = shape
    size = list(window) if window is not None else [tile[0] * cols, tile[1] * rows]
    pl = pv.Plotter(off_screen=True, shape=(rows, cols), window_size=size, border=border)
    try:
        yield pl
    finally:
        pl.close()


def set_camera(
    pl: "pv.Plotter",
    position: Sequence[float],
    focal_point: Sequence[float] = (0.0, 0.0, 0.0),
    view_angle: Optional[float] = None,
    zoom: Optional[float] = None,
) -> None:
    """Camera of the active panel at ``position`` looking at ``focal_point`` (both (3,), nphm
    frame), up = +y; optionally a vertical ``view_angle`` (degrees) and a ``zoom`` factor."""
    pl.camera_position = [tuple(position), tuple(focal_point), UP]
    if view_angle is not None:
        pl.camera.view_angle = view_angle
    if zoom is not None:
        pl.camera.zoom(zoom)


def view_from(pl: "pv.Plotter", center: np.ndarray, direction: np.ndarray, distance: float,
              view_angle: float = 30.0) -> None:
    """Look at ``center`` (3,) from ``center + distance * direction`` (e.g. :data:`FRONT`)."""
    set_camera(pl, center + distance * direction, center, view_angle=view_angle)


def add_shaded_points(pl: "pv.Plotter", points: np.ndarray, normals: np.ndarray, view_dir: np.ndarray,
                      point_size: float = 3) -> None:
    """A grey point cloud lit by a headlight along ``view_dir`` (3,) (unlit clouds look flat).

    Args:
        points, normals: (N, 3), nphm frame; the grey level is ``0.25 + 0.75 |n . view_dir|``.
    """
    import pyvista as pv

    cloud = pv.PolyData(points)
    cloud.point_data["shade"] = 0.25 + 0.75 * np.abs(normals @ view_dir)
    pl.add_mesh(cloud, scalars="shade", cmap="gray", clim=(0, 1), point_size=point_size,
                style="points", show_scalar_bar=False)


def save_screenshot(pl: "pv.Plotter", path: PathLike) -> Path:
    """Write the plotter's image to ``path`` (PNG) atomically; returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        pl.screenshot(str(tmp))
    return path


def quiet_vtk() -> None:
    """Show only VTK errors on stderr (no "bad X server connection" warnings without a display)."""
    from vtkmodules.vtkCommonCore import vtkLogger

    vtkLogger.SetStderrVerbosity(vtkLogger.VERBOSITY_ERROR)
