"""Evaluation of a folder of reconstructions against the dataset's scans.

Expected input (what the fitting writes)::

    RESULTS_DIR/{subject}_{expression}.ply        (or {subject}_{expression}_fine.ply, preferred)

Output::

    RESULTS_DIR/evaluation/{subject}/expression_{expression}/metrics.json        whole head
                                                            /metrics_face.json   face region
                                                            /report.png          visual report
    RESULTS_DIR/evaluation/ledger/{subject}_{expression}.json   every scan's last outcome (all runs)
    RESULTS_DIR/evaluation/failures.json         the scans whose evaluation failed (the ledger's failures)
    GT_CACHE/{subject}/expression_{expression}/gt_samples.npz   ground-truth samples (reused)

Both meshes are sampled with the render-based protocol (:mod:`nphm.evaluation.sampling`),
cut at the scan's neck plane (margin 0.003 with the release's un-normalised plane normal)
and split into head and face samples with the face region of the scan's FLAME fit.
Distances are reported in millimetres (nphm distances divided by the scan's ``s``).

Batch rules (:mod:`nphm.utils.batch`): each scan is claimed before it is evaluated, so several
workers can share one results folder; a failure names its culprit (the prediction or the
ground truth, the file and what is wrong with it); scans the dataset description expects but
the disk lacks are failures of the run, predictions without a ground-truth scan are reported.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import trimesh

from nphm import layout
from nphm.layout import ItemResult
from nphm.evaluation.face_region import FACE_MAX_DISTANCE, FACE_MAX_PLANE_DISTANCE, FaceRegion
from nphm.evaluation.metrics import eval_pointcloud
from nphm.evaluation.sampling import RenderProtocol, ScanSamples, sample_scan
from nphm.data.expected import missing_items
from nphm.utils.batch import (
    DATASET, GROUND_TRUTH, PREDICTION, BatchFolder, InputError, blame, left_to_another_worker, take_shard,
)
from nphm.utils.ledger import describe_item
from nphm.utils.io import PathLike, atomic_path, save_json
from nphm.utils.seeding import item_generator

__all__ = [
    "EvalSettings",
    "ScanEvaluation",
    "RunSummary",
    "ground_truth_samples",
    "evaluate_scan",
    "evaluate_results_dir",
    "evaluation_folder",
    "failure_records",
    "predictions_without_ground_truth",
]

#: Neck-cut margin of the release's evaluation (threshold on (p - origin) . normal).
NECK_MARGIN = 0.003
_GT_CACHE_VERSION = 1
_STREAM_GROUND_TRUTH, _STREAM_PREDICTION = 0, 1  # sampling streams of a scan


@dataclass(frozen=True)
class EvalSettings:
    """Knobs of the evaluation; the defaults are the release's protocol.

    ``resolution_scale`` < 1 renders smaller images (same cameras) for quick runs.
    """

    n_samples: int = 250_000
    n_views: int = 10
    resolution_scale: float = 1.0
    neck_margin: float = NECK_MARGIN
    face_max_distance: float = FACE_MAX_DISTANCE
    face_max_plane_distance: float = FACE_MAX_PLANE_DISTANCE
    seed: int = 0

    @property
    def protocol(self) -> RenderProtocol:
        p = RenderProtocol(n_views=self.n_views)
        return p if self.resolution_scale == 1.0 else p.scaled(self.resolution_scale)


@dataclass
class ScanEvaluation:
    """Result of one scan: metrics (release keys + precision/recall), samples and errors.

    ``pred_error_mm`` is the per-sample distance of ``pred.points`` to the GT samples (mm).
    """

    subject: int
    expression: int
    metrics: Dict[str, float]
    metrics_face: Dict[str, float]
    pred: ScanSamples
    gt: ScanSamples
    pred_error_mm: np.ndarray
    scale_to_mm: float
    seconds: Dict[str, float] = field(default_factory=dict)


@dataclass
class RunSummary:
    """What :func:`evaluate_results_dir` did in this run: lists of (subject, expression).

    ``skipped``: already evaluated; ``elsewhere``: being evaluated by another worker;
    ``failed``: ``{"subject", "expression", "prediction", "error", "role", "file"}`` per scan
    (``role`` names the culprit: "prediction", "ground truth" or "dataset" for an expected scan
    missing on disk); ``orphans``: predictions without a ground-truth scan, one line each.
    """

    evaluated: List[Tuple[int, int]] = field(default_factory=list)
    skipped: List[Tuple[int, int]] = field(default_factory=list)
    failed: List[Dict[str, object]] = field(default_factory=list)
    elsewhere: List[Tuple[int, int]] = field(default_factory=list)
    orphans: List[str] = field(default_factory=list)


def _region_and_cut(manager, subject: int, expression: int, settings: EvalSettings):
    flame = blame(GROUND_TRUTH, manager.flame_path(subject, expression), lambda: manager.load_flame(subject, expression))
    blame(GROUND_TRUTH, manager.flame_path(subject, expression), lambda: manager.throat_plane(subject, expression))
    region = FaceRegion.from_flame(
        flame,
        manager.face_region_flame,
        max_distance=settings.face_max_distance,
        max_plane_distance=settings.face_max_plane_distance,
    )

    def keep(points: np.ndarray) -> np.ndarray:
        return manager.neck_keep_mask(points, subject, expression, margin=settings.neck_margin)

    return keep, region


def _cache_key(manager, subject: int, expression: int, settings: EvalSettings) -> str:
    files = [manager.scan_path(subject, expression), manager.flame_path(subject, expression)]
    stamp = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    key = {"version": _GT_CACHE_VERSION, "settings": asdict(settings), "files": stamp}
    return json.dumps(key, sort_keys=True)


def ground_truth_samples(
    manager,
    subject: int,
    expression: int,
    settings: EvalSettings = EvalSettings(),
    cache_dir: Optional[PathLike] = None,
    keep: Optional[Callable[[np.ndarray], np.ndarray]] = None,
    region: Optional[FaceRegion] = None,
) -> ScanSamples:
    """Render-based samples of a ground-truth scan, cached per scan under ``cache_dir``.

    The cache is keyed by the settings and the scan/FLAME files (path, size, mtime);
    a stale or unreadable cache entry is recomputed.

    Raises:
        InputError: the scan or its FLAME fit is missing or broken (role "ground truth").
    """
    key = blame(GROUND_TRUTH, manager.scan_path(subject, expression),
                lambda: _cache_key(manager, subject, expression, settings))
    path = layout.eval_scan_dir(cache_dir, subject, expression) / "gt_samples.npz" if cache_dir is not None else None
    if path is not None and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["key"]) == key:
                    a = {k: np.asarray(z[k], dtype=np.float64) for k in ("points", "normals", "points_face",
                                                                         "normals_face")}
                    return ScanSamples(**a)
        except Exception:  # unreadable cache entry: recompute below
            pass
    if keep is None or region is None:
        keep, region = _region_and_cut(manager, subject, expression, settings)
    scan_path = manager.scan_path(subject, expression)
    scan = blame(GROUND_TRUTH, scan_path, lambda: manager.load_scan(subject, expression))
    rng = item_generator(settings.seed, subject, expression, _STREAM_GROUND_TRUTH)
    samples = blame(GROUND_TRUTH, scan_path,
                    lambda: sample_scan(scan, keep, region, settings.n_samples, rng, settings.protocol))
    if path is not None:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:  # float32: 12 MB per scan, error far below 1 micrometre
                np.savez(f, key=np.array(key), **{k: v.astype(np.float32) for k, v in samples.as_dict().items()})
    return samples


def evaluate_scan(
    manager,
    subject: int,
    expression: int,
    pred_mesh: trimesh.Trimesh,
    settings: EvalSettings = EvalSettings(),
    cache_dir: Optional[PathLike] = None,
) -> ScanEvaluation:
    """Evaluate one reconstruction (nphm frame) against its scan.

    Args:
        manager: a :class:`nphm.data.DataManager` of the dataset holding the scan.
        pred_mesh: the reconstruction, nphm frame, outward normals.
        cache_dir: folder of the ground-truth sample cache (None: no caching).
    Returns:
        :class:`ScanEvaluation` with metrics in millimetres.
    Raises:
        InputError: the ground truth (scan, FLAME fit, ``s/R/t``) is missing or broken, or the
            prediction gives no samples (the role says which).
    """
    t0 = time.perf_counter()
    keep, region = _region_and_cut(manager, subject, expression, settings)
    s, _, _ = blame(GROUND_TRUTH, manager.scan_path(subject, expression).parent,
                    lambda: manager.transform(subject, expression))
    gt = ground_truth_samples(manager, subject, expression, settings, cache_dir, keep, region)
    t1 = time.perf_counter()
    rng = item_generator(settings.seed, subject, expression, _STREAM_PREDICTION)
    source = getattr(pred_mesh, "metadata", {}).get("file_path") or "the prediction"
    pred = blame(PREDICTION, source,
                 lambda: sample_scan(pred_mesh, keep, region, settings.n_samples, rng, settings.protocol))
    t2 = time.perf_counter()
    metrics, errors = eval_pointcloud(pred.points, gt.points, pred.normals, gt.normals, scale=1.0 / s,
                                      return_errors=True)
    metrics_face = eval_pointcloud(pred.points_face, gt.points_face, pred.normals_face, gt.normals_face,
                                   scale=1.0 / s)
    t3 = time.perf_counter()
    return ScanEvaluation(
        subject=subject,
        expression=expression,
        metrics=metrics,
        metrics_face=metrics_face,
        pred=pred,
        gt=gt,
        pred_error_mm=errors["accuracy"],
        scale_to_mm=1.0 / s,
        seconds={"ground_truth": t1 - t0, "prediction_sampling": t2 - t1, "metrics": t3 - t2},
    )


def _load_prediction(path: Path) -> trimesh.Trimesh:
    """The prediction mesh at ``path``; :class:`InputError` (role "prediction") when broken."""
    from nphm.data.manager import load_mesh

    mesh = blame(PREDICTION, path, lambda: load_mesh(path))
    mesh.metadata["file_path"] = str(path)
    return mesh


_PREDICTION_NAME = re.compile(r"^(\d+)_(\d+)(?:_fine)?\.ply$")


def predictions_without_ground_truth(results_dir: PathLike, manager, items: Sequence[Tuple[int, int]],
                                     subjects: Sequence[int]) -> List[Tuple[int, int, Path, str]]:
    """Predictions ``{subject}_{expression}.ply`` of ``subjects`` (or of subjects missing on
    disk) that are not among the evaluated ``items``: ``(subject, expression, file, reason)``."""
    wanted, todo = {int(s) for s in subjects}, set(items)
    out = []
    for path in sorted(Path(results_dir).glob("*.ply")):
        m = _PREDICTION_NAME.match(path.name)
        if m is None:
            continue
        s, e = int(m.group(1)), int(m.group(2))
        if (s, e) in todo or not (s in wanted or not manager.subject_dir(s).is_dir()):
            continue
        scan = manager.scan_path(s, e)
        if not scan.is_file():
            reason = f"its ground-truth scan {scan} does not exist"
        else:
            reason = f"expression {e} of subject {s} is not a test expression (bad or invalid in the description)"
        out.append((s, e, path, reason))
    return sorted(set(out))


def failure_records(batch: BatchFolder) -> List[Dict[str, object]]:
    """The ledger's failures as ``failures.json`` entries (all runs, by subject and expression)."""
    return [{"subject": f.subject, "expression": f.expression,
             "prediction": f.file if f.role == PREDICTION else None, "error": f.message, "role": f.role,
             "file": f.file} for f in batch.ledger.with_status("failed")]


def evaluation_folder(results_dir: PathLike, claims: bool = True) -> BatchFolder:
    """The ledger and claims of ``results_dir``'s evaluation (``evaluation/ledger``, ``evaluation/claims``)."""
    return BatchFolder(layout.evaluation_dir(results_dir), "evaluation", claims=claims)


def evaluate_results_dir(
    results_dir: PathLike,
    manager,
    settings: EvalSettings = EvalSettings(),
    subjects: Optional[Sequence[int]] = None,
    split: str = "test",
    cache_dir: Optional[PathLike] = None,
    overwrite: bool = False,
    figures: bool = True,
    log: Optional[Callable[[str], None]] = None,
    progress: bool = True,
    shard: Optional[Tuple[int, int]] = None,
    claims: bool = True,
) -> RunSummary:
    """Evaluate every reconstruction of a split found in ``results_dir``.

    Scans whose ``metrics.json`` and ``metrics_face.json`` already exist are skipped
    (unless ``overwrite``), so are scans another worker has claimed. A missing or broken
    prediction or ground truth, or any error while evaluating a scan, is logged and recorded
    in the ledger (``evaluation/ledger``, and its failures in ``evaluation/failures.json``)
    and the run continues.

    Args:
        results_dir: folder with ``{subject}_{expression}.ply`` reconstructions.
        manager: :class:`nphm.data.DataManager` of the dataset.
        subjects: restrict to these subjects (default: the split's subjects).
        split: dataset split whose test expressions are evaluated.
        cache_dir: ground-truth sample cache (default ``results_dir/evaluation/gt_cache``).
        figures: write a ``report.png`` per scan.
        log: receives one line per scan (default: printed without breaking the progress bar).
        shard: ``(k, n)``: only every n-th scan from the k-th (:func:`nphm.utils.batch.take_shard`).
        claims: claim each scan first (False: assume a single worker).
    """
    from tqdm import tqdm

    log = log or tqdm.write

    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise FileNotFoundError(f"results folder not found: {results_dir}")
    cache_dir = Path(cache_dir) if cache_dir is not None else layout.default_gt_cache(results_dir)
    batch = evaluation_folder(results_dir, claims)
    for path in batch.clean(cache_dir):
        log(f"removed the temporary file of a killed writer: {path}")
    summary = RunSummary()
    explicit = subjects is not None
    subjects = sorted({int(s) for s in subjects}) if explicit else manager.subjects(split)
    missing = missing_items(manager, subjects if explicit else None, split, use="test")
    for m in missing:
        log(f"MISSING {describe_item(m.subject, m.expression)}: {m.message}")
        summary.failed.append({"subject": m.subject, "expression": m.expression, "prediction": None,
                               "error": m.message, "role": DATASET, "file": str(m.path)})
    batch.record_missing(missing, subjects)
    subjects = [s for s in subjects if manager.subject_dir(s).is_dir()]
    items = [(s, e) for s in subjects for e in manager.test_expressions(s)]
    missing_keys = {(m.subject, m.expression) for m in missing}
    for s, e, path, reason in predictions_without_ground_truth(results_dir, manager, items, subjects):
        line = f"prediction {path} has no ground truth: {reason}"
        log(f"NOT EVALUATED {line}")
        summary.orphans.append(line)
        if (s, e) not in missing_keys:  # else its entry is the missing scan's failure
            batch.ledger.record_once(s, e, "skipped", line, GROUND_TRUTH, str(manager.scan_path(s, e)))
    for subject, expression in tqdm(take_shard(items, shard), desc="evaluating", disable=not progress):
        metric_files = [layout.metrics_path(results_dir, subject, expression, r) for r, _ in layout.METRIC_FILES]
        out = metric_files[0].parent
        holder: Dict[str, ScanEvaluation] = {}

        def work() -> ItemResult:
            start = time.perf_counter()
            pred_path = layout.find_prediction(results_dir, subject, expression)
            if pred_path is None:
                raise InputError(PREDICTION, results_dir / f"{subject}_{expression}.ply",
                                 "not found (nor the _fine.ply variant)")
            pred_mesh = _load_prediction(pred_path)
            result = evaluate_scan(manager, subject, expression, pred_mesh, settings, cache_dir)
            if figures:
                from nphm.pictures import scan_figure

                scan_figure(out / "report.png", result, pred_mesh, manager)
            # metrics.json last: its presence marks a finished scan.
            save_json(layout.metrics_path(results_dir, subject, expression, "face"), result.metrics_face)
            save_json(layout.metrics_path(results_dir, subject, expression, "head"), result.metrics)
            holder["result"] = result
            return ItemResult(subject, expression, "done", f"CD-L1 {result.metrics['chamfer_l1']:.3f} mm, face "
                              f"{result.metrics_face['chamfer_l1']:.3f} mm", time.perf_counter() - start)

        outcome = batch.run_item(subject, expression, lambda: all(p.is_file() for p in metric_files), work,
                                 overwrite)
        if outcome.status == "skipped":
            (summary.elsewhere if left_to_another_worker(outcome) else summary.skipped).append((subject, expression))
            continue
        if outcome.status == "failed":
            log(f"FAILED subject {subject} expression {expression}: {outcome.message}")
            pred_path = layout.find_prediction(results_dir, subject, expression)
            summary.failed.append(
                {"subject": subject, "expression": expression, "prediction": str(pred_path) if pred_path else None,
                 "error": outcome.message, "role": outcome.role, "file": outcome.file}
            )
            continue
        summary.evaluated.append((subject, expression))
        result = holder["result"]
        sec = result.seconds
        log(
            f"subject {subject} expression {expression}: CD-L1 {result.metrics['chamfer_l1']:.3f} mm, "
            f"face {result.metrics_face['chamfer_l1']:.3f} mm "
            f"(GT {sec['ground_truth']:.1f}s, prediction {sec['prediction_sampling']:.1f}s, "
            f"metrics {sec['metrics']:.1f}s)"
        )
    save_json(layout.failures_path(results_dir), failure_records(batch))
    return summary
