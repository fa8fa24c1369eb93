"""Gathering per-scan metrics into totals, per-subject tables and a summary page.

Reads ``RESULTS_DIR/evaluation/{subject}/expression_{e}/metrics.json`` and
``metrics_face.json`` (release layout, so old result folders work too) and writes into
``RESULTS_DIR/evaluation/``:

- ``total_metrics.csv`` / ``total_metrics_face.csv``: one row, the mean over all scans
  (the release's totals: every scan counts once, not every subject);
- ``per_subject_metrics.csv`` / ``per_subject_metrics_face.csv``: per subject the mean
  over its expressions, with the number of scans;
- ``report.md`` / ``report.html``: the tables and links to the per-scan pictures, and the scans
  whose evaluation failed (from the evaluation's ledger, all runs: ``evaluation/ledger``).
"""
from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from nphm.evaluation.metrics import METRIC_KEYS
from nphm.layout import METRIC_FILES, evaluation_dir
from nphm.evaluation.report import SUMMARY_COLUMNS, write_summary_pages
from nphm.utils.io import PathLike, atomic_path
from nphm.utils.tables import format_metric, markdown_table

__all__ = ["GatheredMetrics", "collect_metrics", "mean_metrics", "gather", "totals_markdown", "per_subject_markdown"]

REGIONS = METRIC_FILES
_EXPR_DIR = re.compile(r"^expression_(-?\d+)$")


@dataclass
class GatheredMetrics:
    """Per-scan metrics ``{(subject, expression): {"head": {...}, "face": {...}}}`` plus
    their aggregates; ``problems`` lists unreadable files, ``failures`` the ledger's failed scans
    (``failures.json`` entries: subject, expression, error, role, file) and ``skipped`` its
    reasoned skips (e.g. predictions without ground truth), one line each."""

    scans: Dict[Tuple[int, int], Dict[str, Dict[str, float]]] = field(default_factory=dict)
    totals: Dict[str, Dict[str, float]] = field(default_factory=dict)
    per_subject: Dict[str, Dict[int, Dict[str, float]]] = field(default_factory=dict)
    problems: List[str] = field(default_factory=list)
    failures: List[Dict[str, object]] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)


def collect_metrics(eval_dir: PathLike, subjects: Optional[Sequence[int]] = None) -> GatheredMetrics:
    """Read every scan's metric files below ``eval_dir`` (optionally only ``subjects``)."""
    eval_dir = Path(eval_dir)
    if not eval_dir.is_dir():
        raise FileNotFoundError(f"evaluation folder not found: {eval_dir}")
    wanted = None if subjects is None else {int(s) for s in subjects}
    out = GatheredMetrics()
    for subject_dir in sorted(eval_dir.iterdir()):
        if not subject_dir.is_dir() or not re.fullmatch(r"-?\d+", subject_dir.name):
            continue
        subject = int(subject_dir.name)
        if wanted is not None and subject not in wanted:
            continue
        for expr_dir in sorted(subject_dir.iterdir()):
            m = _EXPR_DIR.match(expr_dir.name)
            if not m or not expr_dir.is_dir():
                continue
            expression = int(m.group(1))
            entry = {}
            for region, name in REGIONS:
                path = expr_dir / name
                if not path.is_file():
                    continue
                try:
                    data = json.loads(path.read_text())
                    if not isinstance(data, dict):
                        raise ValueError("expected a JSON object")
                    entry[region] = {k: float(v) for k, v in data.items()}
                except (ValueError, TypeError) as e:
                    out.problems.append(f"{path}: unreadable ({e})")
            if "head" in entry:
                out.scans[(subject, expression)] = entry
    return out


def _ordered_keys(dicts: Sequence[Dict[str, float]]) -> List[str]:
    present = set().union(*dicts) if dicts else set()
    return [k for k in METRIC_KEYS if k in present] + sorted(present - set(METRIC_KEYS))


def mean_metrics(dicts: Sequence[Dict[str, float]]) -> Dict[str, float]:
    """Key-wise mean over the dictionaries that have the key; ``n_scans`` = len(dicts)."""
    out: Dict[str, float] = {}
    for k in _ordered_keys(dicts):
        values = [d[k] for d in dicts if k in d]
        out[k] = math.fsum(values) / len(values)
    out["n_scans"] = len(dicts)
    return out


def _aggregate(g: GatheredMetrics) -> None:
    for region, _ in REGIONS:
        items = [(s, e, v[region]) for (s, e), v in sorted(g.scans.items()) if region in v]
        if not items:
            continue
        g.totals[region] = mean_metrics([m for _, _, m in items])
        by_subject: Dict[int, List[Dict[str, float]]] = {}
        for s, _, m in items:
            by_subject.setdefault(s, []).append(m)
        g.per_subject[region] = {s: mean_metrics(ms) for s, ms in sorted(by_subject.items())}


def _write_csv(path: Path, rows: List[Dict[str, object]], columns: List[str]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())


def totals_markdown(g: GatheredMetrics) -> str:
    """Markdown table of the totals (head and face) in the paper's columns."""
    header = ["region", "scans"] + [n for _, n in SUMMARY_COLUMNS]
    rows = [[region, str(int(t["n_scans"]))] + [t.get(k) for k, _ in SUMMARY_COLUMNS]
            for region, t in g.totals.items()]
    return markdown_table(header, rows, cell=format_metric)


def gather(results_dir: PathLike, subjects: Optional[Sequence[int]] = None, pages: bool = True) -> GatheredMetrics:
    """Collect, aggregate and write the CSV files and summary pages of a results folder.

    Raises:
        FileNotFoundError: no ``evaluation`` folder or no finished scan in it.
    """
    eval_dir = evaluation_dir(results_dir)
    g = collect_metrics(eval_dir, subjects)
    if not g.scans:
        raise FileNotFoundError(f"no evaluated scans (metrics.json) found below {eval_dir}")
    _aggregate(g)
    for region, suffix in (("head", ""), ("face", "_face")):
        if region not in g.totals:
            continue
        keys = [k for k in g.totals[region] if k != "n_scans"]
        _write_csv(eval_dir / f"total_metrics{suffix}.csv", [g.totals[region]], keys)
        rows = [{"subject": s, **m} for s, m in g.per_subject[region].items()]
        _write_csv(eval_dir / f"per_subject_metrics{suffix}.csv", rows, ["subject", "n_scans"] + keys)
    from nphm.evaluation.pipeline import evaluation_folder, failure_records

    batch = evaluation_folder(results_dir, claims=False)
    wanted = None if subjects is None else {int(s) for s in subjects}
    g.failures = [f for f in failure_records(batch) if wanted is None or f["subject"] in wanted]
    g.skipped = [e.line() for e in batch.ledger.with_status("skipped", wanted)]
    if pages:
        per_scan = [{"subject": s, "expression": e, **v} for (s, e), v in sorted(g.scans.items())]
        write_summary_pages(eval_dir, g.totals, g.per_subject, per_scan, g.failures)
    return g


def per_subject_markdown(g: GatheredMetrics) -> str:
    """Markdown table of the per-subject means (head and face Chamfer-L1, NC, F@1mm)."""
    header = ["subject", "scans", "CD-L1 head", "CD-L1 face", "NC head", "NC face", "F@1mm head", "F@1mm face"]
    rows = []
    for s, h in g.per_subject.get("head", {}).items():
        f = g.per_subject.get("face", {}).get(s, {})
        rows.append([str(s), str(int(h["n_scans"])), h.get("chamfer_l1"), f.get("chamfer_l1"),
                     h.get("normals consistency"), f.get("normals consistency"), h.get("f_score_05"),
                     f.get("f_score_05")])
    return markdown_table(header, rows, cell=format_metric)
