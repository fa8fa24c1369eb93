"""Numbers and files a person can judge a fit of their own scan by.

Everything is measured in the nphm frame (scan points aligned, fitted mesh) and converted to
millimetres by ``scale_to_mm``, the millimetres per nphm unit of the scan:
:func:`nphm.fitting.alignment.mm_per_nphm` (``1 / scale`` for a scan in mm aligned by a similarity
of ``scale``; 250 at the model's own scale).

* :func:`distance_summary`: every scan point's distance to the fit's surface (exact
  point-to-triangle), with median, mean, 90th percentile and maximum over the whole head and over
  the face (a mask of the scan points: :func:`face_mask`, :func:`near_mask` or an index set).
* :func:`vertex_errors`: the same distances painted onto the fit's vertices (the mean over the
  scan points whose closest points lie near the vertex), and whether the scan saw the vertex at
  all (a frontal scan does not see the back of the head); :func:`write_error_mesh` writes the fit
  coloured by it (:data:`ERROR_COLORMAP`, see there for the colour scale).
* :func:`landmark_residuals`: the landmarks' residuals after the alignment, in mm.
* :func:`fit_report`: all of it with the transform as one JSON-ready dict (``fitting.json``);
  :func:`write_fit_report` also writes the error mesh and the overview picture of one scan.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import trimesh
from scipy.spatial import cKDTree

from nphm.data.frames import Similarity
from nphm.utils.io import PathLike, save_mesh

#: Colour scale of the error meshes and pictures: matplotlib's ``jet`` over
#: [0, :data:`ERROR_MAX_MM`] mm, clipped: 0 mm dark blue, 0.6 mm blue, 1.9 mm cyan, 2.5 mm green,
#: 3.1 mm yellow, 4.4 mm red, 5 mm and more dark red. Vertices no scan point covers:
#: :data:`UNOBSERVED_RGB` (grey). The same map and range as the evaluation pictures
#: (:func:`nphm.pictures.scan_figure`).
ERROR_COLORMAP = "jet"
ERROR_MAX_MM = 5.0
UNOBSERVED_RGB = (170, 170, 170)
#: A fit vertex counts as seen by the scan when a scan point's closest point on the fit lies
#: within this distance of it (or four point spacings of a sparser scan; :func:`vertex_errors`).
COVERAGE_MM = 5.0
#: Scan points within this distance (nphm units, 0.06 = 15 mm) of the model's face anchors
#: make up the face in :func:`face_mask`.
FACE_RADIUS = 0.06

IndexOrMask = Union[np.ndarray, Sequence[int]]


def closest_on_mesh(points: np.ndarray, mesh: trimesh.Trimesh) -> Tuple[np.ndarray, np.ndarray]:
    """Distances (N,) of ``points`` (N, 3) to the surface of ``mesh`` and the closest surface
    points (N, 3) (exact point-to-triangle)."""
    import point_cloud_utils as pcu

    vertices = np.ascontiguousarray(mesh.vertices, dtype=np.float64)
    faces = np.ascontiguousarray(mesh.faces, dtype=np.int64)
    d, fid, bc = pcu.closest_points_on_mesh(np.ascontiguousarray(points, dtype=np.float64), vertices, faces)
    closest = np.einsum("nk,nkd->nd", np.asarray(bc, dtype=np.float64), vertices[faces[np.asarray(fid)]])
    return np.asarray(d, dtype=np.float64), closest


def distance_stats(d_mm: np.ndarray) -> Optional[dict]:
    """``{median, mean, p90, max, n_points}`` of distances (mm); None for no distances."""
    d = np.asarray(d_mm, dtype=np.float64)
    if d.size == 0:
        return None
    return {"median": float(np.median(d)), "mean": float(d.mean()), "p90": float(np.quantile(d, 0.9)),
            "max": float(d.max()), "n_points": int(d.size)}


def _as_mask(selection: Optional[IndexOrMask], n: int) -> Optional[np.ndarray]:
    """A bool (n,) mask from a mask or an index set (None stays None)."""
    if selection is None:
        return None
    sel = np.asarray(selection)
    if sel.dtype == bool:
        if sel.shape != (n,):
            raise ValueError(f"face mask has shape {sel.shape}, expected ({n},)")
        return sel
    mask = np.zeros(n, dtype=bool)
    mask[sel.astype(np.int64)] = True
    return mask


def near_mask(points: np.ndarray, region_points: np.ndarray, radius: float) -> np.ndarray:
    """bool (N,): ``points`` within ``radius`` of any of ``region_points`` (M, 3), e.g. scan
    points near the vertices of a model's face region (same frame and unit)."""
    d, _ = cKDTree(np.asarray(region_points, dtype=np.float64)).query(np.asarray(points, dtype=np.float64))
    return d <= radius


def face_anchors(anchors: np.ndarray, fraction: float = 0.5) -> np.ndarray:
    """The most frontal ``fraction`` of a model's anchors (K, 3), nphm frame (the face looks
    towards +z): those with the largest z, in their order; of the 39 NPHM anchors the eyes,
    nose, mouth, chin and brows, not the ears, temples or the back of the head."""
    anchors = np.asarray(anchors, dtype=np.float64)
    k = max(1, int(round(fraction * len(anchors))))
    return anchors[np.sort(np.argsort(-anchors[:, 2], kind="stable")[:k])]


def face_mask(points_nphm: np.ndarray, anchors: np.ndarray, radius: float = FACE_RADIUS,
              fraction: float = 0.5) -> np.ndarray:
    """bool (N,): the scan points (nphm frame) within ``radius`` of the model's face anchors
    (:func:`face_anchors`; the model's ``anchors(z_id)`` of the fit, or of its mean)."""
    return near_mask(points_nphm, face_anchors(anchors, fraction), radius)


def distance_summary(scan_points: np.ndarray, fit_mesh: trimesh.Trimesh, scale_to_mm: float,
                     face_mask: Optional[IndexOrMask] = None) -> dict:
    """Scan-to-fit distances in mm.

    Args:
        scan_points: (N, 3) scan points in the fit's frame (nphm).
        fit_mesh: the fitted mesh.
        scale_to_mm: millimetres per unit of that frame (:func:`~nphm.fitting.alignment.mm_per_nphm`).
        face_mask: bool (N,) or indices of the face's scan points (None: no face statistics).
    Returns:
        ``{"unit": "mm", "scale_to_mm", "head": stats, "face": stats or None,
        "per_point_mm": (N,) array, "face_mask": bool (N,) or None, "feet": (N, 3) closest points
        on the fit}`` with the stats of :func:`distance_stats` (median, mean, p90, max, n_points).
        The arrays are left out by :func:`fit_report`.
    """
    d, foot = closest_on_mesh(scan_points, fit_mesh)
    d_mm = d * float(scale_to_mm)
    mask = _as_mask(face_mask, len(d_mm))
    return {
        "unit": "mm",
        "scale_to_mm": float(scale_to_mm),
        "head": distance_stats(d_mm),
        "face": distance_stats(d_mm[mask]) if mask is not None else None,
        "per_point_mm": d_mm,
        "face_mask": mask,
        "feet": foot,
    }


def vertex_errors(fit_mesh: trimesh.Trimesh, scan_points: np.ndarray, scale_to_mm: float,
                  coverage_mm: float = COVERAGE_MM, neighbours: int = 8,
                  summary: Optional[dict] = None) -> Tuple[np.ndarray, np.ndarray]:
    """The scan-to-fit distances painted onto the fit's vertices.

    Every scan point has a closest point on the fit (its foot) and a distance to it (that of
    :func:`distance_summary`). A vertex's error is the mean distance of the (at most
    ``neighbours``) scan points whose feet lie within the coverage radius of it: how far the scan
    is from the fit there, on the same scale as the summary and free of the scan's point spacing.
    A vertex without such feet is not covered by the scan (e.g. the back of the head of a frontal
    scan, the neck below the scan's cut). The coverage radius is ``coverage_mm``, or four times
    the median spacing of the feet for a sparser scan.

    ``summary``: :func:`distance_summary` of the same points and mesh, whose distances and feet
    are used instead of computing them again.

    Returns:
        ``(distance_mm (V,), observed bool (V,))``; the distance is NaN where not observed.
    """
    scan_points = np.asarray(scan_points, dtype=np.float64)
    vertices = np.asarray(fit_mesh.vertices, dtype=np.float64)
    if summary is not None:
        d, foot = np.asarray(summary["per_point_mm"]) / float(summary["scale_to_mm"]), np.asarray(summary["feet"])
    else:
        d, foot = closest_on_mesh(scan_points, fit_mesh)
    k = min(neighbours, len(foot))
    gap, idx = cKDTree(foot).query(vertices, k=k)
    gap, idx = gap.reshape(len(vertices), k), idx.reshape(len(vertices), k)
    spacing = np.median(cKDTree(foot).query(foot, k=2)[0][:, 1]) * float(scale_to_mm) if len(foot) > 1 else 0.0
    near = gap * float(scale_to_mm) <= max(coverage_mm, 4.0 * spacing)
    observed = near.any(axis=1)
    total = np.where(near, d[idx], 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        d_mm = np.where(observed, total / near.sum(axis=1), np.nan) * float(scale_to_mm)
    return d_mm, observed


def error_colors(distance_mm: np.ndarray, observed: Optional[np.ndarray] = None,
                 max_mm: float = ERROR_MAX_MM) -> np.ndarray:
    """RGBA uint8 (V, 4) of distances (mm) on :data:`ERROR_COLORMAP` over [0, ``max_mm``];
    unobserved (or NaN) vertices :data:`UNOBSERVED_RGB`."""
    from matplotlib import colormaps

    d = np.asarray(distance_mm, dtype=np.float64)
    seen = np.isfinite(d) if observed is None else np.asarray(observed, dtype=bool) & np.isfinite(d)
    rgba = (colormaps[ERROR_COLORMAP](np.clip(np.nan_to_num(d) / max_mm, 0.0, 1.0)) * 255).round().astype(np.uint8)
    rgba[~seen, :3] = UNOBSERVED_RGB
    rgba[:, 3] = 255
    return rgba


def write_error_mesh(path: PathLike, fit_mesh: trimesh.Trimesh, scan_points: np.ndarray, scale_to_mm: float,
                     max_mm: float = ERROR_MAX_MM, coverage_mm: float = COVERAGE_MM,
                     errors: Optional[Tuple[np.ndarray, np.ndarray]] = None) -> Path:
    """Write the fit with its vertices coloured by their distance to the scan (PLY).

    Colours: :data:`ERROR_COLORMAP` over [0, ``max_mm``] mm (0 dark blue, ``max_mm`` and more
    dark red), grey where no scan point covers the fit (:func:`vertex_errors`). Besides the
    colours every vertex stores its distance (``distance_mm``, float, NaN where not observed) and
    ``observed`` (0/1), so that a viewer (MeshLab, CloudCompare) can colour it on another scale.
    ``errors``: :func:`vertex_errors` of these points and mesh, when computed already.
    """
    d_mm, observed = errors if errors is not None else vertex_errors(fit_mesh, scan_points, scale_to_mm, coverage_mm)
    mesh = trimesh.Trimesh(np.asarray(fit_mesh.vertices), np.asarray(fit_mesh.faces), process=False)
    mesh.visual.vertex_colors = error_colors(d_mm, observed, max_mm)
    mesh.vertex_attributes["distance_mm"] = d_mm.astype(np.float32)
    mesh.vertex_attributes["observed"] = observed.astype(np.uint8)
    path = Path(path)
    if path.suffix.lower() != ".ply":
        raise ValueError(f"{path}: the error mesh is written as .ply (vertex colours and distances)")
    save_mesh(path, mesh)
    return path


def landmark_residuals(landmarks_in: np.ndarray, reference_nphm: np.ndarray, transform: Similarity,
                       scale_to_mm: float) -> dict:
    """Residuals (mm) of landmarks (L, 3, input frame) mapped by ``transform`` against their
    reference positions (L, 3, nphm frame): ``{mean, median, max, per_landmark}``."""
    r = np.linalg.norm(transform.apply(np.asarray(landmarks_in)) - np.asarray(reference_nphm), axis=1)
    r_mm = r * float(scale_to_mm)
    return {"mean": float(r_mm.mean()), "median": float(np.median(r_mm)), "max": float(r_mm.max()),
            "per_landmark": [float(x) for x in r_mm]}


def fit_report(summary: dict, transform: Similarity, alignment: Optional[dict] = None,
               landmarks: Optional[dict] = None, **extra) -> dict:
    """One JSON-ready record of a fit (for ``fitting.json``).

    Args:
        summary: :func:`distance_summary` (its per-point arrays are left out).
        transform: the similarity input -> nphm.
        alignment: how it was found (e.g. :meth:`nphm.fitting.auto_pose.AutoPose.to_dict`).
        landmarks: :func:`landmark_residuals` when landmarks were used.
        extra: further JSON-ready entries.
    """
    distances = {k: v for k, v in summary.items() if k not in ("per_point_mm", "face_mask", "feet")}
    distances["direction"] = "scan points to the fitted surface"
    out = {"distances_mm": distances, "transform": transform.to_dict()}
    if alignment is not None:
        out["alignment"] = alignment
    if landmarks is not None:
        out["landmark_residuals_mm"] = landmarks
    out.update(extra)
    return out


def write_fit_report(out_dir: PathLike, name: str, scan_points: np.ndarray, fit_mesh: trimesh.Trimesh,
                     transform: Similarity, scale_to_mm: float, face_mask: Optional[IndexOrMask] = None,
                     alignment: Optional[dict] = None, landmarks: Optional[dict] = None, figure: bool = True,
                     title: str = "", picture_name: Optional[str] = None) -> dict:
    """Everything about one fitted scan: ``{name}_error.ply`` (:func:`write_error_mesh`),
    ``{picture_name}.png`` (default ``{name}_fit``; :func:`nphm.pictures.fit_overview_figure`,
    unless not ``figure``) in ``out_dir``; returns :func:`fit_report` with the file names added
    (``files``).

    Args: as :func:`distance_summary` and :func:`fit_report` (scan points in the nphm frame).
    """
    out_dir = Path(out_dir)
    summary = distance_summary(scan_points, fit_mesh, scale_to_mm, face_mask)
    errors = vertex_errors(fit_mesh, scan_points, scale_to_mm, summary=summary)
    files = {"error_mesh": write_error_mesh(out_dir / f"{name}_error.ply", fit_mesh, scan_points, scale_to_mm,
                                            errors=errors).name}
    if figure:
        from nphm.pictures import fit_overview_figure

        files["picture"] = fit_overview_figure(out_dir / f"{picture_name or name + '_fit'}.png", scan_points, fit_mesh,
                                               scale_to_mm, summary, title=title or name, errors=errors).name
    return fit_report(summary, transform, alignment, landmarks, files=files)
