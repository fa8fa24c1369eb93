"""The on-disk layout of fitting results and their evaluation: the one definition.

A results folder (``FITTING_DIR/forward_{exp_name}/{exp_tag}/`` for the release's fitting
script; any folder for the other runs) holds, with the release's names::

    configs.yaml                                copy of the fitting config
    {subject}_{expression}.ply                  posed mesh, nphm frame
                                                ({subject}_{expression}_fine.ply preferred if present)
    {subject}_{expression}_lat_shape.npy        (1, 1, D_id) identity latent
    {subject}_{expression}_lat_expr.npy         (1, 1, D_ex) expression latent
    {subject}_canonical.ply                     canonical (neutral) mesh
    {subject}_coefficients.npz                  linear baseline: its coefficients
    {subject}_fitting.json                      expressions, timings, final losses; written last,
                                                its presence marks a finished subject
    {subject}.png                               observations over the fitted meshes
    samples/mesh_{i:04d}.ply, lat_{i:04d}.npy, sample_{i:04d}.png   random identities
    evaluation/{subject}/expression_{e}/metrics.json, metrics_face.json, report.png
    ledger/{subject}.json, claims/              fitting: outcome of every subject, claims of workers
    evaluation/ledger/{subject}_{e}.json        evaluation: outcome of every scan (nphm.utils.ledger)
    evaluation/claims/{subject}_{e}.claim       scans being evaluated (nphm.utils.claims)
    evaluation/failures.json                    the scans whose evaluation failed (from the ledger)
    evaluation/gt_cache/{subject}/expression_{e}/gt_samples.npz    ground-truth samples

This module also holds what every fitting method reads from a dataset for one subject
(:func:`subject_observations`, the release's test protocol) and the outcome of one item of a
batch job (:class:`ItemResult`), so that the neural fitting, the linear baseline, the
evaluation and the runs built on them share them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

from nphm.utils.io import PathLike

Subject = Union[int, str]

#: File of an evaluated scan per region: (region, file name).
METRIC_FILES: Tuple[Tuple[str, str], ...] = (("head", "metrics.json"), ("face", "metrics_face.json"))
EVALUATION = "evaluation"
FAILURES = "failures.json"
CONFIG_COPY = "configs.yaml"
LEDGER = "ledger"
CLAIMS = "claims"
SAMPLES = "samples"


# ------------------------------------------------------------------------------ any batch
def ledger_dir(out_dir: PathLike) -> Path:
    """``out_dir/ledger``: the item ledger of a batch output folder (:mod:`nphm.utils.ledger`)."""
    return Path(out_dir) / LEDGER


def claims_dir(out_dir: PathLike) -> Path:
    """``out_dir/claims``: the claims of the workers of a batch output folder (:mod:`nphm.utils.claims`)."""
    return Path(out_dir) / CLAIMS


# ------------------------------------------------------------------------------------ fits
def fitting_results_dir(exp_name: str, exp_tag: str, fitting_dir: Optional[PathLike] = None) -> Path:
    """``FITTING_DIR/forward_{exp_name}/{exp_tag}`` (the release's layout)."""
    if fitting_dir is None:
        from nphm import paths

        fitting_dir = paths.FITTING_DIR
    return Path(fitting_dir) / f"forward_{exp_name}" / str(exp_tag)


def config_copy_path(results_dir: PathLike) -> Path:
    return Path(results_dir) / CONFIG_COPY


def posed_mesh_path(results_dir: PathLike, subject: Subject, expression: int) -> Path:
    return Path(results_dir) / f"{subject}_{expression}.ply"


def canonical_mesh_path(results_dir: PathLike, subject: Subject) -> Path:
    return Path(results_dir) / f"{subject}_canonical.ply"


def latent_path(results_dir: PathLike, subject: Subject, expression: int, kind: str) -> Path:
    """``{subject}_{expression}_lat_{kind}.npy``; ``kind`` is "shape" or "expr"."""
    if kind not in ("shape", "expr"):
        raise ValueError(f"latent kind must be 'shape' or 'expr', got {kind!r}")
    return Path(results_dir) / f"{subject}_{expression}_lat_{kind}.npy"


def coefficients_path(results_dir: PathLike, subject: Subject) -> Path:
    return Path(results_dir) / f"{subject}_coefficients.npz"


def summary_path(results_dir: PathLike, subject: Subject) -> Path:
    return Path(results_dir) / f"{subject}_fitting.json"


def subject_picture_path(results_dir: PathLike, subject: Subject) -> Path:
    return Path(results_dir) / f"{subject}.png"


def samples_dir(results_dir: PathLike) -> Path:
    return Path(results_dir) / SAMPLES


def find_prediction(results_dir: PathLike, subject: int, expression: int) -> Optional[Path]:
    """The reconstruction of a scan: ``{subject}_{expression}_fine.ply`` if present, else
    ``{subject}_{expression}.ply``; None if neither exists."""
    fine = Path(results_dir) / f"{subject}_{expression}_fine.ply"
    for path in (fine, posed_mesh_path(results_dir, subject, expression)):
        if path.is_file():
            return path
    return None


def read_latents(results_dir: PathLike, subject: Subject, expression: int) -> Dict[str, np.ndarray]:
    """The stored latents of one fitted scan: ``{"shape": (D_id,), "expr": (D_ex,) or absent}``."""
    out = {"shape": np.load(latent_path(results_dir, subject, expression, "shape")).reshape(-1)}
    expr = latent_path(results_dir, subject, expression, "expr")
    if expr.is_file():
        out["expr"] = np.load(expr).reshape(-1)
    return out


# ------------------------------------------------------------------------------ evaluation
def evaluation_dir(results_dir: PathLike) -> Path:
    return Path(results_dir) / EVALUATION


def eval_scan_dir(eval_dir: PathLike, subject: int, expression: int) -> Path:
    """``eval_dir/{subject}/expression_{expression}``: one scan's folder of an evaluation (the
    release's layout) or of a ground-truth sample cache."""
    return Path(eval_dir) / str(int(subject)) / f"expression_{int(expression)}"


def metrics_path(results_dir: PathLike, subject: int, expression: int, region: str = "head") -> Path:
    """``evaluation/{subject}/expression_{e}/metrics.json`` (head) or ``metrics_face.json``."""
    names = dict(METRIC_FILES)
    if region not in names:
        raise ValueError(f"region must be one of {sorted(names)}, got {region!r}")
    return eval_scan_dir(evaluation_dir(results_dir), subject, expression) / names[region]


def failures_path(results_dir: PathLike) -> Path:
    return evaluation_dir(results_dir) / FAILURES


def default_gt_cache(results_dir: PathLike) -> Path:
    return evaluation_dir(results_dir) / "gt_cache"


# ---------------------------------------------------------------------- inputs and outcomes
def subject_observations(manager, subject: int) -> Tuple[List[int], List[np.ndarray]]:
    """Test expressions of ``subject`` and their observed points (N_i, 3), nphm frame.

    The first expression's observation includes its back view when that file exists (the
    release's protocol).

    Raises:
        nphm.utils.batch.InputError: an observation file is missing, unreadable or has no
            finite point (role "observation", naming the file).
    """
    from nphm.utils.batch import OBSERVATION, InputError, blame

    expressions = manager.test_expressions(subject)
    if not expressions:
        raise ValueError(f"subject {subject} has no test expressions")
    observations = []
    for k, expression in enumerate(expressions):
        path = manager.observation_path(subject, expression)
        points = blame(OBSERVATION, path, lambda: manager.load_observation(subject, expression))
        back = manager.observation_path(subject, expression, back=True)
        if k == 0 and back.is_file():
            points = np.concatenate(
                [points, blame(OBSERVATION, back, lambda: manager.load_observation(subject, expression, back=True))])
        if len(points) == 0:
            raise InputError(OBSERVATION, path, "no finite points")
        observations.append(points)
    return expressions, observations


@dataclass
class ItemResult:
    """Outcome of one item of a batch job: a scan ``(subject, expression)`` or a whole subject
    (``expression`` -1).

    ``status`` is "done", "skipped" (already finished, or run by another worker) or "failed"
    (``message`` says why; ``role`` and ``file`` name the input to blame when known, see
    :class:`nphm.utils.batch.InputError`); ``seconds`` is the item's wall time. A fitted
    subject also names its ``expressions`` and the part of the time spent in the optimisation
    (``seconds_fit``).
    """

    subject: int
    expression: int
    status: str
    message: str = ""
    seconds: float = 0.0
    expressions: List[int] = field(default_factory=list)
    seconds_fit: float = 0.0
    role: str = ""
    file: str = ""


__all__ = [
    "ItemResult", "claims_dir", "ledger_dir", "METRIC_FILES", "canonical_mesh_path", "coefficients_path", "config_copy_path",
    "default_gt_cache", "evaluation_dir", "failures_path", "find_prediction", "fitting_results_dir", "latent_path",
    "metrics_path", "posed_mesh_path", "read_latents", "samples_dir", "eval_scan_dir", "subject_observations",
    "subject_picture_path", "summary_path",
]
