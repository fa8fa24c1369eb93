"""Evaluation of a folder of reconstructions against the dataset's scans.

Expected input (what the fitting writes)::

    RESULTS_DIR/{subject}_{expression}.ply        (or {subject}_{expression}_fine.ply, preferred)

Output::

    RESULTS_DIR/evaluation/{subject}/expression_{expression}/metrics.json        whole head
                                                            /metrics_face.json   face region
                                                            /report.png          visual report
    RESULTS_DIR/evaluation/failures.json         scans that could not be evaluated in the last run
    GT_CACHE/{subject}/expression_{expression}/gt_samples.npz   ground-truth samples (reused)

Both meshes are sampled with the render-based protocol (:mod:`nphm.evaluation.sampling`),
cut at the scan's neck plane (margin 0.003 with the release's un-normalised plane normal)
and split into head and face samples with the face region of the scan's FLAME fit.
Distances are reported in millimetres (nphm distances divided by the scan's ``s``).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import trimesh

from nphm import layout
from nphm.evaluation.face_region import FACE_MAX_DISTANCE, FACE_MAX_PLANE_DISTANCE, FaceRegion
from nphm.evaluation.metrics import eval_pointcloud
from nphm.evaluation.sampling import RenderProtocol, ScanSamples, sample_scan
from nphm.utils.io import PathLike, atomic_path, save_json
from nphm.utils.seeding import item_generator

__all__ = [
    "EvalSettings",
    "ScanEvaluation",
    "RunSummary",
    "ground_truth_samples",
    "evaluate_scan",
    "evaluate_results_dir",
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
    """What :func:`evaluate_results_dir` did: lists of (subject, expression)."""

    evaluated: List[Tuple[int, int]] = field(default_factory=list)
    skipped: List[Tuple[int, int]] = field(default_factory=list)
    failed: List[Dict[str, object]] = field(default_factory=list)


def _region_and_cut(manager, subject: int, expression: int, settings: EvalSettings):
    flame = manager.load_flame(subject, expression)
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
    """
    key = _cache_key(manager, subject, expression, settings)
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
    scan = manager.load_scan(subject, expression)
    rng = item_generator(settings.seed, subject, expression, _STREAM_GROUND_TRUTH)
    samples = sample_scan(scan, keep, region, settings.n_samples, rng, settings.protocol)
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
    """
    t0 = time.perf_counter()
    keep, region = _region_and_cut(manager, subject, expression, settings)
    s, _, _ = manager.transform(subject, expression)
    gt = ground_truth_samples(manager, subject, expression, settings, cache_dir, keep, region)
    t1 = time.perf_counter()
    rng = item_generator(settings.seed, subject, expression, _STREAM_PREDICTION)
    pred = sample_scan(pred_mesh, keep, region, settings.n_samples, rng, settings.protocol)
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
    from nphm.data.manager import load_mesh

    mesh = load_mesh(path)
    if not np.all(np.isfinite(mesh.vertices)):
        raise ValueError(f"{path}: mesh has non-finite vertex coordinates")
    return mesh


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
) -> RunSummary:
    """Evaluate every reconstruction of a split found in ``results_dir``.

    Scans whose ``metrics.json`` and ``metrics_face.json`` already exist are skipped
    (unless ``overwrite``). A missing or broken prediction, or any error while evaluating
    a scan, is logged, recorded in ``evaluation/failures.json`` and the run continues.

    Args:
        results_dir: folder with ``{subject}_{expression}.ply`` reconstructions.
        manager: :class:`nphm.data.DataManager` of the dataset.
        subjects: restrict to these subjects (default: the split's subjects).
        split: dataset split whose test expressions are evaluated.
        cache_dir: ground-truth sample cache (default ``results_dir/evaluation/gt_cache``).
        figures: write a ``report.png`` per scan.
        log: receives one line per scan (default: printed without breaking the progress bar).
    """
    from tqdm import tqdm

    log = log or tqdm.write

    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise FileNotFoundError(f"results folder not found: {results_dir}")
    cache_dir = Path(cache_dir) if cache_dir is not None else layout.default_gt_cache(results_dir)
    subjects = list(subjects) if subjects is not None else manager.subjects(split)
    items = [(s, e) for s in subjects for e in manager.test_expressions(s)]
    summary = RunSummary()
    for subject, expression in tqdm(items, desc="evaluating", disable=not progress):
        metric_files = [layout.metrics_path(results_dir, subject, expression, r) for r, _ in layout.METRIC_FILES]
        out = metric_files[0].parent
        if not overwrite and all(p.is_file() for p in metric_files):
            summary.skipped.append((subject, expression))
            continue
        pred_path = layout.find_prediction(results_dir, subject, expression)
        try:
            if pred_path is None:
                raise FileNotFoundError(
                    f"no prediction {subject}_{expression}.ply (or _fine.ply) in {results_dir}"
                )
            pred_mesh = _load_prediction(pred_path)
            result = evaluate_scan(manager, subject, expression, pred_mesh, settings, cache_dir)
            if figures:
                from nphm.pictures import scan_figure

                scan_figure(out / "report.png", result, pred_mesh, manager)
            # metrics.json last: its presence marks a finished scan.
            save_json(layout.metrics_path(results_dir, subject, expression, "face"), result.metrics_face)
            save_json(layout.metrics_path(results_dir, subject, expression, "head"), result.metrics)
        except Exception as e:  # report and continue with the next scan
            message = f"{type(e).__name__}: {e}"
            log(f"FAILED subject {subject} expression {expression}: {message}")
            summary.failed.append(
                {"subject": subject, "expression": expression,
                 "prediction": str(pred_path) if pred_path else None, "error": message}
            )
            continue
        summary.evaluated.append((subject, expression))
        sec = result.seconds
        log(
            f"subject {subject} expression {expression}: CD-L1 {result.metrics['chamfer_l1']:.3f} mm, "
            f"face {result.metrics_face['chamfer_l1']:.3f} mm "
            f"(GT {sec['ground_truth']:.1f}s, prediction {sec['prediction_sampling']:.1f}s, "
            f"metrics {sec['metrics']:.1f}s)"
        )
    save_json(layout.failures_path(results_dir), summary.failed)
    return summary
