"""Storage of the training supervision: our compact layout and the release's chunked one.

Compact layout (written by :mod:`nphm.preprocessing.identity` / ``.deformation``)::

    SUPERVISION_IDENTITY/{subject:03d}/{expression}_face.npy        (N_face, 6) float32
                                      /{expression}_non_face.npy    (N_non_face, 6) float32
        rows [x, y, z, nx, ny, nz]: points on the neutral scan (nphm frame) and unit normals
    SUPERVISION_DEFORMATION_OPEN/{subject:03d}/{expression:03d}/corresp.npy   (N, 6) float32
        rows [x_neutral (3), x_posed (3)] in the nphm frame, rows in random order

These are exactly the release's per-item arrays, each kept in one ``.npy`` file instead of
100-200 chunk files. Training reads random rows through a memory map, so a file is never
loaded whole. Every file is written atomically (temporary name, then rename), so an item is
finished exactly when its files exist.

Release layout (read only)::

    SUPERVISION_IDENTITY/{subject:03d}/{expression}_{i}_face.npy, {expression}_{i}_non_face.npy
    SUPERVISION_DEFORMATION_OPEN/{subject:03d}/{expression:03d}/corresp_{i}.npy

The chunks of an item are read as one array (their concatenation); the release picks a random
chunk and then random rows of it, which for its equal-sized random chunks is the same
distribution as random rows of the concatenation.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from nphm.utils.io import PathLike, save_npy


#: Columns of every supervision array.
N_COLUMNS = 6


class SupervisionError(ValueError):
    """A supervision file is missing, unreadable or malformed; the message names it."""


# ----------------------------------------------------------------------------- row arrays
class RowArray:
    """Rows of one or more ``(n_i, 6)`` ``.npy`` files, read through memory maps.

    The files are validated (readable header, 2-D, 6 float columns, at least one row) when
    the object is built; the maps themselves are opened lazily in each process, so the object
    is cheap to send to data-loader workers.
    """

    def __init__(self, paths: Sequence[PathLike]) -> None:
        if not paths:
            raise SupervisionError("no supervision files given")
        self.paths: List[Path] = [Path(p) for p in paths]
        lengths = [self._check(p) for p in self.paths]
        self.offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self._maps: Optional[List[np.ndarray]] = None

    @staticmethod
    def _check(path: Path) -> int:
        if not path.is_file():
            raise SupervisionError(f"supervision file not found: {path}")
        try:
            arr = np.load(path, mmap_mode="r")
        except Exception as e:  # truncated header, not an .npy file, pickled object, ...
            raise SupervisionError(f"{path}: cannot read supervision array ({type(e).__name__}: {e})") from e
        if arr.ndim != 2 or arr.shape[1] != N_COLUMNS:
            raise SupervisionError(f"{path}: expected an (N, {N_COLUMNS}) array, got shape {arr.shape}")
        if not np.issubdtype(arr.dtype, np.floating):
            raise SupervisionError(f"{path}: expected float values, got dtype {arr.dtype}")
        if arr.shape[0] == 0:
            raise SupervisionError(f"{path}: the array has no rows")
        return int(arr.shape[0])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getstate__(self) -> Dict:
        state = dict(self.__dict__)
        state["_maps"] = None
        return state

    def _arrays(self) -> List[np.ndarray]:
        if self._maps is None:
            self._maps = [np.load(p, mmap_mode="r") for p in self.paths]
        return self._maps

    def take(self, rows: np.ndarray) -> np.ndarray:
        """float32 ``(len(rows), 6)``: the requested rows (indices into the concatenation).

        Raises:
            SupervisionError: a row holds non-finite values (naming the file).
        """
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), N_COLUMNS), dtype=np.float32)
        arrays = self._arrays()
        chunk = np.searchsorted(self.offsets, rows, side="right") - 1
        for c in np.unique(chunk):
            sel = chunk == c
            try:
                out[sel] = arrays[c][rows[sel] - self.offsets[c]]
            except Exception as e:
                raise SupervisionError(f"{self.paths[c]}: cannot read rows ({type(e).__name__}: {e})") from e
            if not np.all(np.isfinite(out[sel])):
                raise SupervisionError(f"{self.paths[c]}: non-finite values in the supervision rows")
        return out

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` rows drawn uniformly with replacement (the release's ``randint`` sampling)."""
        return self.take(rng.integers(0, len(self), size=n))


def _chunks(folder: Path, pattern: str) -> List[Path]:
    """Files of ``folder`` whose names match ``pattern`` (one group: the chunk index), by index.

    Raises:
        SupervisionError: the chunk indices are not 0..K-1.
    """
    if not folder.is_dir():
        return []
    regex = re.compile(pattern)
    found = {}
    for p in folder.iterdir():
        m = regex.fullmatch(p.name)
        if m:
            found[int(m.group(1))] = p
    if found and sorted(found) != list(range(len(found))):
        missing = sorted(set(range(max(found) + 1)) - set(found))
        raise SupervisionError(f"{folder}: incomplete chunked supervision ({pattern}), missing chunk(s) {missing[:10]}")
    return [found[i] for i in sorted(found)]


# ----------------------------------------------------------------------------- identity
def identity_dir(root: PathLike, subject: int) -> Path:
    return Path(root) / f"{int(subject):03d}"


def identity_paths(root: PathLike, subject: int, expression: int) -> Tuple[Path, Path]:
    """Compact files ``({expression}_face.npy, {expression}_non_face.npy)`` of one subject."""
    folder = identity_dir(root, subject)
    return folder / f"{int(expression)}_face.npy", folder / f"{int(expression)}_non_face.npy"


def release_identity_chunks(root: PathLike, subject: int, expression: int) -> Tuple[List[Path], List[Path]]:
    """The release's chunk files ``({e}_{i}_face.npy ..., {e}_{i}_non_face.npy ...)``."""
    folder = identity_dir(root, subject)
    e = int(expression)
    return _chunks(folder, rf"{e}_(\d+)_face\.npy"), _chunks(folder, rf"{e}_(\d+)_non_face\.npy")


def identity_done(root: PathLike, subject: int, expression: int) -> bool:
    """Whether the identity supervision of ``(subject, expression)`` exists (either layout)."""
    face, non_face = identity_paths(root, subject, expression)
    if face.is_file() and non_face.is_file():
        return True
    try:
        chunks = release_identity_chunks(root, subject, expression)
    except SupervisionError:
        return False
    return bool(chunks[0]) and bool(chunks[1])


def open_identity(root: PathLike, subject: int, expression: int) -> Tuple[RowArray, RowArray]:
    """``(face, non_face)`` row arrays of a subject's identity supervision (compact layout
    first, else the release's chunks).

    Raises:
        SupervisionError: nothing found, or a file is unreadable / malformed (named).
    """
    face, non_face = identity_paths(root, subject, expression)
    if face.exists() or non_face.exists():
        return RowArray([face]), RowArray([non_face])
    face_chunks, non_face_chunks = release_identity_chunks(root, subject, expression)
    if face_chunks or non_face_chunks:
        if not face_chunks or not non_face_chunks:
            which = "face" if not face_chunks else "non-face"
            raise SupervisionError(f"{identity_dir(root, subject)}: release chunks of expression {expression} "
                                   f"have no {which} files")
        return RowArray(face_chunks), RowArray(non_face_chunks)
    raise SupervisionError(f"identity supervision of subject {subject} (expression {expression}) not found: "
                           f"expected {face} and {non_face} (run scripts/data_processing/sample_surface.py)")


def write_identity(root: PathLike, subject: int, expression: int, face: np.ndarray, non_face: np.ndarray) -> None:
    """Write both identity arrays (float32, atomically; the face file last, so that a
    present face file means a finished item)."""
    face_path, non_face_path = identity_paths(root, subject, expression)
    for name, arr in (("non_face", non_face), ("face", face)):
        arr = np.asarray(arr)
        if arr.ndim != 2 or arr.shape[1] != N_COLUMNS:
            raise ValueError(f"{name} supervision must be (N, {N_COLUMNS}), got {arr.shape}")
    save_npy(non_face_path, np.asarray(non_face, dtype=np.float32))
    save_npy(face_path, np.asarray(face, dtype=np.float32))


# ----------------------------------------------------------------------------- deformation
def deformation_dir(root: PathLike, subject: int, expression: int) -> Path:
    return Path(root) / f"{int(subject):03d}" / f"{int(expression):03d}"


def deformation_path(root: PathLike, subject: int, expression: int) -> Path:
    """Compact file ``{subject:03d}/{expression:03d}/corresp.npy``."""
    return deformation_dir(root, subject, expression) / "corresp.npy"


def release_deformation_chunks(root: PathLike, subject: int, expression: int) -> List[Path]:
    """The release's chunk files ``corresp_{i}.npy`` of one item."""
    return _chunks(deformation_dir(root, subject, expression), r"corresp_(\d+)\.npy")


def deformation_done(root: PathLike, subject: int, expression: int) -> bool:
    """Whether the correspondences of ``(subject, expression)`` exist (either layout)."""
    if deformation_path(root, subject, expression).is_file():
        return True
    try:
        return bool(release_deformation_chunks(root, subject, expression))
    except SupervisionError:
        return False


def open_deformation(root: PathLike, subject: int, expression: int) -> RowArray:
    """Row array ``[x_neutral, x_posed]`` of one item (compact layout first, else release chunks).

    Raises:
        SupervisionError: nothing found, or a file is unreadable / malformed (named).
    """
    path = deformation_path(root, subject, expression)
    if path.exists():
        return RowArray([path])
    chunks = release_deformation_chunks(root, subject, expression)
    if chunks:
        return RowArray(chunks)
    raise SupervisionError(f"deformation supervision of subject {subject}, expression {expression} not found: "
                           f"expected {path} (run scripts/data_processing/sample_deformation_field.py)")


def write_deformation(root: PathLike, subject: int, expression: int, pairs: np.ndarray) -> None:
    """Write the ``(N, 6)`` correspondence array of one item (float32, atomically)."""
    pairs = np.asarray(pairs)
    if pairs.ndim != 2 or pairs.shape[1] != N_COLUMNS:
        raise ValueError(f"correspondences must be (N, {N_COLUMNS}), got {pairs.shape}")
    save_npy(deformation_path(root, subject, expression), pairs.astype(np.float32))
