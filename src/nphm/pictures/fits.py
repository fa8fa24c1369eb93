"""Pictures of a fit of one's own scan: where and how far the fit is off, and the alignment.

- :func:`fit_overview_figure`: front, side and top views (rows) of the scan over the grey fit, the
  fit coloured by its distance to the scan, and the scan coloured by its distance to the fit
  (columns; mm, colour bars), with the distance statistics as a caption.
- :func:`alignment_figure`: the aligned input points over the model's mean head, front, side and
  top, for checking an automatic alignment.

Both work in the nphm frame (face towards +z, +y up). The colour scale is that of the error
meshes (:data:`nphm.fitting.report.ERROR_COLORMAP`, 0 to 5 mm by default, grey where the scan
does not cover the fit).
"""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np
import trimesh

from nphm.pictures.base import (
    FRONT, MESH_COLOR, SIDE, UP, PathLike, add_shaded_points, display_mesh, mesh_polydata, off_screen_plotter,
    save_screenshot,
)
from nphm.pictures.scans import _SCALAR_BAR

#: Top view: the camera above the head (+y), the face (+z) towards the top of the image.
TOP = np.array([0.0, 1.0, 0.0])
#: (direction from the scene centre to the camera, name, image up) of the views, in row order.
FIT_VIEWS: Tuple[Tuple[np.ndarray, str, Tuple[float, float, float]], ...] = (
    (FRONT, "front", UP),
    (SIDE, "side (from +x)", UP),
    (TOP, "top (face up)", (0.0, 0.0, 1.0)),
)
SCAN_COLOR = "royalblue"
ALIGNED_COLOR = "darkorange"


def _look(pl, center: np.ndarray, view: Tuple[np.ndarray, str, Tuple[float, float, float]], distance: float) -> None:
    """Camera of the active panel ``distance`` away from ``center`` along the view's direction,
    with the view's image up (the top view cannot use +y)."""
    direction, _, up = view
    pl.camera_position = [tuple(center + distance * direction), tuple(center), tuple(up)]
    pl.camera.view_angle = 30.0


def _frame(points: np.ndarray, factor: float) -> Tuple[np.ndarray, float]:
    """Centre (middle of the bounding box) and camera distance (``factor`` x its diagonal)."""
    lo, hi = points.min(axis=0), points.max(axis=0)
    return 0.5 * (lo + hi), factor * max(float(np.linalg.norm(hi - lo)), 1e-3)


def _subset(points: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of at most ``n`` of ``points`` (a fixed random subset)."""
    return np.arange(len(points)) if len(points) <= n else np.sort(rng.choice(len(points), n, replace=False))


def _stats_lines(name: str, stats: Optional[dict]) -> str:
    """Two caption lines of :func:`nphm.fitting.report.distance_stats`."""
    if not stats:
        return f"{name}: not measured"
    return (f"{name} ({stats['n_points']} points):\nmedian {stats['median']:.2f}, mean {stats['mean']:.2f}, "
            f"90% {stats['p90']:.2f} mm")


def fit_overview_figure(
    path: PathLike,
    scan_points: np.ndarray,
    fit_mesh: trimesh.Trimesh,
    scale_to_mm: float,
    summary: Optional[dict] = None,
    title: str = "",
    max_mm: Optional[float] = None,
    max_points: int = 40_000,
    tile: Tuple[int, int] = (440, 420),
    errors: Optional[Tuple[np.ndarray, np.ndarray]] = None,
) -> Path:
    """Write the overview of one fit: 3 rows (front, side, top) x 3 columns.

    Columns: the scan points (blue) over the fit (grey: where blue shows, the scan lies outside
    the fit; where grey shows, inside or unobserved); the fit coloured by the distance of its
    vertices to the nearest scan point (grey: no scan point covers it); the scan points coloured
    by their distance to the fit's surface. Both colour maps run from 0 to ``max_mm`` mm (colour
    bars; larger distances get the last colour). Captions under the top views: ``title`` and how
    much of the fit the scan covers, the scan-to-fit statistics of the head and of the face
    (``summary``).

    Args:
        path: output PNG, ``tile`` (width, height) pixels per panel.
        scan_points: (N, 3) scan points in the fit's (nphm) frame; at most ``max_points`` drawn.
        fit_mesh: the fitted mesh.
        scale_to_mm: mm per nphm unit (:func:`nphm.fitting.alignment.mm_per_nphm`).
        summary: :func:`nphm.fitting.report.distance_summary` of these points (computed when None).
        max_mm: top of the colour scale (default :data:`nphm.fitting.report.ERROR_MAX_MM`).
        errors: :func:`nphm.fitting.report.vertex_errors` of these points and mesh (computed when None).
    Returns:
        ``path``.

    The cameras look at the centre of the bounding box of the fit and the scan from 1.7 times
    its diagonal (30 degree view angle). A fit of more than
    :data:`nphm.pictures.base.DISPLAY_FACES` faces is drawn simplified (:func:`display_mesh`;
    its vertices' errors from the same scan points); the caption's coverage is the full mesh's.
    """
    from nphm.fitting.report import ERROR_COLORMAP, ERROR_MAX_MM, distance_summary, vertex_errors

    max_mm = ERROR_MAX_MM if max_mm is None else float(max_mm)
    scan_points = np.asarray(scan_points, dtype=np.float64)
    if summary is None:
        summary = distance_summary(scan_points, fit_mesh, scale_to_mm)
    d_scan = np.asarray(summary["per_point_mm"])
    d_vert, observed = errors if errors is not None else vertex_errors(fit_mesh, scan_points, scale_to_mm,
                                                                        summary=summary)
    shown = display_mesh(fit_mesh)
    if shown is not fit_mesh:  # the drawn copy's vertices get their errors from the same feet
        d_shown = vertex_errors(shown, scan_points, scale_to_mm, summary=summary)[0]
    else:
        d_shown = d_vert
    # vertex normals given once, so that no panel computes them for its smooth shading
    fit = mesh_polydata(shown)
    fit.point_data["Normals"] = np.asarray(shown.vertex_normals, dtype=np.float32)
    fit.point_data.active_normals_name = "Normals"
    colored = fit.copy(deep=False)
    colored.point_data["fit to scan [mm]"] = d_shown
    keep = _subset(scan_points, max_points, np.random.default_rng(0))
    import pyvista as pv

    cloud = pv.PolyData(scan_points[keep])
    cloud.point_data["scan to fit [mm]"] = d_scan[keep]
    center, dist = _frame(np.concatenate([np.asarray(shown.vertices), scan_points[keep]]), 1.7)
    bar = dict(_SCALAR_BAR, position_x=0.84)
    heads = ("scan (blue) over the fit (grey)", "fit: distance to the scan",
             "scan: distance to the fit")
    # the caption: one short block under each of the top views (a panel clips its text)
    captions = (
        "\n".join(filter(None, [title, f"fit covered by the scan: {100 * observed.mean():.0f} %"])),
        _stats_lines("scan to fit, head", summary.get("head")),
        _stats_lines("scan to fit, face", summary.get("face")),
    )
    with off_screen_plotter((len(FIT_VIEWS), 3), tile) as pl:
        for row, view in enumerate(FIT_VIEWS):
            for col in range(3):
                pl.subplot(row, col)
                if col == 0:
                    pl.add_mesh(fit, color=MESH_COLOR, interpolation="gouraud")
                    pl.add_points(cloud.points, color=SCAN_COLOR, point_size=2.0)
                elif col == 1:
                    pl.add_mesh(colored, scalars="fit to scan [mm]", cmap=ERROR_COLORMAP, clim=(0.0, max_mm),
                                nan_color=MESH_COLOR, interpolation="gouraud", show_scalar_bar=row == 0,
                                scalar_bar_args=dict(bar, title="fit to scan [mm]"))
                else:
                    pl.add_mesh(cloud, scalars="scan to fit [mm]", cmap=ERROR_COLORMAP, clim=(0.0, max_mm),
                                style="points", point_size=4.0, show_scalar_bar=row == 0,
                                scalar_bar_args=dict(bar, title="scan to fit [mm]"))
                label = f"{view[1]}: {heads[col]}" if col == 0 else (heads[col] if row == 0 else "")
                if label:
                    pl.add_text(label, position="upper_edge", font_size=9)
                _look(pl, center, view, dist)
        for col, text in enumerate(captions):
            pl.subplot(len(FIT_VIEWS) - 1, col)
            pl.add_text(text, position="lower_left", font_size=11)
        return save_screenshot(pl, path)


def alignment_figure(
    path: PathLike,
    aligned_points: np.ndarray,
    reference,
    caption: str = "",
    max_points: int = 6000,
    tile: Tuple[int, int] = (420, 420),
    views: Sequence[Tuple[np.ndarray, str, Tuple[float, float, float]]] = FIT_VIEWS,
) -> Path:
    """Write the aligned input points (orange) over the model's mean head (grey), one panel per
    view (front, side, top): an automatic alignment is right when the orange face lies on the
    grey face, the way up and the size agree.

    Args:
        path: output PNG, ``tile`` (width, height) per panel.
        aligned_points: (N, 3) input points mapped into the nphm frame; at most ``max_points``.
        reference: the mean head: a trimesh mesh, or surface samples with ``points`` and
            ``normals`` (N, 3) such as :func:`nphm.fitting.custom.mean_head_target` (drawn as
            points shaded by a headlight).
        caption: lower left of the last panel, wrapped to its width (e.g.
            :meth:`nphm.fitting.auto_pose.AutoPose.summary`).
    Returns:
        ``path``.

    The cameras look at the centre of the bounding box of the reference from 1.9 times its
    diagonal, so that a misplaced scan shows up off centre.
    """
    aligned = np.asarray(aligned_points, dtype=np.float64)
    aligned = aligned[_subset(aligned, max_points, np.random.default_rng(0))]
    is_mesh = isinstance(reference, trimesh.Trimesh)
    ref_points = np.asarray(reference.vertices if is_mesh else reference.points, dtype=np.float64)
    center, dist = _frame(ref_points, 1.9)
    with off_screen_plotter((1, len(views)), tile, border="interior") as pl:
        for col, view in enumerate(views):
            pl.subplot(0, col)
            if is_mesh:
                pl.add_mesh(mesh_polydata(reference), color=MESH_COLOR, smooth_shading=True)
            else:
                add_shaded_points(pl, ref_points, np.asarray(reference.normals), view[0], point_size=3)
            pl.add_points(aligned, color=ALIGNED_COLOR, point_size=2.0)
            pl.add_text(view[1], position="upper_edge", font_size=10)
            _look(pl, center, view, dist)
        # a panel clips its text: the legend under the first view, the caption under the last,
        # wrapped to the panel's width (about 8 pixels a character)
        width = max(20, tile[0] // 8)
        for col, text in ((0, "orange: the input, aligned; grey: the model's mean head"), (len(views) - 1, caption)):
            pl.subplot(0, col)
            pl.add_text("\n".join(textwrap.fill(line, width) for line in text.splitlines() if line),
                        position="lower_left", font_size=11)
        return save_screenshot(pl, path)
