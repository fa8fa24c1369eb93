"""Dataset description files: splits, neutral expressions and index tables of a dataset.

A description is a JSON file (``DATA/dataset.json`` for a generated dataset,
``dataset/nphm_release.json`` for the real NPHM release) with these keys:

- ``name``: str
- ``subjects_train``: list of subject ids, or ``null`` = every subject folder on disk that
  is neither an eval nor a test subject
- ``subjects_eval``, ``subjects_test``: lists of subject ids
- ``neutral_open``, ``neutral_closed``: ``{subject: expression}``; ``-1`` = no such scan
- ``invalid_expressions_test``: ``{subject: [expression, ...]}`` excluded from testing
- ``bad_scans``: ``{subject: [expression, ...]}`` excluded everywhere
- ``anchor_vertex_indices_registration``: 39 registration vertex indices (facial anchors)
- ``landmark_vertex_indices_registration_68``: 68 registration vertex indices
- ``throat_plane_flame_vertex_indices``: 3 FLAME vertex indices spanning the neck plane
- ``unobserved_local_latent_indices_in_fitting``: local latent codes regularised strongly
  in single-view fitting
- ``assets``: ``{key: file}`` with at least ``anchors_mean``, ``face_mask_registration``,
  ``face_region_flame`` and ``template``
- ``assets_dir`` (optional): folder of the asset files, relative to the description file;
  missing or ``null`` means ``nphm.paths.ASSETS``.

Any other key is kept in :attr:`DatasetDescription.extra`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from nphm import paths
from nphm.utils.io import PathLike

N_ANCHORS = 39
N_LANDMARKS = 68
REQUIRED_ASSETS = ("anchors_mean", "face_mask_registration", "face_region_flame", "template")


class DescriptionError(ValueError):
    """A dataset description file is malformed; the message names the file and the key."""


def _fail(source: str, key: str, problem: str) -> DescriptionError:
    return DescriptionError(f"{source}: key '{key}': {problem}")


def _as_int(value: Any, source: str, key: str) -> int:
    # bool is an int subclass, but True as a subject id is certainly a mistake
    if isinstance(value, bool):
        raise _fail(source, key, f"expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise _fail(source, key, f"expected an integer, got {value!r}")


def _int_list(value: Any, source: str, key: str, length: Optional[int] = None,
              non_negative: bool = True) -> List[int]:
    if not isinstance(value, (list, tuple)):
        raise _fail(source, key, f"expected a list of integers, got {type(value).__name__}")
    out = [_as_int(v, source, f"{key}[{i}]") for i, v in enumerate(value)]
    if non_negative and any(v < 0 for v in out):
        raise _fail(source, key, f"negative entry {min(out)}")
    if length is not None and len(out) != length:
        raise _fail(source, key, f"expected {length} entries, got {len(out)}")
    return out


def _int_map(value: Any, source: str, key: str) -> Dict[int, int]:
    if not isinstance(value, Mapping):
        raise _fail(source, key, f"expected an object {{subject: expression}}, got {type(value).__name__}")
    out = {}
    for k, v in value.items():
        subject = _as_int(k, source, f"{key}.{k}")
        expression = _as_int(v, source, f"{key}.{k}")
        if expression < -1:
            raise _fail(source, f"{key}.{k}", f"expected an expression index or -1, got {expression}")
        out[subject] = expression
    return out


def _list_map(value: Any, source: str, key: str) -> Dict[int, List[int]]:
    if not isinstance(value, Mapping):
        raise _fail(source, key, f"expected an object {{subject: [expressions]}}, got {type(value).__name__}")
    return {_as_int(k, source, f"{key}.{k}"): sorted(set(_int_list(v, source, f"{key}.{k}")))
            for k, v in value.items()}


@dataclass
class DatasetDescription:
    """Validated content of a dataset description file (see the module docstring)."""

    name: str
    subjects_train: Optional[List[int]]
    subjects_eval: List[int]
    subjects_test: List[int]
    neutral_open: Dict[int, int]
    neutral_closed: Dict[int, int]
    invalid_expressions_test: Dict[int, List[int]]
    bad_scans: Dict[int, List[int]]
    anchor_vertex_indices_registration: List[int]
    landmark_vertex_indices_registration_68: List[int]
    throat_plane_flame_vertex_indices: List[int]
    unobserved_local_latent_indices_in_fitting: List[int]
    assets: Dict[str, str]
    assets_dir: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict)
    #: The file this description was read from (None when built in memory).
    source: Optional[Path] = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: Optional[PathLike] = None) -> "DatasetDescription":
        """Validate ``data`` (the parsed JSON) and build a description.

        Raises :class:`DescriptionError` naming ``source`` and the offending key.
        """
        src = str(source) if source is not None else "<dataset description>"
        if not isinstance(data, Mapping):
            raise DescriptionError(f"{src}: expected a JSON object at the top level, got {type(data).__name__}")
        required = ("name", "subjects_train", "subjects_eval", "subjects_test", "neutral_open",
                    "neutral_closed", "invalid_expressions_test", "bad_scans",
                    "anchor_vertex_indices_registration", "landmark_vertex_indices_registration_68",
                    "throat_plane_flame_vertex_indices", "unobserved_local_latent_indices_in_fitting",
                    "assets")
        missing = [k for k in required if k not in data]
        if missing:
            raise DescriptionError(f"{src}: missing key(s) {', '.join(repr(k) for k in missing)}")

        name = data["name"]
        if not isinstance(name, str) or not name:
            raise _fail(src, "name", f"expected a non-empty string, got {name!r}")
        train = data["subjects_train"]
        train = None if train is None else _int_list(train, src, "subjects_train")
        eval_ = _int_list(data["subjects_eval"], src, "subjects_eval")
        test = _int_list(data["subjects_test"], src, "subjects_test")
        for key, subjects in (("subjects_train", train or []), ("subjects_eval", eval_), ("subjects_test", test)):
            if len(set(subjects)) != len(subjects):
                dup = sorted({s for s in subjects if subjects.count(s) > 1})
                raise _fail(src, key, f"duplicate subject(s) {dup}")
        overlap = set(eval_) & set(test)
        if overlap:
            raise _fail(src, "subjects_eval", f"subject(s) {sorted(overlap)} are also test subjects")
        if train is not None:
            overlap = set(train) & (set(eval_) | set(test))
            if overlap:
                raise _fail(src, "subjects_train", f"subject(s) {sorted(overlap)} are also eval/test subjects")

        invalid = _list_map(data["invalid_expressions_test"], src, "invalid_expressions_test")
        not_test = sorted(set(invalid) - set(test))
        if not_test:
            raise _fail(src, "invalid_expressions_test", f"subject(s) {not_test} are not test subjects")

        throat = _int_list(data["throat_plane_flame_vertex_indices"], src,
                           "throat_plane_flame_vertex_indices", length=3)
        if len(set(throat)) != 3:
            raise _fail(src, "throat_plane_flame_vertex_indices", "the three vertices must be distinct")

        assets = data["assets"]
        if not isinstance(assets, Mapping) or not all(isinstance(v, str) and v for v in assets.values()):
            raise _fail(src, "assets", "expected an object {key: file name}")
        missing = [k for k in REQUIRED_ASSETS if k not in assets]
        if missing:
            raise _fail(src, "assets", f"missing entr(y/ies) {missing}")
        assets_dir = data.get("assets_dir")
        if assets_dir is not None and not (isinstance(assets_dir, str) and assets_dir):
            raise _fail(src, "assets_dir", f"expected a folder name or null, got {assets_dir!r}")

        extra = {k: v for k, v in data.items() if k not in required and k != "assets_dir"}
        return cls(
            name=name,
            subjects_train=train,
            subjects_eval=eval_,
            subjects_test=test,
            neutral_open=_int_map(data["neutral_open"], src, "neutral_open"),
            neutral_closed=_int_map(data["neutral_closed"], src, "neutral_closed"),
            invalid_expressions_test=invalid,
            bad_scans=_list_map(data["bad_scans"], src, "bad_scans"),
            anchor_vertex_indices_registration=_int_list(
                data["anchor_vertex_indices_registration"], src, "anchor_vertex_indices_registration",
                length=N_ANCHORS),
            landmark_vertex_indices_registration_68=_int_list(
                data["landmark_vertex_indices_registration_68"], src,
                "landmark_vertex_indices_registration_68", length=N_LANDMARKS),
            throat_plane_flame_vertex_indices=throat,
            unobserved_local_latent_indices_in_fitting=_int_list(
                data["unobserved_local_latent_indices_in_fitting"], src,
                "unobserved_local_latent_indices_in_fitting"),
            assets=dict(assets),
            assets_dir=assets_dir,
            extra=extra,
            source=Path(source) if source is not None else None,
        )

    @classmethod
    def load(cls, path: PathLike) -> "DatasetDescription":
        """Read and validate a description file; errors name ``path``."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"dataset description not found: {path}")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise DescriptionError(f"{path}: not valid JSON ({e})") from e
        return cls.from_dict(data, source=path)

    @classmethod
    def find(cls, data_dir: PathLike) -> "DatasetDescription":
        """The description for a dataset folder: ``data_dir/dataset.json`` if present,
        otherwise ``nphm.paths.DATASET_DESCRIPTION`` (the real release)."""
        local = Path(data_dir) / "dataset.json"
        if local.is_file():
            return cls.load(local)
        return cls.load(paths.DATASET_DESCRIPTION)

    def to_dict(self) -> Dict[str, Any]:
        """The JSON form (integer keys written as strings)."""
        out: Dict[str, Any] = {
            "name": self.name,
            "subjects_train": self.subjects_train,
            "subjects_eval": self.subjects_eval,
            "subjects_test": self.subjects_test,
            "neutral_open": {str(k): v for k, v in self.neutral_open.items()},
            "neutral_closed": {str(k): v for k, v in self.neutral_closed.items()},
            "invalid_expressions_test": {str(k): v for k, v in self.invalid_expressions_test.items()},
            "bad_scans": {str(k): v for k, v in self.bad_scans.items()},
            "anchor_vertex_indices_registration": self.anchor_vertex_indices_registration,
            "landmark_vertex_indices_registration_68": self.landmark_vertex_indices_registration_68,
            "throat_plane_flame_vertex_indices": self.throat_plane_flame_vertex_indices,
            "unobserved_local_latent_indices_in_fitting": self.unobserved_local_latent_indices_in_fitting,
            "assets_dir": self.assets_dir,
            "assets": self.assets,
        }
        out.update(self.extra)
        return out

    def save(self, path: PathLike) -> None:
        """Write the description as JSON (atomically)."""
        from nphm.utils.io import save_json

        save_json(path, self.to_dict())

    # ------------------------------------------------------------------ queries
    @property
    def assets_root(self) -> Path:
        """Folder holding the asset files (``assets_dir`` relative to the description file,
        or ``nphm.paths.ASSETS`` when not given)."""
        if self.assets_dir is None:
            return Path(paths.ASSETS)
        root = Path(self.assets_dir).expanduser()
        if not root.is_absolute() and self.source is not None:
            root = self.source.parent / root
        return root

    def asset_path(self, key: str) -> Path:
        """Path of the asset file registered under ``key`` (e.g. ``"anchors_mean"``)."""
        if key not in self.assets:
            raise KeyError(f"{self.source or '<dataset description>'}: no asset '{key}' "
                           f"(known: {sorted(self.assets)})")
        return self.assets_root / self.assets[key]

    def neutral(self, subject: int, kind: str = "open") -> Optional[int]:
        """Neutral expression index of ``subject`` or None when missing (-1 or not listed)."""
        if kind not in ("open", "closed"):
            raise ValueError(f"unknown neutral kind {kind!r}; expected 'open' or 'closed'")
        table = self.neutral_open if kind == "open" else self.neutral_closed
        expression = table.get(int(subject), -1)
        return None if expression < 0 else expression
