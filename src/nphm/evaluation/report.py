"""Visual reports: one PNG per scan and a summary page with the metric tables.

Pictures are rendered off screen with pyvista.
"""
from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import trimesh
from scipy.spatial import cKDTree

from nphm.utils.io import atomic_path

__all__ = ["scan_figure", "write_summary_pages", "markdown_table", "SUMMARY_COLUMNS"]

PathLike = Union[str, os.PathLike]

#: Columns of the summary tables: (metric key, header).
SUMMARY_COLUMNS: Tuple[Tuple[str, str], ...] = (
    ("chamfer_l1", "CD-L1 [mm]"),
    ("chamfer_l2", "CD-L2 [mm²]"),
    ("normals consistency", "NC"),
    ("f_score_05", "F@1mm"),
    ("f_score_10", "F@5mm"),
    ("f_score_15", "F@10mm"),
    ("f_score_20", "F@20mm"),
)


def _shaded_points(points: np.ndarray, normals: np.ndarray, view_dir: np.ndarray) -> np.ndarray:
    """Grey level per point from a headlight (unlit point clouds would look flat)."""
    return 0.25 + 0.75 * np.abs(normals @ view_dir)


def _load_input(manager, subject: int, expression: int) -> Optional[np.ndarray]:
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
) -> None:
    """Write the visual report of one scan: a PNG with 2 rows (front, side) x 4 columns.

    Columns: input points, prediction, ground truth (its evaluation samples, shaded), and
    the prediction coloured by the distance of its vertices to the ground-truth samples
    (mm, colour bar clipped at ``max_mm``). The prediction is cut at the neck plane.

    Args:
        path: output PNG.
        result: the scan's :class:`~nphm.evaluation.pipeline.ScanEvaluation`.
        pred_mesh: the prediction mesh, nphm frame.
        manager: DataManager for the single-view input and the neck plane (optional).
        input_points: (N, 3) input points; loaded through ``manager`` when None.
    """
    import pyvista as pv

    pv.OFF_SCREEN = True
    subject, expression = result.subject, result.expression
    if input_points is None and manager is not None:
        input_points = _load_input(manager, subject, expression)

    vertices = np.asarray(pred_mesh.vertices, dtype=np.float64)
    faces = np.asarray(pred_mesh.faces)
    if manager is not None:
        keep = manager.neck_keep_mask(vertices, subject, expression, margin=0.0)
        faces = faces[keep[faces].any(axis=1)]
    dist_mm, _ = cKDTree(result.gt.points).query(vertices, workers=-1)
    dist_mm = dist_mm * result.scale_to_mm
    pv_faces = np.hstack([np.full((len(faces), 1), 3), faces]).ravel()
    pred_pv = pv.PolyData(vertices, pv_faces)
    colored = pv.PolyData(vertices, pv_faces)
    colored.point_data["distance to GT [mm]"] = dist_mm

    rng = np.random.default_rng(0)
    gt_idx = rng.permutation(len(result.gt.points))[:max_points]
    gt_points = result.gt.points[gt_idx]
    gt_normals = result.gt.normals[gt_idx]

    center = result.gt.points.mean(axis=0)
    extent = float(np.linalg.norm(result.gt.points.max(axis=0) - result.gt.points.min(axis=0)))
    dist = 1.85 * max(extent, 1e-3)
    views = [
        (np.array([0.0, 0.0, 1.0]), "front"),
        (np.array([1.0, 0.0, 0.0]), "side"),
    ]
    titles = ["input", "prediction", "ground truth", "prediction: distance to GT"]

    m, mf = result.metrics, result.metrics_face
    caption = (f"subject {subject}, expression {expression}\n"
               f"CD-L1 {m['chamfer_l1']:.2f} mm (face {mf['chamfer_l1']:.2f})\n"
               f"NC {m['normals consistency']:.3f}, F@1mm {m['f_score_05']:.3f}")
    pl = pv.Plotter(off_screen=True, shape=(2, 4), window_size=list(window), border=False)
    for row, (view_dir, view_name) in enumerate(views):
        for col in range(4):
            pl.subplot(row, col)
            if col == 0:
                if input_points is not None and len(input_points):
                    pl.add_points(input_points, color="royalblue", point_size=3, render_points_as_spheres=False)
                else:
                    pl.add_text("(no input points)", position="left_edge", font_size=8)
            elif col == 1:
                pl.add_mesh(pred_pv, color="lightgrey", smooth_shading=False)
            elif col == 2:
                cloud = pv.PolyData(gt_points)
                cloud.point_data["shade"] = _shaded_points(gt_points, gt_normals, view_dir)
                pl.add_mesh(cloud, scalars="shade", cmap="gray", clim=(0, 1), point_size=3,
                            style="points", show_scalar_bar=False)
            else:
                pl.add_mesh(
                    colored,
                    scalars="distance to GT [mm]",
                    cmap="jet",
                    clim=(0.0, max_mm),
                    smooth_shading=False,
                    show_scalar_bar=row == 0,
                    scalar_bar_args={"title": "mm", "n_labels": 6, "fmt": "%.1f",
                                     "title_font_size": 12, "label_font_size": 10, "vertical": True,
                                     "position_x": 0.86, "position_y": 0.1, "width": 0.07, "height": 0.75},
                )
            label = f"{titles[col]} ({view_name})" if col == 0 else (titles[col] if row == 0 else "")
            if label:
                pl.add_text(label, position="upper_edge", font_size=9)
            if row == 1 and col == 0:
                pl.add_text(caption, position="lower_left", font_size=11)
            pl.camera_position = [tuple(center + dist * view_dir), tuple(center), (0.0, 1.0, 0.0)]
            pl.camera.view_angle = 30.0
    path = Path(path)
    with atomic_path(path) as tmp:
        pl.screenshot(str(tmp))
    pl.close()


def _fmt(value) -> str:
    if value is None:
        return "-"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if np.isnan(v):
        return "nan"
    return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A GitHub-flavoured markdown table; numbers with 3 decimals."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(c) if not isinstance(c, str) else c for c in r) + " |")
    return "\n".join(lines)


def _html_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    out = ["<table>", "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"]
    for r in rows:
        cells = [c if isinstance(c, str) and c.startswith("<") else html.escape(c if isinstance(c, str) else _fmt(c))
                 for c in r]
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def write_summary_pages(
    eval_dir: PathLike,
    totals: Dict[str, Dict[str, float]],
    per_subject: Dict[str, Dict[int, Dict[str, float]]],
    per_scan: List[Dict[str, object]],
    failures: Sequence[Dict[str, object]] = (),
) -> Tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` into ``eval_dir``.

    Args:
        totals: ``{"head": metrics, "face": metrics}`` means over all scans (with ``n_scans``).
        per_subject: ``{"head": {subject: metrics}, "face": {...}}`` per-subject means.
        per_scan: rows ``{"subject", "expression", "head": metrics, "face": metrics}``; the
            scan's ``report.png`` (relative to ``eval_dir``) is linked when it exists.
        failures: entries of ``failures.json`` (listed at the end).
    Returns:
        paths of the markdown and HTML pages.
    """
    eval_dir = Path(eval_dir)
    keys = [k for k, _ in SUMMARY_COLUMNS]
    names = [n for _, n in SUMMARY_COLUMNS]

    total_header = ["region", "scans"] + names
    total_rows = [[region, str(int(totals[region].get("n_scans", 0)))] + [totals[region].get(k) for k in keys]
                  for region in ("head", "face") if region in totals]
    subj_header = ["subject", "scans", "CD-L1 head", "CD-L1 face", "NC head", "NC face", "F@1mm head", "F@1mm face"]
    subj_rows = []
    for subject in sorted(per_subject.get("head", {})):
        h = per_subject["head"][subject]
        f = per_subject.get("face", {}).get(subject, {})
        subj_rows.append([str(subject), str(int(h.get("n_scans", 0))), h.get("chamfer_l1"), f.get("chamfer_l1"),
                          h.get("normals consistency"), f.get("normals consistency"),
                          h.get("f_score_05"), f.get("f_score_05")])

    scan_rows_md, scan_rows_html = [], []
    for item in per_scan:
        rel = Path(str(item["subject"])) / f"expression_{item['expression']}" / "report.png"
        has_png = (eval_dir / rel).is_file()
        h, f = item.get("head", {}), item.get("face", {})
        base = [str(item["subject"]), str(item["expression"]), h.get("chamfer_l1"), f.get("chamfer_l1"),
                h.get("normals consistency"), h.get("f_score_05")]
        scan_rows_md.append(base + [f"[png]({rel.as_posix()})" if has_png else "-"])
        link = (f'<a href="{html.escape(rel.as_posix())}"><img src="{html.escape(rel.as_posix())}" width="480"></a>'
                if has_png else "-")
        scan_rows_html.append(base + [link])
    scan_header = ["subject", "expression", "CD-L1 head", "CD-L1 face", "NC head", "F@1mm head", "report"]

    fail_rows = [[str(x.get("subject")), str(x.get("expression")), str(x.get("error"))] for x in failures]

    md = ["# Evaluation report", "", "Means over all evaluated scans (distances in mm).", "",
          markdown_table(total_header, total_rows), "", "## Per subject", "",
          markdown_table(subj_header, subj_rows), "", "## Per scan", "",
          markdown_table(scan_header, scan_rows_md), ""]
    if fail_rows:
        md += ["## Failed scans", "", markdown_table(["subject", "expression", "error"], fail_rows), ""]
    md_path = eval_dir / "report.md"
    with atomic_path(md_path) as tmp:
        tmp.write_text("\n".join(md))

    page = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'><title>Evaluation report</title>",
            "<style>body{font-family:sans-serif} table{border-collapse:collapse;margin-bottom:1em}"
            " td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}</style></head><body>",
            "<h1>Evaluation report</h1><p>Means over all evaluated scans (distances in mm).</p>",
            _html_table(total_header, total_rows), "<h2>Per subject</h2>", _html_table(subj_header, subj_rows),
            "<h2>Per scan</h2>", _html_table(scan_header, scan_rows_html)]
    if fail_rows:
        page += ["<h2>Failed scans</h2>", _html_table(["subject", "expression", "error"], fail_rows)]
    page.append("</body></html>")
    html_path = eval_dir / "report.html"
    with atomic_path(html_path) as tmp:
        tmp.write_text("\n".join(page))
    return md_path, html_path
