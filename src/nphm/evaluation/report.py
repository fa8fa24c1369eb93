"""The evaluation's summary pages (markdown and HTML) with the metric tables.

The per-scan pictures are drawn by :func:`nphm.pictures.scan_figure`.
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from nphm.utils.io import PathLike, atomic_path
from nphm.utils.tables import format_metric, markdown_table

__all__ = ["write_summary_pages", "SUMMARY_COLUMNS"]


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


def _html_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    out = ["<table>", "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"]
    for r in rows:
        cells = [c if isinstance(c, str) and c.startswith("<")
                 else html.escape(c if isinstance(c, str) else format_metric(c)) for c in r]
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
        failures: the failed scans of the ledger, ``failures.json`` entries (listed at the end).
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
          markdown_table(total_header, total_rows, cell=format_metric), "", "## Per subject", "",
          markdown_table(subj_header, subj_rows, cell=format_metric), "", "## Per scan", "",
          markdown_table(scan_header, scan_rows_md, cell=format_metric), ""]
    if fail_rows:
        md += ["## Failed scans", "",
               markdown_table(["subject", "expression", "error"], fail_rows, cell=format_metric), ""]
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
