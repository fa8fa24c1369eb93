"""Datasets, batch plans and loaders of both training stages.

Randomness: every item draws its samples from a generator keyed by ``(seed, epoch, index)``,
and the order of the items in an epoch is a permutation keyed by ``(seed, epoch)``. An epoch's
batches are therefore the same whatever the number of loader workers or processes, which is
what makes resuming exact and lets a distributed run reproduce a single-process one. Loader
workers additionally get NumPy / Python / torch seeds that differ per worker and per epoch
(:func:`seed_worker`), for any code that uses the global generators.

A missing or broken supervision file raises :class:`~nphm.preprocessing.storage.SupervisionError`
naming it, when the dataset is built (missing / unreadable / malformed files) or when an item
is read (non-finite rows); an item is never silently replaced by another.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from nphm.preprocessing.storage import RowArray, SupervisionError, open_deformation, open_identity
from nphm.utils.seeding import item_generator, item_seed

_STREAM_ITEMS, _STREAM_ORDER, _STREAM_WORKERS = 11, 12, 13
_MAX_LISTED = 10


def _open_all(opener, keys: Sequence[Tuple[int, int]], what: str) -> list:
    """``[opener(s, e) for s, e in keys]``; every broken or missing file is collected and
    reported in one :class:`SupervisionError` naming them."""
    sources, errors = [], []
    for s, e in keys:
        try:
            sources.append(opener(s, e))
        except SupervisionError as err:
            errors.append(str(err))
    if errors:
        listed = "\n  ".join(errors[:_MAX_LISTED])
        more = f"\n  ... and {len(errors) - _MAX_LISTED} more" if len(errors) > _MAX_LISTED else ""
        raise SupervisionError(f"{len(errors)} broken or missing {what} file(s):\n  {listed}{more}")
    return sources


def uniform_ball(n: int, radius: float, rng: np.random.Generator) -> np.ndarray:
    """(n, 3) points uniform in the ball of ``radius`` around the origin."""
    direction = rng.standard_normal((n, 3))
    direction /= np.maximum(np.linalg.norm(direction, axis=1, keepdims=True), 1e-12)
    r = radius * rng.random(n) ** (1.0 / 3.0)
    return direction * r[:, None]


class _KeyedDataset(Dataset):
    """Base: per-item generators keyed by ``(seed, epoch, index)``."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def item_rng(self, index: int) -> np.random.Generator:
        return item_generator(self.seed, _STREAM_ITEMS, self.epoch, index)


class IdentityDataset(_KeyedDataset):
    """Stage-1 items: one per subject (its neutral-open scan).

    Item ``i`` (arrays float32, nphm frame)::

        idx ()                 index of the subject (row of the latent table)
        points_face (n_face, 3), normals_face (n_face, 3)
        points_non_face (n_non, 3), normals_non_face (n_non, 3)
        points_far (n_far, 3)  uniform in the ball of radius ``far_radius``
        points_near (n_face + n_non, 3)  the surface points jittered by N(0, sigma_near)
        gt_anchors (39, 3)     registration anchors (only with ``with_anchors``)

    Args:
        manager: :class:`nphm.data.DataManager`.
        root: SUPERVISION_IDENTITY folder.
        split: subject split ("train" / "eval"), or ``subjects`` explicitly.
    """

    def __init__(
        self,
        manager,
        root: Union[str, Path],
        split: str = "train",
        n_face: int = 750,
        n_non_face: int = 50,
        n_far: int = 93,
        sigma_near: float = 0.01,
        far_radius: float = 0.5 ** (1.0 / 3.0),
        with_anchors: bool = True,
        seed: int = 0,
        subjects: Optional[Sequence[int]] = None,
    ) -> None:
        super().__init__(seed)
        self.root = Path(root)
        self.subjects: List[int] = list(subjects) if subjects is not None else manager.subjects(split)
        self.expressions = [manager.neutral_expression(s, "open") for s in self.subjects]
        self.n_face, self.n_non_face, self.n_far = int(n_face), int(n_non_face), int(n_far)
        self.sigma_near, self.far_radius = float(sigma_near), float(far_radius)
        self.sources: List[Tuple[RowArray, RowArray]] = _open_all(
            lambda s, e: open_identity(self.root, s, e), list(zip(self.subjects, self.expressions)),
            "identity supervision")
        self.gt_anchors = None
        if with_anchors:
            anchors = [manager.anchors(s, e) for s, e in zip(self.subjects, self.expressions)]
            self.gt_anchors = np.asarray(anchors, dtype=np.float32).reshape(len(self.subjects), -1, 3)

    def __len__(self) -> int:
        return len(self.subjects)

    def __getitem__(self, index: int) -> Dict[str, np.ndarray]:
        rng = self.item_rng(index)
        face_rows, non_face_rows = self.sources[index]
        face = face_rows.sample(self.n_face, rng)
        non_face = non_face_rows.sample(self.n_non_face, rng)
        far = uniform_ball(self.n_far, self.far_radius, rng).astype(np.float32)
        surface = np.concatenate([face[:, :3], non_face[:, :3]])
        near = (surface + rng.standard_normal(surface.shape) * self.sigma_near).astype(np.float32)
        item = {
            "idx": np.int64(index),
            "points_face": face[:, :3],
            "normals_face": face[:, 3:],
            "points_non_face": non_face[:, :3],
            "normals_non_face": non_face[:, 3:],
            "points_far": far,
            "points_near": near,
        }
        if self.gt_anchors is not None:
            item["gt_anchors"] = self.gt_anchors[index]
        return item


class DeformationDataset(_KeyedDataset):
    """Stage-2 items: one per (subject, expression), the neutral one included.

    Item ``i``::

        idx ()                 item index (row of the expression latent table)
        subject_index ()       position of the subject in ``subjects`` (row of the identity latents)
        points_neutral (n, 3), points_posed (n, 3)   corresponding points
        points_zero (n_zero, 3)   uniform in [-zero_box, zero_box]^3 (offset regulariser)
    """

    def __init__(
        self,
        manager,
        root: Union[str, Path],
        split: str = "train",
        n_points: int = 1000,
        n_zero: int = 100,
        zero_box: float = 1.25,
        seed: int = 0,
        subjects: Optional[Sequence[int]] = None,
    ) -> None:
        super().__init__(seed)
        self.root = Path(root)
        self.subjects: List[int] = list(subjects) if subjects is not None else manager.subjects(split)
        self.neutral = {s: manager.neutral_expression(s, "open") for s in self.subjects}
        self.items: List[Tuple[int, int, int]] = [
            (s, e, i) for i, s in enumerate(self.subjects) for e in manager.expressions(s)
        ]
        self.n_points, self.n_zero, self.zero_box = int(n_points), int(n_zero), float(zero_box)
        self.sources: List[RowArray] = _open_all(
            lambda s, e: open_deformation(self.root, s, e), [(s, e) for s, e, _ in self.items],
            "deformation supervision")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Dict[str, np.ndarray]:
        rng = self.item_rng(index)
        pairs = self.sources[index].sample(self.n_points, rng)
        zero = ((rng.random((self.n_zero, 3)) * 2.0 - 1.0) * self.zero_box).astype(np.float32)
        return {
            "idx": np.int64(index),
            "subject_index": np.int64(self.items[index][2]),
            "points_neutral": pairs[:, :3],
            "points_posed": pairs[:, 3:],
            "points_zero": zero,
        }


# ----------------------------------------------------------------------------- batch plans
def epoch_batches(n_items: int, batch_size: int, seed: int, epoch: int, shuffle: bool = True) -> List[np.ndarray]:
    """The global batches of one epoch: a permutation keyed by ``(seed, epoch)`` cut into
    batches of ``batch_size`` (the last one may be smaller, as in the release)."""
    if shuffle:
        order = item_generator(seed, _STREAM_ORDER, epoch).permutation(n_items)
    else:
        order = np.arange(n_items)
    return [order[i : i + batch_size] for i in range(0, n_items, batch_size)]


def shard(batch: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """The part of a global batch that process ``rank`` handles (contiguous, sizes differ by
    at most one; empty when the batch has fewer items than processes)."""
    return np.array_split(np.asarray(batch), world_size)[rank]


def seed_worker(worker_id: int) -> None:
    """Seed NumPy and Python in a loader worker from its torch seed (which the loader derives
    from the epoch's generator and the worker id, so it differs per worker and per epoch)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def iterate_epoch(
    dataset: _KeyedDataset,
    batch_size: int,
    epoch: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    pin_memory: bool = False,
    shuffle: bool = True,
) -> Iterator[Tuple[np.ndarray, np.ndarray, Optional[Dict[str, torch.Tensor]]]]:
    """Yield ``(global_batch, local_batch, collated local batch or None)`` for one epoch.

    Every process yields one entry per global batch, so all processes step together; a process
    whose share of a batch is empty gets ``None``.
    """
    dataset.set_epoch(epoch)
    batches = epoch_batches(len(dataset), batch_size, seed, epoch, shuffle)
    local = [shard(b, rank, world_size) for b in batches]
    non_empty = [lb.tolist() for lb in local if len(lb)]
    generator = torch.Generator()
    generator.manual_seed(item_seed(seed, _STREAM_WORKERS, epoch, rank))
    loader = DataLoader(
        dataset,
        batch_sampler=non_empty,
        num_workers=num_workers if non_empty else 0,
        worker_init_fn=seed_worker,
        generator=generator,
        pin_memory=pin_memory,
    )
    it = iter(loader)
    for gb, lb in zip(batches, local):
        yield gb, lb, (next(it) if len(lb) else None)
