"""Depth maps as scans: reading depth frames and back-projecting them to points.

Conventions
-----------
* Camera frame (OpenCV, as :mod:`nphm.rendering`): +x right in the image, +y down, +z forward
  (into the scene). Points come out in metres. :func:`camera_to_y_up` maps them to the y-up
  camera frame of OpenGL / many mesh viewers (+x right, +y up, camera looking along -z), a
  rotation by 180 degrees about x.
* Depth is z-depth (distance along the optical axis, not along the ray), as depth sensors and
  :class:`nphm.rendering.RayHits` give it.
* :class:`Intrinsics` use the OpenCV / calibration-tool convention: the centre of pixel
  ``(row, col)`` is at image coordinates ``(u, v) = (col, row)``, so pixel ``(row, col)`` with
  depth ``z`` is the point ``((col - cx) z / fx, (row - cy) z / fy, z)``. The project's renderer
  puts pixel centres at ``col + 0.5``; :meth:`Intrinsics.from_camera` converts its cameras.
* A depth file holds raw values; ``depth_scale`` says how many raw units make a metre
  (1000 for millimetre PNGs, 1 for ``.npy`` arrays in metres). Zero, negative, NaN and
  infinite depths are "no measurement". A mask file (PNG or ``.npy``, same size) keeps the
  pixels where it is nonzero.

Each depth frame is one observation (one expression) of the same person; :func:`load_depth_frames`
reads several.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from nphm.utils.io import PathLike, atomic_path

DEPTH_SUFFIXES = (".png", ".npy")
#: Default ``depth_scale`` (raw units per metre) by file type.
DEFAULT_DEPTH_SCALE = {".png": 1000.0, ".npy": 1.0}
#: Unit of the back-projected points (a key of :data:`nphm.fitting.alignment.UNIT_TO_NPHM`).
POINTS_UNIT = "m"


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels, OpenCV convention (pixel ``(row, col)`` centred at ``(col, row)``)."""

    fx: float
    fy: float
    cx: float
    cy: float

    def __post_init__(self) -> None:
        values = np.array([self.fx, self.fy, self.cx, self.cy], dtype=np.float64)
        if not np.isfinite(values).all() or self.fx <= 0 or self.fy <= 0:
            raise ValueError(f"intrinsics need finite values and positive focal lengths, got {self}")

    def matrix(self) -> np.ndarray:
        """(3, 3) camera matrix ``K``."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @classmethod
    def from_matrix(cls, K: np.ndarray) -> "Intrinsics":
        """From a (3, 3) camera matrix (zero skew)."""
        K = np.asarray(K, dtype=np.float64)
        if K.shape != (3, 3) or abs(K[0, 1]) > 1e-9 * abs(K[0, 0]):
            raise ValueError(f"expected a (3, 3) camera matrix without skew, got {K.tolist()}")
        return cls(float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]))

    @classmethod
    def from_camera(cls, camera) -> "Intrinsics":
        """From an :class:`nphm.rendering.Camera` (pixel centres at ``col + 0.5``: shift by half a pixel)."""
        return cls(float(camera.fx), float(camera.fy), float(camera.cx) - 0.5, float(camera.cy) - 0.5)


def _check_suffix(path: Path, what: str) -> str:
    suffix = path.suffix.lower()
    if suffix not in DEPTH_SUFFIXES:
        raise ValueError(f"{path}: unsupported {what} file type {suffix!r} (use {' or '.join(DEPTH_SUFFIXES)})")
    return suffix


def _read_image(path: Path, what: str) -> np.ndarray:
    """A 2D array of a ``.png`` / ``.npy`` file (``what``: "depth" or "mask", for messages)."""
    suffix = _check_suffix(path, what)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    try:
        if suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        else:
            import imageio.v3 as iio

            arr = iio.imread(path)
    except Exception as e:  # readers raise many exception types for corrupt files
        raise ValueError(f"{path}: cannot read the {what} ({type(e).__name__}: {e})") from e
    return np.asarray(arr)


def read_depth(path: PathLike, depth_scale: Optional[float] = None) -> np.ndarray:
    """Depth (H, W) float64 in metres of a depth file; NaN where there is no measurement.

    Args:
        path: a single-channel ``.png`` (16- or 8-bit integers) or an (H, W) ``.npy`` array.
        depth_scale: raw units per metre (default :data:`DEFAULT_DEPTH_SCALE` of the file type:
            1000 for PNG, i.e. millimetres; 1 for NPY, i.e. metres).
    Raises:
        FileNotFoundError, ValueError: naming the file and the problem.
    """
    path = Path(path)
    raw = _read_image(path, "depth")
    if raw.ndim != 2:
        raise ValueError(f"{path}: a depth map must have one channel, got shape {raw.shape}")
    if not (np.issubdtype(raw.dtype, np.integer) or np.issubdtype(raw.dtype, np.floating)):
        raise ValueError(f"{path}: depth values must be numbers, got dtype {raw.dtype}")
    scale = DEFAULT_DEPTH_SCALE[path.suffix.lower()] if depth_scale is None else float(depth_scale)
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"{path}: depth_scale must be positive, got {depth_scale}")
    depth = raw.astype(np.float64) / scale
    depth[~np.isfinite(depth) | (depth <= 0)] = np.nan
    return depth


def read_mask(path: PathLike, shape: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """bool (H, W) mask of a ``.png`` / ``.npy`` file: True (keep) where nonzero (any channel).

    Raises:
        ValueError: not 2D (or 2D + channels), or a shape other than ``shape``.
    """
    path = Path(path)
    arr = _read_image(path, "mask")
    if arr.ndim == 3:
        arr = arr[..., :3].max(axis=-1) if arr.shape[-1] in (3, 4) else arr.max(axis=-1)
    if arr.ndim != 2:
        raise ValueError(f"{path}: a mask must be an image, got shape {arr.shape}")
    mask = np.asarray(arr != 0) & ~np.isnan(arr.astype(np.float64))
    if shape is not None and mask.shape != tuple(shape):
        raise ValueError(f"{path}: mask of size {mask.shape} but the depth map is {tuple(shape)}")
    return mask


def write_depth_png(path: PathLike, depth: np.ndarray, depth_scale: float = 1000.0) -> Path:
    """Write depth (H, W), metres (NaN / <= 0: no measurement), as a 16-bit PNG of
    ``round(depth * depth_scale)`` atomically. Raises ValueError when a depth does not fit 16 bits."""
    d = np.asarray(depth, dtype=np.float64)
    if d.ndim != 2:
        raise ValueError(f"{path}: depth must be (H, W), got shape {d.shape}")
    raw = np.where(np.isfinite(d) & (d > 0), d * float(depth_scale), 0.0).round()
    if raw.max(initial=0.0) > np.iinfo(np.uint16).max:
        raise ValueError(f"{path}: depth {np.nanmax(d):.4g} m times depth_scale {depth_scale:g} does not fit "
                         f"16 bits (max {np.iinfo(np.uint16).max}); use a smaller depth_scale")
    import imageio.v3 as iio

    path = Path(path)
    with atomic_path(path) as tmp:
        iio.imwrite(tmp, raw.astype(np.uint16), extension=".png")
    return path


def back_project(depth: np.ndarray, intrinsics: Intrinsics,
                 mask: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Points of the measured (and masked) pixels of a depth map.

    Args:
        depth: (H, W) z-depth, metres; NaN / <= 0 / infinite = no measurement.
        intrinsics: OpenCV convention (see the module docstring).
        mask: optional bool (H, W), True = keep.
    Returns:
        points (N, 3) camera frame (x right, y down, z forward), metres, and their pixels
        (N, 2) int64 ``(row, col)``, in row-major pixel order.
    """
    depth = np.asarray(depth, dtype=np.float64)
    if depth.ndim != 2:
        raise ValueError(f"depth must be (H, W), got shape {depth.shape}")
    keep = np.isfinite(depth) & (depth > 0)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != depth.shape:
            raise ValueError(f"mask of size {mask.shape} but the depth map is {depth.shape}")
        keep &= mask
    rows, cols = np.nonzero(keep)
    z = depth[rows, cols]
    x = (cols - intrinsics.cx) * z / intrinsics.fx
    y = (rows - intrinsics.cy) * z / intrinsics.fy
    return np.stack([x, y, z], axis=-1), np.stack([rows, cols], axis=-1).astype(np.int64)


def camera_to_y_up(points: np.ndarray) -> np.ndarray:
    """Camera frame (x right, y down, z forward) -> y-up frame (x right, y up, z backward):
    ``(x, -y, -z)``, a proper rotation (180 degrees about x). Points (..., 3). Its own inverse."""
    return np.asarray(points, dtype=np.float64) * np.array([1.0, -1.0, -1.0])


@dataclass
class DepthFrame:
    """One back-projected depth frame (one observation of the person).

    Attributes:
        name: the depth file's stem (distinct per frame).
        source: the depth file; mask: the mask file or None.
        points: (N, 3) camera frame, metres; pixels: (N, 2) int64 ``(row, col)`` of each point.
        shape: ``(H, W)`` of the depth map.
    """

    name: str
    source: Path
    mask: Optional[Path]
    points: np.ndarray
    pixels: np.ndarray
    shape: Tuple[int, int]


def load_depth_frame(
    path: PathLike,
    intrinsics: Intrinsics,
    depth_scale: Optional[float] = None,
    mask: Optional[PathLike] = None,
    depth_range: Tuple[float, float] = (0.0, np.inf),
    min_points: int = 10,
) -> DepthFrame:
    """Read one depth file (and its mask) and back-project it (see :func:`read_depth`, :func:`back_project`).

    Args:
        depth_range: ``(near, far)`` metres; depths outside are dropped (e.g. far=1.5 to drop the
            background behind a person).
        min_points: fewer kept pixels is an error.
    """
    path = Path(path)
    depth = read_depth(path, depth_scale)
    near, far = depth_range
    depth[(depth < near) | (depth > far)] = np.nan
    keep = read_mask(mask, depth.shape) if mask is not None else None
    points, pixels = back_project(depth, intrinsics, keep)
    if len(points) < min_points:
        masked = f" inside the mask {mask}" if mask is not None else ""
        raise ValueError(f"{path}: only {len(points)} pixels with depth in [{near:g}, {far:g}] m{masked} "
                         f"(need {min_points}); check depth_scale (raw units per metre) and the mask")
    return DepthFrame(path.stem, path, Path(mask) if mask is not None else None, points, pixels, depth.shape)


def load_depth_frames(
    paths: Sequence[PathLike],
    intrinsics: Union[Intrinsics, Sequence[Intrinsics]],
    depth_scale: Optional[float] = None,
    masks: Sequence[PathLike] = (),
    depth_range: Tuple[float, float] = (0.0, np.inf),
) -> List[DepthFrame]:
    """Several depth frames of one person (each one observation / expression).

    Args:
        intrinsics: one for all frames or one per frame.
        masks: none, one for all frames, or one per frame.
    Raises:
        ValueError: counts that do not match, repeated names, or a frame's own problem.
    """
    if not paths:
        raise ValueError("no depth files given")
    n = len(paths)
    intr = [intrinsics] * n if isinstance(intrinsics, Intrinsics) else list(intrinsics)
    if len(intr) != n:
        raise ValueError(f"give one intrinsics for all depth frames or one per frame ({n}), got {len(intr)}")
    if len(masks) not in (0, 1, n):
        raise ValueError(f"give no mask, one for all depth frames, or one per frame ({n}), got {len(masks)}")
    names = [Path(p).stem for p in paths]
    if len(set(names)) != n:
        raise ValueError(f"depth files must have distinct names, got {names}")
    mask_of = (lambda i: None) if not masks else (lambda i: masks[0] if len(masks) == 1 else masks[i])
    return [load_depth_frame(p, intr[i], depth_scale, mask_of(i), depth_range) for i, p in enumerate(paths)]


__all__ = [
    "DEPTH_SUFFIXES", "DEFAULT_DEPTH_SCALE", "POINTS_UNIT", "Intrinsics", "read_depth", "read_mask",
    "write_depth_png", "back_project", "camera_to_y_up", "DepthFrame", "load_depth_frame", "load_depth_frames",
]
