"""Reading and writing YAML configs: the one place that parses and writes them.

Training configs (``configs/nphm.yaml`` ...), experiment copies (``EXPERIMENT_DIR/*/configs.yaml``)
and fitting configs (``configs/fitting_*.yaml``) all go through :func:`load_yaml` and
:func:`save_yaml`; the typed views of their sections live next to what they configure
(:mod:`nphm.training.config`, :mod:`nphm.fitting.config`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping

import yaml

from nphm.utils.io import PathLike, atomic_path


def load_yaml(path: PathLike, what: str = "config") -> Dict[str, Any]:
    """The mapping stored in the YAML file ``path``.

    Args:
        what: what the file is, for the error messages (``"fitting config"``, ...).
    Raises:
        FileNotFoundError: there is no file at ``path``.
        ValueError: the file is not valid YAML or does not hold a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not a valid YAML {what}: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    return data


def save_yaml(path: PathLike, data: Mapping[str, Any]) -> Path:
    """Write ``data`` to ``path`` as YAML (keys in their order), atomically; returns ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(dict(data), sort_keys=False))
    return path
