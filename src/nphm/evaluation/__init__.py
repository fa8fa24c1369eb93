"""Evaluation protocol of NPHM without OpenGL: render-based sampling, metrics, reports.

- :func:`sample_rendered`: render-based surface samples of a mesh (10 cameras, CPU ray casting);
- :func:`eval_pointcloud`: accuracy, completeness, Chamfer-L1/L2, normal consistency,
  precision/recall/F-score, with the release's ``metrics.json`` keys;
- :func:`evaluate_scan` / :func:`evaluate_results_dir`: the whole protocol against the
  dataset's scans (neck cut, face region, millimetres, ground-truth cache);
- :func:`gather`: totals and per-subject tables (CSV), summary pages.
"""
from nphm.evaluation.face_region import FaceRegion
from nphm.evaluation.gather import GatheredMetrics, collect_metrics, gather, per_subject_markdown, totals_markdown
from nphm.evaluation.metrics import (
    METRIC_KEYS,
    RELEASE_METRIC_KEYS,
    THRESHOLDS_MM,
    eval_pointcloud,
    nearest_neighbors,
)
from nphm.evaluation.pipeline import (
    EvalSettings,
    RunSummary,
    ScanEvaluation,
    evaluate_results_dir,
    evaluate_scan,
    ground_truth_samples,
)
from nphm.evaluation.sampling import (
    NoSamplesError,
    RenderProtocol,
    ScanSamples,
    evaluation_cameras,
    render_samples,
    sample_rendered,
    sample_scan,
)

__all__ = [
    "EvalSettings",
    "FaceRegion",
    "GatheredMetrics",
    "METRIC_KEYS",
    "NoSamplesError",
    "RELEASE_METRIC_KEYS",
    "RenderProtocol",
    "RunSummary",
    "ScanEvaluation",
    "ScanSamples",
    "THRESHOLDS_MM",
    "collect_metrics",
    "eval_pointcloud",
    "evaluate_results_dir",
    "evaluate_scan",
    "evaluation_cameras",
    "gather",
    "ground_truth_samples",
    "nearest_neighbors",
    "per_subject_markdown",
    "render_samples",
    "sample_rendered",
    "sample_scan",
    "totals_markdown",
]
