"""The ICT head model's anchor picture (``docs/images/ict_anchors.png``).

The template's neutral skin in the nphm frame with its 39 anchors (red, numbered), the
release's mean anchors (blue) and the part below the neck cut plane (tan), from the front, the
side and the back. Regenerate it with ``python -m nphm.cli.ict_anchor_picture``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np

from nphm.data.heads import IctHeadModel, load_ict_model, load_release_anchors
from nphm.pictures.base import MESH_COLOR, PathLike, off_screen_plotter, polydata, save_screenshot, view_from

#: (direction from the scene centre to the camera, title), nphm frame, up = +y
ICT_ANCHOR_VIEWS: Tuple[Tuple[Tuple[float, float, float], str], ...] = (
    ((0.0, 0.0, 1.0), "front"),
    ((1.0, 0.0, 0.0), "side (from +x, the subject's left)"),
    ((-0.55, 0.0, -0.85), "back (3/4, from the subject's right)"),
)
#: where the cameras look (nphm frame), and from how far
_CENTER = np.array([0.0, -0.08, -0.12])
_DISTANCE = 2.6
#: mm per nphm unit
_MM = 250.0


def ict_anchor_figure(
    path: PathLike,
    model: Optional[IctHeadModel] = None,
    release_anchors: Optional[np.ndarray] = None,
    views: Sequence[Tuple[Tuple[float, float, float], str]] = ICT_ANCHOR_VIEWS,
    tile: Tuple[int, int] = (700, 850),
) -> Path:
    """Write the anchor picture of the ICT template: one panel per view.

    Args:
        path: output PNG, ``tile`` (width, height) pixels per panel.
        model: the head model (default: the shipped one); its
            neutral skin is drawn, grey above the neck cut plane and tan below it.
        release_anchors: (39, 3) nphm frame (default: the shipped release means).
        views: camera directions (from the scene centre) and titles.
    Returns:
        ``path``.

    The cameras look at (0, -0.08, -0.12) from 2.6 units away (30 degree view angle); each
    panel numbers the anchors on the side facing its camera.
    """
    model = load_ict_model() if model is None else model
    release = load_release_anchors() if release_anchors is None else np.asarray(release_anchors)
    faces = model.region_faces("skin")
    origin, normal = model.throat_plane()
    kept = ((model.neutral[faces] - origin) @ normal > 0).all(axis=1)
    above, below = polydata(model.neutral, faces[kept]), polydata(model.neutral, faces[~kept])

    ours = model.anchors()
    residual = _MM * np.linalg.norm(ours - release, axis=1)
    labels = [str(k) for k in range(len(ours))]
    with off_screen_plotter((1, len(views)), tile, border="interior") as pl:
        for i, (direction, title) in enumerate(views):
            d = np.asarray(direction, dtype=np.float64)
            d /= np.linalg.norm(d)
            pl.subplot(0, i)
            pl.add_mesh(above, color=MESH_COLOR, smooth_shading=True)
            pl.add_mesh(below, color="tan", smooth_shading=True)
            pl.add_points(release, color="blue", point_size=13, render_points_as_spheres=True)
            pl.add_points(ours, color="red", point_size=10, render_points_as_spheres=True)
            facing = (ours - _CENTER) @ d > -0.05
            pl.add_point_labels(ours[facing] + 0.025 * d, [labels[k] for k in np.flatnonzero(facing)],
                                font_size=12, show_points=False, shape_opacity=0.0, text_color="black")
            view_from(pl, _CENTER, d, _DISTANCE)
            pl.add_text(title, font_size=11)
        pl.subplot(0, 0)
        pl.add_text(f"red: ICT anchors, blue: release means; {residual.mean():.1f} mm mean, "
                    f"{residual.max():.1f} mm max; tan: below the neck cut plane", position="lower_left", font_size=11)
        return save_screenshot(pl, path)
