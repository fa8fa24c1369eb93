"""Batch preparation of the supervision over a dataset: one job per subject, run in parallel,
finished items skipped, failures reported (never raised) so that a run always completes.

Randomness is keyed by ``(seed, subject, expression, stream)``: an item gets the same samples
whatever the number of workers and the order of processing.
"""
from __future__ import annotations

import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, List, Sequence, Tuple, TypeVar, Union

import numpy as np

from nphm.preprocessing import storage
from nphm.preprocessing.deformation import N_PER_DIRECTION_RELEASE, SIGMAS_RELEASE, sample_deformation_supervision
from nphm.preprocessing.identity import (
    FACE_RADIUS,
    N_NON_FACE_RELEASE,
    N_SAMPLES_RELEASE,
    sample_identity_supervision,
)
from nphm.layout import ItemResult
from nphm.utils.seeding import item_generator

_STREAM_IDENTITY, _STREAM_DEFORMATION = 0, 1
J = TypeVar("J")
R = TypeVar("R")


@dataclass(frozen=True)
class IdentitySettings:
    """Sample counts of the identity supervision (release values by default)."""

    n_samples: int = N_SAMPLES_RELEASE
    n_non_face: int = N_NON_FACE_RELEASE
    face_radius: float = FACE_RADIUS


@dataclass(frozen=True)
class DeformationSettings:
    """Sample counts of the deformation supervision (release values by default)."""

    n_per_direction: int = N_PER_DIRECTION_RELEASE
    sigmas: Tuple[float, ...] = field(default=SIGMAS_RELEASE)
    #: extra pairs outside the face region (release: 0, see sample_deformation_supervision)
    n_non_face_per_direction: int = 0


#: Sample counts of the scripts' ``--preset`` values: the release's, and smaller ones for the
#: synthetic set (which also constrains the deformation outside the face region, see
#: :func:`nphm.preprocessing.deformation.sample_deformation_supervision`).
PRESETS = {
    "release": {
        "identity": IdentitySettings(),
        "deformation": DeformationSettings(),
    },
    "synthetic": {
        "identity": IdentitySettings(n_samples=500_000, n_non_face=100_000),
        "deformation": DeformationSettings(n_per_direction=10_000, n_non_face_per_direction=5_000),
    },
}


# ----------------------------------------------------------------------------- identity
def identity_item(manager, root: Union[str, Path], subject: int, settings: IdentitySettings, seed: int,
                  overwrite: bool = False) -> List[ItemResult]:
    """Sample and store the identity supervision of one subject (its neutral-open scan)."""
    start = time.time()
    try:
        expression = manager.neutral_expression(subject, "open")
    except LookupError as e:
        return [ItemResult(subject, -1, "failed", str(e))]
    if not overwrite and storage.identity_done(root, subject, expression):
        return [ItemResult(subject, expression, "skipped")]
    try:
        scan = manager.load_scan(subject, expression)
        registration = manager.load_registration(subject, expression)
        mask = manager.face_mask_registration
        if mask.shape[0] != len(registration.vertices):
            raise ValueError(f"face mask has {mask.shape[0]} entries, registration "
                             f"{manager.registration_path(subject, expression)} has {len(registration.vertices)} vertices")
        samples = sample_identity_supervision(
            np.asarray(scan.vertices), np.asarray(scan.faces), np.asarray(registration.vertices)[mask],
            lambda p: manager.neck_keep_mask(p, subject, expression),
            settings.n_samples, settings.n_non_face, item_generator(seed, subject, expression, _STREAM_IDENTITY),
            face_radius=settings.face_radius,
        )
        storage.write_identity(root, subject, expression, samples.face, samples.non_face)
    except Exception as e:  # reported per item; the batch goes on
        return [ItemResult(subject, expression, "failed", f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}",
                           time.time() - start)]
    msg = f"{len(samples.face)} face / {len(samples.non_face)} non-face points"
    return [ItemResult(subject, expression, "done", msg, time.time() - start)]


# ----------------------------------------------------------------------------- deformation
def deformation_items(manager, root: Union[str, Path], subject: int, settings: DeformationSettings, seed: int,
                      overwrite: bool = False) -> List[ItemResult]:
    """Sample and store the correspondences of every expression of one subject (including the
    neutral one itself, as the release does)."""
    try:
        neutral = manager.neutral_expression(subject, "open")
        expressions = manager.expressions(subject)
    except (LookupError, OSError) as e:
        return [ItemResult(subject, -1, "failed", str(e))]
    todo = [e for e in expressions if overwrite or not storage.deformation_done(root, subject, e)]
    results = [ItemResult(subject, e, "skipped") for e in expressions if e not in todo]
    if not todo:
        return results
    try:
        reg_neutral = manager.load_registration(subject, neutral)
        mask = manager.face_mask_registration
    except Exception as e:
        return results + [ItemResult(subject, e_, "failed", f"neutral registration: {type(e).__name__}: {e}")
                          for e_ in todo]
    for expression in todo:
        start = time.time()
        try:
            posed = manager.load_registration(subject, expression)
            if len(posed.faces) != len(reg_neutral.faces) or not np.array_equal(posed.faces, reg_neutral.faces):
                raise ValueError(f"{manager.registration_path(subject, expression)}: topology differs from the "
                                 f"neutral registration {manager.registration_path(subject, neutral)}")
            pairs = sample_deformation_supervision(
                np.asarray(reg_neutral.vertices), np.asarray(posed.vertices), np.asarray(reg_neutral.faces), mask,
                settings.n_per_direction, item_generator(seed, subject, expression, _STREAM_DEFORMATION),
                sigmas=settings.sigmas, n_non_face_per_direction=settings.n_non_face_per_direction,
            )
            storage.write_deformation(root, subject, expression, pairs)
            results.append(ItemResult(subject, expression, "done", f"{len(pairs)} pairs", time.time() - start))
        except Exception as e:
            results.append(ItemResult(subject, expression, "failed",
                                      f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}",
                                      time.time() - start))
    return results


# ----------------------------------------------------------------------------- batch runner
def _identity_job(args) -> List[ItemResult]:
    return identity_item(*args)


def _deformation_job(args) -> List[ItemResult]:
    return deformation_items(*args)


def run_jobs(job: Callable[[J], R], jobs: Sequence[J], workers: int = 1) -> Iterator[R]:
    """``job(j)`` for every ``j`` of ``jobs``, in order; in ``workers`` processes when > 1.

    The one process-pool runner of the preparation steps (supervision, observations): ``job``
    must be a module-level function and its argument picklable.
    """
    if workers <= 1:
        for j in jobs:
            yield job(j)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(job, jobs, chunksize=1)


def sample_identity_dataset(manager, root: Union[str, Path], subjects: Sequence[int],
                            settings: IdentitySettings = IdentitySettings(), seed: int = 0, workers: int = 1,
                            overwrite: bool = False) -> Iterator[List[ItemResult]]:
    """Identity supervision of ``subjects`` into ``root``; yields the results of one subject
    at a time (in order)."""
    jobs = [(manager, root, s, settings, seed, overwrite) for s in subjects]
    yield from run_jobs(_identity_job, jobs, workers)


def sample_deformation_dataset(manager, root: Union[str, Path], subjects: Sequence[int],
                               settings: DeformationSettings = DeformationSettings(), seed: int = 0,
                               workers: int = 1, overwrite: bool = False) -> Iterator[List[ItemResult]]:
    """Correspondences of every expression of ``subjects`` into ``root``; yields the results
    of one subject at a time (in order)."""
    jobs = [(manager, root, s, settings, seed, overwrite) for s in subjects]
    yield from run_jobs(_deformation_job, jobs, workers)
