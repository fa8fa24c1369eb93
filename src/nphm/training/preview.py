"""Preview meshes during training (their pictures: :func:`nphm.pictures.render_mesh_grid`)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import trimesh

from nphm.utils.io import PathLike, save_mesh


def save_preview_mesh(path: PathLike, mesh: Optional[trimesh.Trimesh]) -> Optional[Path]:
    """Write ``mesh`` (skipped when None); returns the path written."""
    if mesh is None:
        return None
    save_mesh(path, mesh)
    return Path(path)


def try_mesh(fn, *args, **kwargs) -> Tuple[Optional[trimesh.Trimesh], str]:
    """``fn(*args, **kwargs)`` or ``(None, reason)`` when the level set has no surface yet."""
    try:
        return fn(*args, **kwargs), ""
    except ValueError as e:
        return None, str(e)
