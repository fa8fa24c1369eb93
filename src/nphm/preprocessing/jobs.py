"""Batch preparation of the supervision over a dataset: one job per subject, run in parallel,
finished items skipped, failures reported (never raised) so that a run always completes.

Every item's outcome goes into the ledger of the output root (``ROOT/ledger``, see
:class:`nphm.utils.batch.BatchFolder`), a failure naming the file to blame; each item is claimed
first (``ROOT/claims``), so several workers (processes, machines) can prepare one root at once.

Randomness is keyed by ``(seed, subject, expression, stream)``: an item gets the same samples
whatever the number of workers and the order of processing.
"""
from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, TypeVar, Union

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
from nphm.utils.batch import DATASET, GROUND_TRUTH, BatchFolder, blame, take_shard
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
def identity_folder(root: Union[str, Path], claims: bool = True) -> BatchFolder:
    """Ledger and claims of an identity supervision root."""
    return BatchFolder(root, "identity supervision", claims=claims)


def deformation_folder(root: Union[str, Path], claims: bool = True) -> BatchFolder:
    """Ledger and claims of a deformation supervision root."""
    return BatchFolder(root, "deformation supervision", claims=claims)


def _no_neutral(folder: BatchFolder, manager, subject: int, error: Exception) -> ItemResult:
    source = manager.description.source or manager.description.name
    result = ItemResult(int(subject), -1, "failed", str(error), role=DATASET, file=str(source))
    folder.ledger.record_result(result)
    return result


def identity_item(manager, root: Union[str, Path], subject: int, settings: IdentitySettings, seed: int,
                  overwrite: bool = False, folder: Optional[BatchFolder] = None) -> List[ItemResult]:
    """Sample and store the identity supervision of one subject (its neutral-open scan)."""
    folder = folder if folder is not None else identity_folder(root)
    try:
        expression = manager.neutral_expression(subject, "open")
    except LookupError as e:
        return [_no_neutral(folder, manager, subject, e)]

    def work() -> ItemResult:
        start = time.time()
        scan = blame(GROUND_TRUTH, manager.scan_path(subject, expression), lambda: manager.load_scan(subject, expression))
        reg_path = manager.registration_path(subject, expression)
        registration = blame(GROUND_TRUTH, reg_path, lambda: manager.load_registration(subject, expression))
        mask = manager.face_mask_registration
        if mask.shape[0] != len(registration.vertices):
            raise ValueError(f"face mask has {mask.shape[0]} entries, registration {reg_path} has "
                             f"{len(registration.vertices)} vertices")
        samples = blame(GROUND_TRUTH, manager.scan_path(subject, expression), lambda: sample_identity_supervision(
            np.asarray(scan.vertices), np.asarray(scan.faces), np.asarray(registration.vertices)[mask],
            lambda p: manager.neck_keep_mask(p, subject, expression),
            settings.n_samples, settings.n_non_face, item_generator(seed, subject, expression, _STREAM_IDENTITY),
            face_radius=settings.face_radius,
        ))
        storage.write_identity(root, subject, expression, samples.face, samples.non_face)
        msg = f"{len(samples.face)} face / {len(samples.non_face)} non-face points"
        return ItemResult(subject, expression, "done", msg, time.time() - start)

    return [folder.run_item(subject, expression, lambda: storage.identity_done(root, subject, expression), work,
                            overwrite)]


# ----------------------------------------------------------------------------- deformation
def deformation_items(manager, root: Union[str, Path], subject: int, settings: DeformationSettings, seed: int,
                      overwrite: bool = False, folder: Optional[BatchFolder] = None) -> List[ItemResult]:
    """Sample and store the correspondences of every expression of one subject (including the
    neutral one itself, as the release does)."""
    folder = folder if folder is not None else deformation_folder(root)
    try:
        neutral = manager.neutral_expression(subject, "open")
    except LookupError as e:
        return [_no_neutral(folder, manager, subject, e)]
    try:
        expressions = manager.expressions(subject)
    except OSError as e:
        result = ItemResult(int(subject), -1, "failed", str(e), role=DATASET, file=str(manager.subject_dir(subject)))
        folder.ledger.record_result(result)
        return [result]
    cache: Dict[str, object] = {}

    def neutral_registration():
        if "reg" not in cache:
            path = manager.registration_path(subject, neutral)
            cache["reg"] = blame(GROUND_TRUTH, path, lambda: manager.load_registration(subject, neutral))
        return cache["reg"]

    def work_on(expression: int) -> Callable[[], ItemResult]:
        def work() -> ItemResult:
            start = time.time()
            reg_neutral = neutral_registration()
            mask = manager.face_mask_registration
            path = manager.registration_path(subject, expression)
            posed = blame(GROUND_TRUTH, path, lambda: manager.load_registration(subject, expression))
            if len(posed.faces) != len(reg_neutral.faces) or not np.array_equal(posed.faces, reg_neutral.faces):
                raise ValueError(f"{path}: topology differs from the neutral registration "
                                 f"{manager.registration_path(subject, neutral)}")
            pairs = sample_deformation_supervision(
                np.asarray(reg_neutral.vertices), np.asarray(posed.vertices), np.asarray(reg_neutral.faces), mask,
                settings.n_per_direction, item_generator(seed, subject, expression, _STREAM_DEFORMATION),
                sigmas=settings.sigmas, n_non_face_per_direction=settings.n_non_face_per_direction,
            )
            storage.write_deformation(root, subject, expression, pairs)
            return ItemResult(subject, expression, "done", f"{len(pairs)} pairs", time.time() - start)
        return work

    return [folder.run_item(subject, e, lambda e=e: storage.deformation_done(root, subject, e), work_on(e), overwrite)
            for e in expressions]


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
                            overwrite: bool = False, shard: Optional[Tuple[int, int]] = None,
                            claims: bool = True) -> Iterator[List[ItemResult]]:
    """Identity supervision of ``subjects`` (their ``shard``, see :func:`nphm.utils.batch.take_shard`)
    into ``root``; yields the results of one subject at a time (in order). Stale temporary files
    of killed writers are removed first."""
    folder = identity_folder(root, claims)
    folder.clean()
    jobs = [(manager, root, s, settings, seed, overwrite, folder) for s in take_shard(list(subjects), shard)]
    yield from run_jobs(_identity_job, jobs, workers)


def sample_deformation_dataset(manager, root: Union[str, Path], subjects: Sequence[int],
                               settings: DeformationSettings = DeformationSettings(), seed: int = 0,
                               workers: int = 1, overwrite: bool = False, shard: Optional[Tuple[int, int]] = None,
                               claims: bool = True) -> Iterator[List[ItemResult]]:
    """Correspondences of every expression of ``subjects`` (their ``shard``) into ``root``;
    yields the results of one subject at a time (in order). Stale temporary files of killed
    writers are removed first."""
    folder = deformation_folder(root, claims)
    folder.clean()
    jobs = [(manager, root, s, settings, seed, overwrite, folder) for s in take_shard(list(subjects), shard)]
    yield from run_jobs(_deformation_job, jobs, workers)
