"""The per-scan evaluation picture: input, prediction, ground truth and the error map."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import trimesh
from scipy.spatial import cKDTree

from nphm.pictures.base import (
    MESH_COLOR, VIEWS, PathLike, add_shaded_points, off_screen_plotter, polydata, save_screenshot, view_from,
)

_TITLES = ("input", "prediction", "ground truth", "prediction: distance to GT")
_SCALAR_BAR = {"title": "mm", "n_labels": 6, "fmt": "%.1f", "title_font_size": 12, "label_font_size": 10,
               "vertical": True, "position_x": 0.86, "position_y": 0.1, "width": 0.07, "height": 0.75}


def load_input_points(manager, subject: int, expression: int) -> Optional[np.ndarray]:
    """The stored single-view observation (front, plus back if stored) as (N, 3) points in
    the nphm frame, or None when there is none."""
    parts = []
    for back in (False, True):
        try:
            parts.append(manager.load_observation(subject, expression, back=back))
        except (FileNotFoundError, ValueError):
            continue
    return np.concatenate(parts) if parts else None


def scan_figure(
    path: PathLike,
    result,
    pred_mesh: trimesh.Trimesh,
    manager=None,
    input_points: Optional[np.ndarray] = None,
    max_mm: float = 5.0,
    max_points: int = 60_000,
    window: Tuple[int, int] = (1280, 720),
) -> Path:
    """Write the visual report of one scan: a PNG with 2 rows (front, side) x 4 columns.

    Columns: input points, prediction, ground truth (its evaluation samples, shaded), and
    the prediction coloured by the distance of its vertices to the ground-truth samples
    (mm, colour bar clipped at ``max_mm``). The prediction is cut at the neck plane.

    Args:
        path: output PNG of ``window`` (width, height) pixels.
        result: the scan's :class:`~nphm.evaluation.pipeline.ScanEvaluation` (``gt.points``,
            ``gt.normals``: (M, 3), nphm frame; at most ``max_points`` of them are drawn).
        pred_mesh: the prediction mesh, nphm frame.
        manager: DataManager for the single-view input and the neck plane (optional).
        input_points: (N, 3) input points, nphm frame; loaded through ``manager`` when None.
    Returns:
        ``path``.

    The cameras look at the mean of the ground-truth samples from 1.85 times the diagonal
    of their bounding box.
    """
    subject, expression = result.subject, result.expression
    if input_points is None and manager is not None:
        input_points = load_input_points(manager, subject, expression)

    vertices = np.asarray(pred_mesh.vertices, dtype=np.float64)
    faces = np.asarray(pred_mesh.faces)
    if manager is not None:
        keep = manager.neck_keep_mask(vertices, subject, expression, margin=0.0)
        faces = faces[keep[faces].any(axis=1)]
    dist_mm, _ = cKDTree(result.gt.points).query(vertices, workers=-1)
    dist_mm = dist_mm * result.scale_to_mm
    pred_pv = polydata(vertices, faces)
    colored = polydata(vertices, faces)
    colored.point_data["distance to GT [mm]"] = dist_mm

    rng = np.random.default_rng(0)
    gt_idx = rng.permutation(len(result.gt.points))[:max_points]
    gt_points = result.gt.points[gt_idx]
    gt_normals = result.gt.normals[gt_idx]

    center = result.gt.points.mean(axis=0)
    extent = float(np.linalg.norm(result.gt.points.max(axis=0) - result.gt.points.min(axis=0)))
    dist = 1.85 * max(extent, 1e-3)

    m, mf = result.metrics, result.metrics_face
    caption = (f"subject {subject}, expression {expression}\n"
               f"CD-L1 {m['chamfer_l1']:.2f} mm (face {mf['chamfer_l1']:.2f})\n"
               f"NC {m['normals consistency']:.3f}, F@1mm {m['f_score_05']:.3f}")
    with off_screen_plotter((2, 4), window=window) as pl:
        for row, (view_dir, view_name) in enumerate(VIEWS):
            for col in range(4):
                pl.subplot(row, col)
                if col == 0:
                    if input_points is not None and len(input_points):
                        pl.add_points(input_points, color="royalblue", point_size=3, render_points_as_spheres=False)
                    else:
                        pl.add_text("(no input points)", position="left_edge", font_size=8)
                elif col == 1:
                    pl.add_mesh(pred_pv, color=MESH_COLOR, smooth_shading=False)
                elif col == 2:
                    add_shaded_points(pl, gt_points, gt_normals, view_dir, point_size=3)
                else:
                    pl.add_mesh(colored, scalars="distance to GT [mm]", cmap="jet", clim=(0.0, max_mm),
                                smooth_shading=False, show_scalar_bar=row == 0, scalar_bar_args=dict(_SCALAR_BAR))
                label = f"{_TITLES[col]} ({view_name})" if col == 0 else (_TITLES[col] if row == 0 else "")
                if label:
                    pl.add_text(label, position="upper_edge", font_size=9)
                if row == 1 and col == 0:
                    pl.add_text(caption, position="lower_left", font_size=11)
                view_from(pl, center, view_dir, dist)
        return save_screenshot(pl, path)
