"""Access to a dataset in the NPHM layout (the real release or a generated one).

Layout (see ``dataset/README.md``)::

    DATA/{subject:03d}/{expression:03d}/scan.ply          raw scan, nphm frame
                                       /registration.ply  registration (template topology)
                                       /flame.ply         FLAME fit (FLAME topology)
                                       /s.npy R.npy t.npy similarity raw <-> nphm
    DATA_SINGLE_VIEW/{subject:03d}/{expression}/obs.npy, obs_back.npy, full_obs.npy, full_obs_back.npy

Splits, neutral expressions, excluded scans and vertex index tables come from a
:class:`~nphm.data.description.DatasetDescription`.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import trimesh

from nphm.data import frames
from nphm import paths
from nphm.data.description import DatasetDescription
from nphm.utils.io import PathLike


_INDEX_DIR = re.compile(r"^\d{3,}$")
SPLITS = ("train", "eval", "test", "all")


class MissingNeutralError(LookupError):
    """A subject has no neutral expression of the requested kind."""


class MeshLoadError(ValueError):
    """A mesh file exists but cannot be read as a triangle mesh."""


def load_mesh(path: PathLike) -> trimesh.Trimesh:
    """Load a triangle mesh keeping its vertex order (``process=False``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        MeshLoadError: the file is not a readable, non-empty triangle mesh.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mesh file not found: {path}")
    try:
        mesh = trimesh.load(str(path), process=False, force="mesh")
    except Exception as e:  # trimesh raises many different types for corrupt files
        raise MeshLoadError(f"{path}: cannot read mesh, the file is truncated or corrupt "
                            f"({type(e).__name__}: {e})") from e
    if not isinstance(mesh, trimesh.Trimesh):
        raise MeshLoadError(f"{path}: expected a triangle mesh, got {type(mesh).__name__}")
    if len(mesh.faces) == 0:
        # force="mesh" drops the vertices of a file without faces: count them from the raw load
        raw = trimesh.load(str(path), process=False) if len(mesh.vertices) == 0 else mesh
        n = len(getattr(raw, "vertices", ()))
        what = "a point cloud, not a triangle mesh" if n else "an empty file"
        raise MeshLoadError(f"{path}: {n} vertices and no faces ({what})")
    bad = int((~np.isfinite(np.asarray(mesh.vertices))).any(axis=1).sum())
    if bad:
        raise MeshLoadError(f"{path}: {bad} of {len(mesh.vertices)} vertices have non-finite coordinates (NaN/inf)")
    return mesh


def throat_plane_from_vertices(vertices: np.ndarray, indices) -> Tuple[np.ndarray, np.ndarray]:
    """Neck-cut plane through three vertices of a FLAME-topology mesh.

    Args:
        vertices: (V, 3) FLAME-topology vertices (any frame; the plane is in the same frame).
        indices: the three vertex indices ``(i1, i2, i3)``.
    Returns:
        origin (3,) = v1 and normal (3,) = cross(v2 - v1, v3 - v1), *not* normalised (as in
        the release, so that its ``margin`` values keep their meaning).
    """
    i1, i2, i3 = (int(i) for i in indices)
    v1, v2, v3 = (np.asarray(vertices[i], dtype=np.float64) for i in (i1, i2, i3))
    return v1, np.cross(v2 - v1, v3 - v1)


def above_plane(points: np.ndarray, origin: np.ndarray, normal: np.ndarray, margin: float = 0.0) -> np.ndarray:
    """bool (N,): ``(p - origin) . normal > margin`` for ``points`` (N, 3). NaN rows are False."""
    return (np.asarray(points, dtype=np.float64) - origin) @ normal > margin


class DataManager:
    """Read-only access to one dataset in the NPHM layout.

    Args:
        data_dir: dataset root (``nphm.paths.DATA`` when None).
        description: a :class:`DatasetDescription`, a path to a description file, or None
            (``data_dir/dataset.json`` if present, else ``nphm.paths.DATASET_DESCRIPTION``).
        single_view_dir: root of the single-view observations (``nphm.paths.DATA_SINGLE_VIEW``
            when None).

    Every mesh and point set is returned in the nphm frame unless a ``frame`` argument says
    otherwise. Subject and expression ids are ints.
    """

    def __init__(
        self,
        data_dir: Optional[PathLike] = None,
        description: Union[DatasetDescription, PathLike, None] = None,
        single_view_dir: Optional[PathLike] = None,
    ) -> None:
        if data_dir is None or single_view_dir is None:
            data_dir = paths.DATA if data_dir is None else data_dir
            single_view_dir = paths.DATA_SINGLE_VIEW if single_view_dir is None else single_view_dir
        self.data_dir = Path(data_dir)
        self.single_view_dir = Path(single_view_dir)
        if description is None:
            description = DatasetDescription.find(self.data_dir)
        elif not isinstance(description, DatasetDescription):
            description = DatasetDescription.load(description)
        self.description: DatasetDescription = description
        self._plane_cache: Dict[Tuple[int, int], Tuple[np.ndarray, np.ndarray]] = {}
        self._asset_cache: Dict[str, object] = {}

    def __repr__(self) -> str:
        return f"DataManager(data_dir='{self.data_dir}', description='{self.description.name}')"

    # ------------------------------------------------------------------ subjects and expressions
    def _subjects_on_disk(self) -> List[int]:
        if not self.data_dir.is_dir():
            raise FileNotFoundError(f"dataset folder not found: {self.data_dir}")
        return sorted(int(p.name) for p in self.data_dir.iterdir() if p.is_dir() and _INDEX_DIR.match(p.name))

    def has_neutral(self, subject: int, kind: str = "open") -> bool:
        """Whether the description lists a neutral expression of ``kind`` for ``subject``."""
        return self.description.neutral(subject, kind) is not None

    def subjects(self, split: str = "train", require_neutral: Optional[bool] = None) -> List[int]:
        """Sorted subject ids of a split that exist on disk.

        Args:
            split: "train" (``subjects_train``, or when null every subject folder on disk that
                is not an eval/test subject), "eval", "test", or "all" (every subject folder).
            require_neutral: drop (with a warning) subjects without a neutral-open expression.
                Default: True for train/eval (the models need the neutral scan), False for
                test/all.
        Listed subjects missing on disk are skipped with a warning.
        """
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        d = self.description
        on_disk = self._subjects_on_disk()
        if split == "all":
            subjects = on_disk
        elif split == "train" and d.subjects_train is None:
            held_out = set(d.subjects_eval) | set(d.subjects_test)
            subjects = [s for s in on_disk if s not in held_out]
        else:
            listed = {"train": d.subjects_train, "eval": d.subjects_eval, "test": d.subjects_test}[split]
            present = set(on_disk)
            missing = sorted(s for s in listed if s not in present)
            if missing:
                warnings.warn(f"{split} subjects not found in {self.data_dir}, skipped: {missing}", stacklevel=2)
            subjects = sorted(s for s in listed if s in present)
        if require_neutral is None:
            require_neutral = split in ("train", "eval")
        if require_neutral:
            no_neutral = [s for s in subjects if not self.has_neutral(s, "open")]
            if no_neutral:
                warnings.warn(f"{split} subjects without a neutral-open expression, skipped: {no_neutral}",
                              stacklevel=2)
                subjects = [s for s in subjects if s not in set(no_neutral)]
        return subjects

    def subject_dir(self, subject: int) -> Path:
        """``DATA/{subject:03d}``."""
        return self.data_dir / f"{int(subject):03d}"

    def expressions(self, subject: int, exclude_bad: bool = True) -> List[int]:
        """Sorted expression ids found on disk for ``subject`` (folders named by 3 digits),
        without the description's bad scans unless ``exclude_bad`` is False."""
        folder = self.subject_dir(subject)
        if not folder.is_dir():
            raise FileNotFoundError(f"subject folder not found: {folder}")
        found = sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and _INDEX_DIR.match(p.name))
        if exclude_bad:
            bad = set(self.description.bad_scans.get(int(subject), ()))
            found = [e for e in found if e not in bad]
        return found

    def test_expressions(self, subject: int) -> List[int]:
        """Expressions used for testing: :meth:`expressions` minus ``invalid_expressions_test``."""
        invalid = set(self.description.invalid_expressions_test.get(int(subject), ()))
        return [e for e in self.expressions(subject) if e not in invalid]

    def items(self, split: str = "train") -> List[Tuple[int, int]]:
        """All ``(subject, expression)`` pairs of a split (test: only valid test expressions)."""
        get = self.test_expressions if split == "test" else self.expressions
        return [(s, e) for s in self.subjects(split) for e in get(s)]

    def neutral_expression(self, subject: int, kind: str = "open") -> int:
        """The neutral expression id of ``subject`` (``kind`` "open" or "closed").

        Raises:
            MissingNeutralError: the description marks it missing (-1) or lacks the subject.
        """
        expression = self.description.neutral(subject, kind)
        if expression is None:
            raise MissingNeutralError(
                f"subject {int(subject)} has no neutral-{kind} expression "
                f"(neutral_{kind} in {self.description.source or self.description.name})")
        return expression

    # ------------------------------------------------------------------ paths
    def scan_dir(self, subject: int, expression: int) -> Path:
        """``DATA/{subject:03d}/{expression:03d}``."""
        return self.subject_dir(subject) / f"{int(expression):03d}"

    def scan_path(self, subject: int, expression: int) -> Path:
        """Path of the raw scan ``scan.ply``."""
        return self.scan_dir(subject, expression) / "scan.ply"

    def registration_path(self, subject: int, expression: int) -> Path:
        """Path of the registration ``registration.ply``."""
        return self.scan_dir(subject, expression) / "registration.ply"

    def flame_path(self, subject: int, expression: int) -> Path:
        """Path of the FLAME fit ``flame.ply``."""
        return self.scan_dir(subject, expression) / "flame.ply"

    def observation_dir(self, subject: int, expression: int) -> Path:
        """``DATA_SINGLE_VIEW/{subject:03d}/{expression}`` (expression not zero padded, as in the release)."""
        return self.single_view_dir / f"{int(subject):03d}" / f"{int(expression)}"

    def observation_path(self, subject: int, expression: int, back: bool = False, full: bool = False) -> Path:
        """Path of a single-view observation: ``obs.npy``, ``obs_back.npy``, ``full_obs.npy``
        or ``full_obs_back.npy``."""
        name = ("full_" if full else "") + "obs" + ("_back" if back else "") + ".npy"
        return self.observation_dir(subject, expression) / name

    # ------------------------------------------------------------------ transforms
    def transform(self, subject: int, expression: int) -> Tuple[float, np.ndarray, np.ndarray]:
        """Similarity of a scan: ``(s, R (3, 3), t (3,))`` with ``x_raw = (1/s)(x_nphm - t) @ R``."""
        folder = self.scan_dir(subject, expression)
        arrays = {}
        for name, size in (("s", 1), ("R", 9), ("t", 3)):
            path = folder / f"{name}.npy"
            if not path.is_file():
                raise FileNotFoundError(f"transform file not found: {path}")
            try:
                a = np.load(path)
            except Exception as e:
                raise ValueError(f"{path}: cannot read array ({type(e).__name__}: {e})") from e
            if a.size != size or not np.all(np.isfinite(a)):
                raise ValueError(f"{path}: expected {size} finite value(s), got shape {a.shape}")
            arrays[name] = np.asarray(a, dtype=np.float64)
        s = float(arrays["s"].reshape(-1)[0])
        if s <= 0:
            raise ValueError(f"{folder / 's.npy'}: scale must be positive, got {s}")
        return s, arrays["R"].reshape(3, 3), arrays["t"].reshape(3)

    def to_frame(self, points: np.ndarray, subject: int, expression: int, frame: str = "nphm") -> np.ndarray:
        """Map ``points`` (N, 3) from the nphm frame to ``frame`` ("nphm", "flame" or "raw")."""
        if frame == "nphm":
            return np.asarray(points, dtype=np.float64)
        if frame == "flame":
            return frames.nphm_to_flame(points)
        if frame == "raw":
            return frames.nphm_to_raw(points, *self.transform(subject, expression))
        raise ValueError(f"unknown frame {frame!r}; expected one of {frames.FRAMES}")

    # ------------------------------------------------------------------ meshes
    def _load(self, path: Path, subject: int, expression: int, frame: str) -> trimesh.Trimesh:
        if frame not in frames.FRAMES:
            raise ValueError(f"unknown frame {frame!r}; expected one of {frames.FRAMES}")
        mesh = load_mesh(path)
        if frame != "nphm":
            mesh.vertices = self.to_frame(mesh.vertices, subject, expression, frame)
        return mesh

    def load_scan(self, subject: int, expression: int, frame: str = "nphm") -> trimesh.Trimesh:
        """The raw scan as a mesh (vertex order as stored)."""
        return self._load(self.scan_path(subject, expression), subject, expression, frame)

    def load_registration(self, subject: int, expression: int, frame: str = "nphm") -> trimesh.Trimesh:
        """The registration (template topology)."""
        return self._load(self.registration_path(subject, expression), subject, expression, frame)

    def load_flame(self, subject: int, expression: int, frame: str = "nphm") -> trimesh.Trimesh:
        """The FLAME fit (FLAME topology)."""
        return self._load(self.flame_path(subject, expression), subject, expression, frame)

    def _registration_vertices(self, subject: int, expression: int, indices: List[int], what: str,
                               frame: str) -> np.ndarray:
        mesh = self.load_registration(subject, expression, frame)
        if max(indices) >= len(mesh.vertices):
            raise ValueError(f"{self.registration_path(subject, expression)}: has {len(mesh.vertices)} vertices, "
                             f"but the {what} index {max(indices)} needs at least {max(indices) + 1}")
        return np.asarray(mesh.vertices[indices], dtype=np.float64)

    def anchors(self, subject: int, expression: int, frame: str = "nphm") -> np.ndarray:
        """(39, 3) facial anchors: registration vertices at ``anchor_vertex_indices_registration``."""
        return self._registration_vertices(subject, expression, self.description.anchor_vertex_indices_registration,
                                           "anchor", frame)

    def landmarks(self, subject: int, expression: int, frame: str = "nphm") -> np.ndarray:
        """(68, 3) facial landmarks: registration vertices at ``landmark_vertex_indices_registration_68``."""
        return self._registration_vertices(subject, expression,
                                           self.description.landmark_vertex_indices_registration_68,
                                           "landmark", frame)

    # ------------------------------------------------------------------ neck cut
    def throat_plane(self, subject: int, expression: int) -> Tuple[np.ndarray, np.ndarray]:
        """Neck-cut plane of a scan in the nphm frame: ``origin (3,), normal (3,)`` from the
        FLAME fit (see :func:`throat_plane_from_vertices`; the normal is not normalised)."""
        key = (int(subject), int(expression))
        if key not in self._plane_cache:
            indices = self.description.throat_plane_flame_vertex_indices
            flame = self.load_flame(subject, expression)
            if max(indices) >= len(flame.vertices):
                raise ValueError(f"{self.flame_path(subject, expression)}: has {len(flame.vertices)} vertices, "
                                 f"but the throat plane uses vertex {max(indices)}")
            self._plane_cache[key] = throat_plane_from_vertices(flame.vertices, indices)
        return self._plane_cache[key]

    def neck_keep_mask(self, points: np.ndarray, subject: int, expression: int, margin: float = 0.0) -> np.ndarray:
        """Which points lie above the throat plane (kept by the neck cut).

        Args:
            points: (N, 3) in the nphm frame.
            margin: threshold on ``(p - origin) . normal`` with the release's un-normalised
                normal (the evaluation uses 0.003); 0 keeps the whole positive half space.
        Returns:
            bool (N,), True = keep. Non-finite points are never kept.
        """
        origin, normal = self.throat_plane(subject, expression)
        return above_plane(points, origin, normal, margin)

    # ------------------------------------------------------------------ assets
    def asset_path(self, key: str) -> Path:
        """Path of the asset registered under ``key`` in the description."""
        return self.description.asset_path(key)

    def _load_array_asset(self, key: str) -> np.ndarray:
        path = self.asset_path(key)
        if not path.is_file():
            raise FileNotFoundError(f"asset '{key}' not found: {path}")
        try:
            return np.load(path)
        except Exception as e:
            raise ValueError(f"{path}: cannot read asset '{key}' ({type(e).__name__}: {e})") from e

    @property
    def template(self) -> trimesh.Trimesh:
        """The FLAME-topology template mesh (asset ``template``)."""
        if "template" not in self._asset_cache:
            self._asset_cache["template"] = load_mesh(self.asset_path("template"))
        return self._asset_cache["template"].copy()

    @property
    def anchors_mean(self) -> np.ndarray:
        """(39, 3) mean anchor positions in the nphm frame (asset ``anchors_mean``)."""
        if "anchors_mean" not in self._asset_cache:
            a = self._load_array_asset("anchors_mean")
            if a.ndim != 2 or a.shape[1] != 3:
                raise ValueError(f"{self.asset_path('anchors_mean')}: expected shape (39, 3), got {a.shape}")
            self._asset_cache["anchors_mean"] = np.asarray(a, dtype=np.float64)
        return self._asset_cache["anchors_mean"].copy()

    @property
    def face_mask_registration(self) -> np.ndarray:
        """bool (V_reg,): face region on the registration topology (asset ``face_mask_registration``)."""
        if "face_mask_registration" not in self._asset_cache:
            m = self._load_array_asset("face_mask_registration")
            if m.ndim != 1 or m.dtype != bool:
                raise ValueError(f"{self.asset_path('face_mask_registration')}: expected a 1-D bool array, "
                                 f"got dtype {m.dtype} shape {m.shape}")
            self._asset_cache["face_mask_registration"] = m
        return self._asset_cache["face_mask_registration"].copy()

    @property
    def face_region_flame(self) -> np.ndarray:
        """bool (V_flame,): face region on the FLAME topology used by the evaluation.

        The asset ``face_region_flame`` may be a bool mask (.npy), an index list (.npy) or, as
        in the release, a mesh (.ply) whose vertices are a subset of the template's vertices.
        """
        if "face_region_flame" not in self._asset_cache:
            path = self.asset_path("face_region_flame")
            n_flame = len(self.template.vertices)
            if path.suffix.lower() == ".npy":
                a = self._load_array_asset("face_region_flame")
                if a.dtype == bool:
                    if a.shape != (n_flame,):
                        raise ValueError(f"{path}: mask has shape {a.shape}, template has {n_flame} vertices")
                    mask = a
                elif np.issubdtype(a.dtype, np.integer) and a.ndim == 1:
                    if a.size and (a.min() < 0 or a.max() >= n_flame):
                        raise ValueError(f"{path}: indices outside [0, {n_flame})")
                    mask = np.zeros(n_flame, dtype=bool)
                    mask[a] = True
                else:
                    raise ValueError(f"{path}: expected a bool mask or an index list, got dtype {a.dtype}")
            else:
                from scipy.spatial import cKDTree

                region = load_mesh(path)
                dist, idx = cKDTree(region.vertices).query(self.template.vertices)
                mask = dist <= 1e-9
                if not mask.any():
                    raise ValueError(f"{path}: no vertex coincides with a vertex of the template "
                                     f"{self.asset_path('template')}")
            self._asset_cache["face_region_flame"] = mask
        return self._asset_cache["face_region_flame"].copy()

    # ------------------------------------------------------------------ observations
    def load_observation(self, subject: int, expression: int, back: bool = False, full: bool = False) -> np.ndarray:
        """A stored single-view observation, (N, 3) float64 in the nphm frame.

        Rows that are not finite (pixels without a hit in the release's ``full_obs`` files)
        are dropped.
        """
        path = self.observation_path(subject, expression, back=back, full=full)
        if not path.is_file():
            raise FileNotFoundError(f"observation not found: {path}")
        try:
            points = np.load(path)
        except Exception as e:
            raise ValueError(f"{path}: cannot read observation ({type(e).__name__}: {e})") from e
        if points.ndim != 2 or points.shape[1] != 3:
            raise ValueError(f"{path}: expected an (N, 3) array, got shape {points.shape}")
        points = np.asarray(points, dtype=np.float64)
        return points[np.all(np.isfinite(points), axis=1)]
