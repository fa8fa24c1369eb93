"""Fitting the linear baseline to the single-view observations of a dataset's subjects.

Same inputs as the neural fitting (:func:`nphm.layout.subject_observations`: every test
expression's frontal view, plus the back view for the first) and the same output layout
(:mod:`nphm.layout`), so the evaluation reads the results unchanged::

    out_dir/{subject}_{expression}.ply        posed mesh (registration topology, nphm frame)
    out_dir/{subject}_coefficients.npz        alpha (n_id,), betas (K, n_ex), expressions (K,)
    out_dir/{subject}.png                     observations over the fitted meshes
    out_dir/{subject}_fitting.json            summary, written last (marks a finished subject)
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import trimesh

from nphm.baselines.pca import LinearHeadModel, PCAFitSettings, fit_linear_model
from nphm import layout
from nphm.layout import ItemResult, subject_observations
from nphm.utils.batch import run_subjects
from nphm.utils.io import atomic_path, save_json, save_mesh


def fit_pca_subject(manager, model: LinearHeadModel, subject: int, settings: PCAFitSettings, out_dir: Path,
                    figure: bool = True, progress: bool = True) -> ItemResult:
    """Fit one subject and write its outputs (raises on failure)."""
    start = time.perf_counter()
    expressions, observations = subject_observations(manager, subject)
    fit = fit_linear_model(model, observations, settings, progress, f"subject {subject} (linear)")
    seconds_fit = time.perf_counter() - start
    meshes = [trimesh.Trimesh(v, model.faces, process=False) for v in fit.vertices]
    out_dir = Path(out_dir)
    for expression, mesh in zip(expressions, meshes):
        save_mesh(layout.posed_mesh_path(out_dir, subject, expression), mesh)
    with atomic_path(layout.coefficients_path(out_dir, subject)) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, alpha=fit.alpha, betas=fit.betas, expressions=np.asarray(expressions))
    if figure:
        from nphm.pictures import fit_figure

        fit_figure(layout.subject_picture_path(out_dir, subject), meshes, observations,
                   [f"{subject}_{e}" for e in expressions])
    summary = {
        "subject": int(subject),
        "expressions": [int(e) for e in expressions],
        "n_points": [int(len(o)) for o in observations],
        "iterations": settings.iterations,
        "n_id": model.n_id,
        "n_ex": model.n_ex,
        "seconds_fit": round(seconds_fit, 2),
        "history": fit.history,
        "seconds_total": round(time.perf_counter() - start, 2),
    }
    save_json(layout.summary_path(out_dir, subject), summary)
    return ItemResult(int(subject), -1, "done", seconds=time.perf_counter() - start, expressions=list(expressions),
                      seconds_fit=seconds_fit)


def fit_pca_subjects(manager, model: LinearHeadModel, subjects: Sequence[int], settings: PCAFitSettings,
                     out_dir: Path, overwrite: bool = False, figure: bool = True,
                     progress: bool = True) -> Iterator[ItemResult]:
    """Fit several subjects; yields one outcome each and never raises for one of them.
    Subjects with a summary file are skipped unless ``overwrite``."""
    def run_one(subject: int) -> ItemResult:
        return fit_pca_subject(manager, model, subject, settings, out_dir, figure, progress)

    yield from run_subjects(subjects, lambda s: layout.summary_path(out_dir, s).is_file(), run_one, overwrite)


__all__ = ["fit_pca_subject", "fit_pca_subjects"]
