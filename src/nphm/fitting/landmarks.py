"""Landmark conventions for aligning scans: which set a file holds and where it lies on the mean head.

Formats (:data:`LandmarkFormat`):

- ``"68"``: the iBUG-300W / Multi-PIE order (0-16 jaw line from the subject's right to left
  end, 17-26 brows, 27-35 nose, 36-47 eyes, 48-67 mouth; index 36 is the outer corner of the
  subject's right eye);
- ``"51"``: the same without the 17 jaw-line points (68 landmarks 17-67, in that order), as
  FLAME fitting tools use them: jaw-line points slide along the contour with the view;
- ``"39"``: the NPHM anchors in the release's order (16 symmetric pairs as (right, left), then
  7 on the symmetry plane).

A landmark file's format is chosen explicitly or from its number of rows
(:func:`resolve_format`). The reference positions (nphm frame) ship with the models, in the
file :data:`REFERENCE_FILE` of the exported models folder (written by
:func:`nphm.pretrained.write_landmark_reference`, read by :func:`load_landmark_reference`)::

    {"format_version": 1, "frame": "nphm", ...,
     "landmarks_68": [[x, y, z] * 68],        mean over the training subjects' neutral registrations
     "anchors_39": [[x, y, z] * 39],          the same mean of the 39 anchors
     "anchors_39_models": {name: [[x, y, z] * 39]},  an NPHM identity model's anchors at z = 0
     "spread_68": [68 floats], "spread_39": [39 floats]}  per-point RMS distance of the
                                                         subjects to the mean (nphm units)

The 51 reference is ``landmarks_68[17:]``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Literal, Mapping, Optional, Tuple, Union, cast

import numpy as np

from nphm.utils.io import PathLike, save_json

LandmarkFormat = Literal["68", "51", "39"]
#: Number of rows of each format.
FORMAT_COUNTS: Dict[str, int] = {"68": 68, "51": 51, "39": 39}
#: Human-readable names, for messages.
FORMAT_NAMES: Dict[str, str] = {
    "68": "68 iBUG / Multi-PIE landmarks",
    "51": "51 landmarks (iBUG 68 without the 17 jaw-line points)",
    "39": "39 NPHM anchors (release order)",
}
#: What each format's reference is and in which order its rows must be, for messages.
FORMAT_REFERENCES: Dict[str, str] = {"68": "the mean iBUG-68 landmarks", "51": "the mean iBUG-51 landmarks",
                                     "39": "the NPHM anchors"}
FORMAT_ORDERS: Dict[str, str] = {"68": "the iBUG-68 order", "51": "the iBUG-68 order without the jaw line",
                                 "39": "the NPHM anchor order (release)"}
#: The 68-landmark indices kept by the 51 format.
JAW_LINE_68 = 17
INDICES_51_IN_68 = np.arange(JAW_LINE_68, 68)
#: Name of the reference file in an exported models folder.
REFERENCE_FILE = "landmarks_reference.json"
REFERENCE_FORMAT_VERSION = 1

#: Mirror permutation of the 68 iBUG landmarks: ``p[MIRROR_68]`` is the same face mirrored
#: left/right (the subject's right eye's points become the left eye's, midline points stay).
_PAIRS_68 = (
    [(i, 16 - i) for i in range(8)]  # jaw line, 8 midline (chin)
    + [(17 + i, 26 - i) for i in range(5)]  # brows
    + [(31, 35), (32, 34)]  # nostrils; 27-30, 33 midline
    + [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
    + [(48, 54), (49, 53), (50, 52), (59, 55), (58, 56)]  # outer lip; 51, 57 midline
    + [(60, 64), (61, 63), (67, 65)]  # inner lip; 62, 66 midline
)
MIRROR_68 = np.arange(68)
for _a, _b in _PAIRS_68:
    MIRROR_68[_a], MIRROR_68[_b] = _b, _a
#: Mirror permutation of the 39 anchors: pairs (2k, 2k+1) swap, the 7 midline anchors stay.
MIRROR_39 = np.arange(39)
MIRROR_39[0:32:2], MIRROR_39[1:32:2] = np.arange(1, 32, 2), np.arange(0, 32, 2)
MIRROR_51 = MIRROR_68[INDICES_51_IN_68] - JAW_LINE_68
MIRROR: Dict[str, np.ndarray] = {"68": MIRROR_68, "51": MIRROR_51, "39": MIRROR_39}

#: iBUG-68 landmarks that expressions hardly move: the nose (27-35), the eye corners (36, 39, 42,
#: 45) and the top of the face contour next to the ears (0, 1, 15, 16). The mouth, the jaw, the
#: lids and the brows move with the expression: a laugh's mouth corners and jaw turn an Umeyama
#: start over all 68 by about 4 degrees.
RIGID_68 = np.array([0, 1, 15, 16, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 39, 42, 45])
RIGID: Dict[str, np.ndarray] = {
    "68": RIGID_68,
    "51": RIGID_68[RIGID_68 >= JAW_LINE_68] - JAW_LINE_68,
}


def rigid_landmarks(fmt: Optional[str], n_rows: int) -> np.ndarray:
    """Indices of the rows of a landmark set of format ``fmt`` that expressions hardly move
    (:data:`RIGID`), for the start of an alignment; every row for other formats (the 39 anchors,
    a custom reference)."""
    return RIGID[fmt] if fmt in RIGID and FORMAT_COUNTS[fmt] == n_rows else np.arange(n_rows)


def _accepted() -> str:
    return ", ".join(f"{n} ({FORMAT_NAMES[f]})" for f, n in FORMAT_COUNTS.items())


def resolve_format(n_rows: int, fmt: Optional[str] = "auto", source: str = "landmarks") -> LandmarkFormat:
    """The format of a landmark set of ``n_rows`` points.

    Args:
        fmt: ``"68"``, ``"51"``, ``"39"`` (checked against ``n_rows``), or ``"auto"``/None (from
            the count: each accepted count names exactly one format).
        source: what the points came from (a file name), for the messages.
    Raises:
        ValueError: unknown format, a count that does not fit the given format, or (auto) a count
            that no format has; naming ``source``, the count and the accepted counts.
    """
    fmt = "auto" if fmt is None else str(fmt)
    if fmt != "auto" and fmt not in FORMAT_COUNTS:
        raise ValueError(f"unknown landmark format {fmt!r}: use auto or one of {', '.join(FORMAT_COUNTS)}")
    if fmt == "auto":
        matches = [f for f, n in FORMAT_COUNTS.items() if n == n_rows]
        if len(matches) != 1:
            raise ValueError(f"{source}: {n_rows} landmarks fit no known format (accepted: {_accepted()}); "
                             "give a reference file for other landmark sets")
        return cast(LandmarkFormat, matches[0])
    if FORMAT_COUNTS[fmt] != n_rows:
        raise ValueError(f"{source}: {n_rows} landmarks, but format {fmt} ({FORMAT_NAMES[fmt]}) has "
                         f"{FORMAT_COUNTS[fmt]}")
    return cast(LandmarkFormat, fmt)


def read_landmark_array(path: PathLike) -> np.ndarray:
    """Landmarks (L, 3) float64 of a file, in the file's own frame and unit.

    ``.npy``: an (L, 3) or (3L,) array; ``.json``: a list of ``[x, y, z]`` or an object with a
    ``"landmarks"`` list; anything else: text with ``x y z`` per row (spaces or commas; ``#``
    comments). Rows with NaN or infinite coordinates are an error (a missing landmark cannot
    be matched).

    Raises:
        FileNotFoundError, ValueError: naming the file and the problem.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"landmark file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        elif suffix == ".json":
            data = json.loads(path.read_text())
            arr = data["landmarks"] if isinstance(data, dict) else data
        else:
            text = path.read_text().replace(",", " ")
            arr = np.loadtxt(text.splitlines(), ndmin=2, comments="#")
        arr = np.asarray(arr, dtype=np.float64)
    except Exception as e:  # parsers raise many exception types for corrupt files
        raise ValueError(f"{path}: cannot read landmarks ({type(e).__name__}: {e})") from e
    if arr.ndim == 1 and arr.size % 3 == 0:
        arr = arr.reshape(-1, 3)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"{path}: expected (L, 3) landmarks (x y z per row), got shape {arr.shape}")
    bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
    if len(bad):
        raise ValueError(f"{path}: landmarks {bad[:10].tolist()} have NaN or infinite coordinates")
    return arr


def load_landmarks(path: PathLike, fmt: Optional[str] = "auto") -> Tuple[np.ndarray, LandmarkFormat]:
    """Landmarks (L, 3) of a file (its frame and unit) and their format (:func:`resolve_format`)."""
    points = read_landmark_array(path)
    return points, resolve_format(len(points), fmt, str(path))


def to_51(landmarks_68: np.ndarray) -> np.ndarray:
    """(51, 3) from (68, 3) iBUG landmarks: drop the 17 jaw-line points."""
    lm = np.asarray(landmarks_68)
    if lm.shape[0] != 68:
        raise ValueError(f"expected 68 landmarks, got {lm.shape[0]}")
    return lm[INDICES_51_IN_68]


# ------------------------------------------------------------------------------- reference file
def write_reference_file(
    path: PathLike,
    landmarks_68: np.ndarray,
    anchors_39: np.ndarray,
    anchors_39_models: Optional[Mapping[str, np.ndarray]] = None,
    spread_68: Optional[np.ndarray] = None,
    spread_39: Optional[np.ndarray] = None,
    source: Optional[Mapping] = None,
) -> Path:
    """Write a reference file (format in the module docstring) atomically.

    Args:
        landmarks_68: (68, 3), anchors_39: (39, 3) mean positions, nphm frame.
        anchors_39_models: ``{model name: (39, 3)}`` anchors of NPHM identity models at z = 0.
        spread_68, spread_39: (68,), (39,) per-point RMS distance to the mean, nphm units.
        source: free-form description of where the means come from (dataset, subjects).
    """
    def rows(a: np.ndarray, n: int, what: str) -> List[List[float]]:
        a = np.asarray(a, dtype=np.float64)
        if a.shape != (n, 3) or not np.isfinite(a).all():
            raise ValueError(f"{what}: expected finite ({n}, 3) points, got shape {a.shape}")
        return np.round(a, 7).tolist()

    data = {
        "format_version": REFERENCE_FORMAT_VERSION,
        "description": "Reference positions of landmark sets on the mean head, for aligning scans to the model "
                       "(nphm frame = FLAME metres x 4; 1 unit = 250 mm). 51 landmarks = landmarks_68[17:].",
        "frame": "nphm",
        "source": dict(source or {}),
        "landmarks_68": rows(landmarks_68, 68, "landmarks_68"),
        "anchors_39": rows(anchors_39, 39, "anchors_39"),
        "anchors_39_models": {str(k): rows(v, 39, f"anchors_39_models[{k}]")
                              for k, v in (anchors_39_models or {}).items()},
    }
    for key, value, n in (("spread_68", spread_68, 68), ("spread_39", spread_39, 39)):
        if value is not None:
            data[key] = np.round(np.asarray(value, dtype=np.float64).reshape(n), 7).tolist()
    path = Path(path)
    save_json(path, data)
    return path


def reference_path(models_dir: PathLike) -> Path:
    """Where the reference file of a models folder lies."""
    return Path(models_dir) / REFERENCE_FILE


def read_reference_file(path: PathLike) -> Dict:
    """The parsed reference file (see the module docstring). Raises FileNotFoundError / ValueError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"landmark reference not found: {path}; models exported with nphm.pretrained write it "
            "(see nphm.pretrained.write_landmark_reference), or pass a reference file of your landmarks "
            "in the nphm frame")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read the landmark reference ({e})") from e
    version = data.get("format_version") if isinstance(data, dict) else None
    if version != REFERENCE_FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported landmark reference (format_version {version!r}, "
                         f"expected {REFERENCE_FORMAT_VERSION})")
    return data


def _points(data: Mapping, key: str, n: int, path: Path) -> np.ndarray:
    try:
        a = np.asarray(data[key], dtype=np.float64)
    except KeyError:
        raise ValueError(f"{path}: has no {key!r}") from None
    if a.shape != (n, 3) or not np.isfinite(a).all():
        raise ValueError(f"{path}: {key!r} must be finite ({n}, 3) points, got shape {a.shape}")
    return a


def load_landmark_reference(models_dir: PathLike, fmt: Union[LandmarkFormat, str],
                            model: Optional[str] = None) -> np.ndarray:
    """Reference positions (L, 3), nphm frame, of landmark format ``fmt`` for the models in
    ``models_dir`` (the folder holding the exported experiments and :data:`REFERENCE_FILE`).

    ``"68"``: the training subjects' mean; ``"51"``: its last 51 rows; ``"39"``: the anchors of
    identity model ``model`` at z = 0 when given (and stored), else the training subjects' mean
    anchors.

    Raises:
        FileNotFoundError: no reference file (the message says how to make one).
        ValueError: unknown format, a malformed file, or ``model`` not in the file.
    """
    fmt = str(fmt)
    if fmt not in FORMAT_COUNTS:
        raise ValueError(f"unknown landmark format {fmt!r}: use one of {', '.join(FORMAT_COUNTS)}")
    path = reference_path(models_dir)
    data = read_reference_file(path)
    if fmt == "39":
        if model is None:
            return _points(data, "anchors_39", 39, path)
        models = data.get("anchors_39_models") or {}
        if model not in models:
            raise ValueError(f"{path}: no anchors of model {model!r} (stored: {sorted(models) or 'none'})")
        return _points(models, model, 39, path)
    lm68 = _points(data, "landmarks_68", 68, path)
    return lm68 if fmt == "68" else to_51(lm68)


def load_landmark_spread(models_dir: PathLike, fmt: Union[LandmarkFormat, str]) -> Optional[np.ndarray]:
    """Per-point RMS distance (L,) of the training subjects to the reference (nphm units), or
    None when the file does not store it."""
    path = reference_path(models_dir)
    data = read_reference_file(path)
    key = "spread_39" if str(fmt) == "39" else "spread_68"
    if key not in data:
        return None
    spread = np.asarray(data[key], dtype=np.float64)
    return spread[INDICES_51_IN_68] if str(fmt) == "51" else spread


def mirrored(points: np.ndarray, fmt: Union[LandmarkFormat, str]) -> np.ndarray:
    """The landmarks (L, 3) reordered as if left and right had been swapped (format ``fmt``)."""
    return np.asarray(points)[MIRROR[str(fmt)]]


__all__ = [
    "LandmarkFormat", "FORMAT_COUNTS", "FORMAT_NAMES", "FORMAT_REFERENCES", "FORMAT_ORDERS", "INDICES_51_IN_68",
    "REFERENCE_FILE", "MIRROR",
    "resolve_format", "read_landmark_array", "load_landmarks", "to_51", "write_reference_file",
    "reference_path", "read_reference_file", "load_landmark_reference", "load_landmark_spread", "mirrored",
]
