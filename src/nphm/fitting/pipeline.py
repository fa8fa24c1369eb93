"""Fitting the subjects of a dataset from their single-view observations, and random samples.

For every subject: its test expressions (on disk, minus bad and invalid scans), the frontal
observation of each and, for the first, also the back view (the release's protocol); a joint fit
(or an identity-only fit when the config names no expression model); the canonical mesh and
one posed mesh per expression; latents, a summary and a picture (see :mod:`nphm.fitting.io`).
A subject that fails is reported and the others continue.
"""
from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from tqdm import tqdm

from nphm.fitting import io as fio
from nphm.fitting.figures import fit_figure, mesh_picture
from nphm.fitting.joint import FitResult, fit_identity, fit_joint
from nphm.fitting.meshing import mesh_fit
from nphm.fitting.schedule import FittingSettings
from nphm.query import DEFAULT_CHUNK
from nphm.reconstruction import mesh_identity
from nphm.utils.io import save_mesh, save_npy


@dataclass
class SubjectOutcome:
    """What happened to one subject: ``status`` is "done", "skipped" or "failed"."""

    subject: int
    status: str
    message: str = ""
    expressions: List[int] = field(default_factory=list)
    seconds_fit: float = 0.0
    seconds_total: float = 0.0


def subject_observations(manager, subject: int) -> Tuple[List[int], List[np.ndarray]]:
    """Test expressions of ``subject`` and their observed points (N_i, 3), nphm frame.

    The first expression's observation includes its back view when that file exists.
    """
    expressions = manager.test_expressions(subject)
    if not expressions:
        raise ValueError(f"subject {subject} has no test expressions")
    observations = []
    for k, expression in enumerate(expressions):
        points = manager.load_observation(subject, expression)
        if k == 0 and manager.observation_path(subject, expression, back=True).is_file():
            points = np.concatenate([points, manager.load_observation(subject, expression, back=True)])
        if len(points) == 0:
            raise ValueError(f"{manager.observation_path(subject, expression)}: no finite points")
        observations.append(points)
    return expressions, observations


def subject_seed(seed: int, subject: int) -> int:
    """Seed of a subject's random draws: independent of which subjects run before it."""
    return int(np.random.SeedSequence([int(seed), int(subject)]).generate_state(1)[0])


def fit_observations(
    models: fio.FittingModels,
    observations: Sequence[np.ndarray],
    settings: FittingSettings,
    seed: int = 0,
    progress: bool = True,
    desc: str = "fitting",
    query_mode: Optional[str] = None,
) -> FitResult:
    """Joint fit when the models include a deformation, identity-only otherwise."""
    generator = torch.Generator().manual_seed(seed)
    if models.deformation is None:
        return fit_identity(models.identity, observations, settings, generator, progress, query_mode, desc)
    return fit_joint(models.identity, models.deformation, observations, settings, generator, progress, query_mode,
                     desc)


def fit_subject(
    manager,
    models: fio.FittingModels,
    subject: int,
    settings: FittingSettings,
    out_dir: Path,
    resolution: int = 256,
    seed: int = 0,
    progress: bool = True,
    figure: bool = True,
    query_mode: Optional[str] = None,
    chunk: int = DEFAULT_CHUNK,
) -> SubjectOutcome:
    """Fit one subject and write its outputs (raises on failure).

    ``chunk``: points per SDF / deformation query while meshing."""
    start = time.perf_counter()
    expressions, observations = subject_observations(manager, subject)
    fit = fit_observations(models, observations, settings, subject_seed(seed, subject), progress,
                           f"subject {subject} ({len(expressions)} expr.)", query_mode)
    bounds = (settings.grid_min, settings.grid_max)
    z_ex = fit.z_ex if models.deformation is not None else torch.zeros(len(expressions), 0)
    canonical, posed = mesh_fit(models.identity, models.deformation, fit.z_id, z_ex, resolution, bounds, chunk)
    last = fit.history[-1] if fit.history else {}
    summary = {
        "subject": int(subject),
        "expressions": [int(e) for e in expressions],
        "n_points": [int(len(o)) for o in observations],
        "steps": settings.n_iterations,
        "seconds_fit": round(fit.seconds, 2),
        "final": {k: float(v) for k, v in last.items()},
        "resolution": int(resolution),
        "canonical_vertices": int(len(canonical.vertices)),
    }
    if figure:
        titles = [f"{subject}_{e}" for e in expressions]
        fit_figure(Path(out_dir) / f"{subject}.png", posed, observations, titles)
    summary["seconds_total"] = round(time.perf_counter() - start, 2)
    fio.write_fit(out_dir, subject, expressions, canonical, posed, fit.z_id, fit.z_ex, summary)
    return SubjectOutcome(int(subject), "done", expressions=list(expressions), seconds_fit=fit.seconds,
                          seconds_total=time.perf_counter() - start)


def fit_subjects(
    manager,
    models: fio.FittingModels,
    subjects: Sequence[int],
    settings: FittingSettings,
    out_dir: Path,
    resolution: int = 256,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    figure: bool = True,
    query_mode: Optional[str] = None,
    chunk: int = DEFAULT_CHUNK,
) -> Iterator[SubjectOutcome]:
    """Fit several subjects; yields one outcome per subject and never raises for one of them.

    Subjects with a summary file in ``out_dir`` are skipped unless ``overwrite``.
    """
    for subject in subjects:
        if not overwrite and fio.summary_path(out_dir, subject).is_file():
            yield SubjectOutcome(int(subject), "skipped", "already fitted")
            continue
        start = time.perf_counter()
        try:
            yield fit_subject(manager, models, subject, settings, out_dir, resolution, seed, progress, figure,
                              query_mode, chunk)
        except Exception as e:  # a bad subject must not stop the batch
            detail = "".join(traceback.format_exception_only(type(e), e)).strip()
            yield SubjectOutcome(int(subject), "failed", detail, seconds_total=time.perf_counter() - start)


# ---------------------------------------------------------------------------- random samples
def latent_statistics(latents: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and standard deviation (D,) of training latents (n, D)."""
    if latents.dim() != 2 or latents.shape[0] < 2:
        raise ValueError(f"need at least 2 training latents for sample statistics, got shape {tuple(latents.shape)}")
    return latents.mean(0), latents.std(0)


def sample_latents(mean: torch.Tensor, std: torch.Tensor, n: int, std_scale: float,
                   generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """(n, D) identity latents ``mean + std_scale * std * N(0, 1)`` (release: std_scale 0.85)."""
    noise = torch.randn(n, mean.numel(), generator=generator).to(mean.device)
    return mean + std_scale * std * noise


def sample_identities(
    models: fio.FittingModels,
    n: int,
    settings: FittingSettings,
    out_dir: Path,
    resolution: int = 256,
    seed: int = 0,
    progress: bool = True,
    chunk: int = DEFAULT_CHUNK,
) -> List[SubjectOutcome]:
    """Mesh and render ``n`` random identities: ``out_dir/samples/mesh_{i:04d}.ply``,
    ``lat_{i:04d}.npy`` and ``sample_{i:04d}.png``. A sample that fails is reported."""
    mean, std = latent_statistics(models.latents_train)
    lat = sample_latents(mean, std, n, settings.sample_std_scale, torch.Generator().manual_seed(seed))
    folder = Path(out_dir) / "samples"
    outcomes = []
    for i in tqdm(range(n), desc="random samples", disable=not progress):
        start = time.perf_counter()
        try:
            mesh = mesh_identity(models.identity, lat[i], resolution=resolution,
                                 bounds=(settings.grid_min, settings.grid_max), device=lat.device, chunk=chunk)
            save_npy(folder / f"lat_{i:04d}.npy", lat[i].cpu().numpy())
            save_mesh(folder / f"mesh_{i:04d}.ply", mesh)
            mesh_picture(folder / f"sample_{i:04d}.png", mesh)
            outcomes.append(SubjectOutcome(i, "done", seconds_total=time.perf_counter() - start))
        except Exception as e:
            outcomes.append(SubjectOutcome(i, "failed", f"{type(e).__name__}: {e}"))
    return outcomes
