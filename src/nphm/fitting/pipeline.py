"""Fitting the subjects of a dataset from their single-view observations, and random samples.

For every subject: its test expressions (on disk, minus bad and invalid scans), the frontal
observation of each and, for the first, also the back view (the release's protocol); a joint fit
(or an identity-only fit when the config names no expression model); the canonical mesh and
one posed mesh per expression; latents, a summary and a picture (see :mod:`nphm.layout`).
A subject that fails is reported (its ledger entry in ``out_dir/ledger`` names the culprit,
e.g. a broken observation file) and the others continue; each subject is claimed first
(``out_dir/claims``), so several workers can fit into one folder.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from tqdm import tqdm

from nphm import layout
from nphm.fitting import io as fio
from nphm.pictures import fit_figure, mesh_picture
from nphm.fitting.joint import FitResult, fit_identity, fit_joint
from nphm.fitting.meshing import mesh_fit
from nphm.fitting.schedule import FittingSettings
from nphm.query import DEFAULT_CHUNK
from nphm.layout import ItemResult, subject_observations
from nphm.reconstruction import mesh_identity
from nphm.utils.batch import BatchFolder, failure_message, run_subjects, take_shard
from nphm.utils.io import save_mesh, save_npy
from nphm.utils.seeding import item_seed


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
) -> ItemResult:
    """Fit one subject and write its outputs (raises on failure).

    ``chunk``: points per SDF / deformation query while meshing."""
    start = time.perf_counter()
    expressions, observations = subject_observations(manager, subject)
    fit = fit_observations(models, observations, settings, item_seed(seed, subject), progress,
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
        fit_figure(layout.subject_picture_path(out_dir, subject), posed, observations, titles)
    summary["seconds_total"] = round(time.perf_counter() - start, 2)
    fio.write_fit(out_dir, subject, expressions, canonical, posed, fit.z_id, fit.z_ex, summary)
    return ItemResult(int(subject), -1, "done", seconds=time.perf_counter() - start, expressions=list(expressions),
                      seconds_fit=fit.seconds)


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
    shard: Optional[Tuple[int, int]] = None,
    claims: bool = True,
) -> Iterator[ItemResult]:
    """Fit several subjects; yields one outcome per subject and never raises for one of them.

    Subjects with a summary file in ``out_dir`` are skipped unless ``overwrite``, so are
    subjects another worker has claimed (``claims``; False: assume a single worker). Every
    outcome goes into the ledger ``out_dir/ledger`` (:func:`fitting_folder`); stale temporary
    files of killed writers are removed first. ``shard = (k, n)``: only every n-th subject from
    the k-th.
    """
    def run_one(subject: int) -> ItemResult:
        return fit_subject(manager, models, subject, settings, out_dir, resolution, seed, progress, figure,
                           query_mode, chunk)

    folder = fitting_folder(out_dir, claims)
    for path in folder.clean():
        tqdm.write(f"removed the temporary file of a killed writer: {path}")
    yield from run_subjects(take_shard(list(subjects), shard), lambda s: layout.summary_path(out_dir, s).is_file(),
                            run_one, overwrite, folder=folder)


def fitting_folder(out_dir: Path, claims: bool = True) -> BatchFolder:
    """The ledger and claims of a fitting results folder (``out_dir/ledger``, ``out_dir/claims``)."""
    return BatchFolder(out_dir, "fitting", claims=claims)


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
) -> List[ItemResult]:
    """Mesh and render ``n`` random identities: ``out_dir/samples/mesh_{i:04d}.ply``,
    ``lat_{i:04d}.npy`` and ``sample_{i:04d}.png``. A sample that fails is reported."""
    mean, std = latent_statistics(models.latents_train)
    lat = sample_latents(mean, std, n, settings.sample_std_scale, torch.Generator().manual_seed(seed))
    folder = layout.samples_dir(out_dir)
    outcomes = []
    for i in tqdm(range(n), desc="random samples", disable=not progress):
        start = time.perf_counter()
        try:
            mesh = mesh_identity(models.identity, lat[i], resolution=resolution,
                                 bounds=(settings.grid_min, settings.grid_max), device=lat.device, chunk=chunk)
            save_npy(folder / f"lat_{i:04d}.npy", lat[i].cpu().numpy())
            save_mesh(folder / f"mesh_{i:04d}.ply", mesh)
            mesh_picture(folder / f"sample_{i:04d}.png", mesh)
            outcomes.append(ItemResult(i, -1, "done", seconds=time.perf_counter() - start))
        except Exception as e:
            outcomes.append(ItemResult(i, -1, "failed", failure_message(e)))
    return outcomes
