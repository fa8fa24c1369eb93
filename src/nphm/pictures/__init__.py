"""Off-screen pictures (pyvista): the one place that draws PNGs of meshes and point clouds.

- :mod:`~nphm.pictures.base`: the primitives (trimesh -> PolyData, plotters, the nphm-frame
  cameras: front = +z, side = +x, up = +y; shaded point clouds, atomic screenshots).
- :mod:`~nphm.pictures.meshes`: labelled front/side grids (training previews, demo and
  benchmark comparisons), fits with their observations, single meshes.
- :mod:`~nphm.pictures.scans`: the per-scan evaluation report.
- :mod:`~nphm.pictures.fits`: a fit of one's own scan (scan over fit, distances in mm, front /
  side / top) and the check of an automatic alignment.
- :mod:`~nphm.pictures.dataset`: scans, registrations, FLAME fits and observations of a
  dataset, through a DataManager.
- :mod:`~nphm.pictures.heads`: the ICT head model's anchors (``docs/images/ict_anchors.png``).

pyvista is imported only when a picture is drawn.
"""
from nphm.pictures.dataset import expression_scans_figure, observations_figure, scan_registration_flame_figure
from nphm.pictures.fits import alignment_figure, fit_overview_figure
from nphm.pictures.heads import ict_anchor_figure
from nphm.pictures.meshes import fit_figure, mesh_picture, render_mesh_grid
from nphm.pictures.scans import load_input_points, scan_figure

__all__ = [
    "render_mesh_grid", "fit_figure", "mesh_picture", "scan_figure", "load_input_points",
    "scan_registration_flame_figure", "expression_scans_figure", "observations_figure", "ict_anchor_figure",
    "fit_overview_figure", "alignment_figure",
]
