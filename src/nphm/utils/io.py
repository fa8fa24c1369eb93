"""Atomic file output: every file is written under a temporary name and renamed.

A crash or an interrupt therefore never leaves a half-written output that a later
"skip finished items" check would mistake for a finished one. What a killed writer leaves is
its temporary file, named ``.{stem}.{random}.{pid}-{host}.tmp{suffix}``;
:func:`remove_stale_temporaries` deletes those whose writer is gone (the batch steps call it
when they start).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, List, Optional, Union

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
    owner = f".{os.getpid()}-{host_name()}"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f"{owner}.tmp{path.suffix}", dir=path.parent)
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


def host_name() -> str:
    """This machine's short host name, reduced to ``[A-Za-z0-9-]`` (used in file names)."""
    name = socket.gethostname().split(".")[0]
    return re.sub(r"[^A-Za-z0-9-]", "-", name) or "host"


def process_alive(pid: int) -> bool:
    """Whether a process with id ``pid`` exists on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


#: Temporary names of :func:`atomic_path`: ``.{stem}.{random}.{pid}-{host}.tmp{suffix}``; the
#: owner part is absent in files of older versions.
_TEMPORARY = re.compile(r"^\..+\.[A-Za-z0-9_]{8}(?:\.(?P<pid>\d+)-(?P<host>[A-Za-z0-9-]+))?\.tmp(?:\.[^.]*)?$")

#: Age after which a temporary file of another machine (or of an unknown writer) is stale: a
#: live writer rewrites its file continuously, so an hour without a change means it is gone.
STALE_TEMPORARY_SECONDS = 3600.0


def is_temporary(path: PathLike) -> bool:
    """Whether ``path`` is named like a temporary file of :func:`atomic_path`."""
    return _TEMPORARY.match(Path(path).name) is not None


def is_stale_temporary(path: PathLike, max_age_s: float = STALE_TEMPORARY_SECONDS,
                       now: Optional[float] = None) -> bool:
    """Whether ``path`` is a temporary file of :func:`atomic_path` whose writer is gone.

    On this machine the writer's pid decides (never a file of a live process); for files of
    other machines, and of older versions without an owner in the name, the age alone
    (``max_age_s`` since the last change: a writer rewrites its file continuously).
    """
    path = Path(path)
    m = _TEMPORARY.match(path.name)
    if m is None:
        return False
    if m.group("pid") is not None and m.group("host") == host_name():
        return not process_alive(int(m.group("pid")))
    try:
        age = (time.time() if now is None else now) - path.stat().st_mtime
    except FileNotFoundError:
        return False
    return age > max_age_s


def remove_stale_temporaries(folder: PathLike, recursive: bool = True,
                             max_age_s: float = STALE_TEMPORARY_SECONDS) -> List[Path]:
    """Delete the temporary files of killed :func:`atomic_path` writers below ``folder``
    (see :func:`is_stale_temporary`); returns the deleted paths. A missing folder is empty."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in (folder.rglob(".*.tmp*") if recursive else folder.glob(".*.tmp*")):
        if path.is_file() and is_stale_temporary(path, max_age_s):
            try:
                path.unlink()
                removed.append(path)
            except FileNotFoundError:  # removed by a concurrent cleaner
                pass
    return removed


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
