"""Atomic file output: every file is written under a temporary name and renamed.

A crash or an interrupt therefore never leaves a half-written output that a later
"skip finished items" check would mistake for a finished one.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Union

import numpy as np

PathLike = Union[str, os.PathLike]


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds.

    The temporary name keeps the suffix of ``path`` so that writers which choose the
    format by extension (trimesh, numpy) keep working.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 files; give the result the usual permissions (0666 minus umask).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def save_npy(path: PathLike, array: np.ndarray) -> None:
    """``np.save`` that never leaves a partial file."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(array))


def save_json(path: PathLike, data: Any, indent: int = 2) -> None:
    """Write ``data`` as JSON atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=indent, sort_keys=False) + "\n")


def save_mesh(path: PathLike, mesh: "trimesh.Trimesh") -> None:  # noqa: F821
    """Export a trimesh mesh atomically; the format follows the suffix of ``path``."""
    with atomic_path(path) as tmp:
        mesh.export(str(tmp))


def claim_output_dir(out_dir: PathLike, settings: Any, overwrite: bool, hint: str) -> None:
    """Record ``settings`` in ``out_dir/settings.json``, refusing a folder that holds results made
    with other settings (unless ``overwrite``), so that resumed runs never mix settings.

    ``hint`` ends the error message (what to do instead).
    """
    path = Path(out_dir) / "settings.json"
    current = json.loads(json.dumps(settings))
    if path.is_file() and not overwrite:
        old = json.loads(path.read_text())
        if old != current:
            changed = sorted(k for k in set(old) | set(current) if old.get(k) != current.get(k))
            raise ValueError(f"{out_dir} holds results of other settings (differences: {changed}); {hint}")
    save_json(path, current)
