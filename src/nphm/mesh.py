"""Mesh extraction from a signed distance function: dense, coarse-to-fine or traced marching cubes.

The grid is the release's: ``resolution`` samples per axis, ``linspace(bounds_min[d],
bounds_max[d], resolution)`` along axis ``d`` (both ends included), values stored as
``grid[i, j, k] = sdf(x_i, y_j, z_k)``. Vertices come back in the frame of the bounds,
faces are oriented so that normals point towards positive SDF (outwards).

Sparse (coarse-to-fine) mode
----------------------------
The fine grid is covered by cubic cells of ``step`` fine voxels whose 8 corners are
evaluated, starting with a dense coarse lattice (every ``step0``-th fine point). Each of a
cell's 8 children (cells of ``step / 2``) touches one corner ``c`` of the cell and lies within
one child diagonal ``r`` of it, so if the SDF is ``lipschitz``-Lipschitz a child with
``|v_c| > lipschitz * safety_margin * r`` cannot contain the zero level and its whole closed
cell has the sign of ``v_c``. Only the other children are refined: their corners are
evaluated and they are split again, down to single voxels (a cell whose corners change sign
although none is that close, which a true bound rules out, refines all its children).
Fine points never evaluated are then filled, level by level, with the value of their lattice
parent one level up (the corner with the lower indices of the enclosing cell): the child
that parent touches holds the point, so it is either refined (the point is evaluated) or
excluded with the parent's sign, the true one. Marching cubes only reads the corners of
voxels with a sign change, and all those are evaluated exactly, so sparse and dense mode
give the same mesh. Refining children instead of whole cells evaluates about a quarter fewer
points on a trained head at 256^3 for the same mesh.

With ``lipschitz="auto"`` the bound is measured per cell instead of assumed globally: a cell's
own slope ``L_c`` is the finite-difference gradient norm of its 8 corner values (per axis the
steepest of its 4 edges), and a child is refined when ``|v_c - level|`` at the corner it
touches is ``<= safety_margin * max(L_c, 1) * r``. Near the surface of an SDF (slope about 1)
this refines a shell about half as thick as the fixed default bound of 2 x 1.5; where a learned field is
steep (members far from their data) the bound grows with the measured slope. It is an
estimate, not a certificate: a zero crossing hidden inside one cell whose corners do not see
the slope that makes it (a dip narrower than the cell) can be missed, as with any fixed bound
that is too small; the tests check identical meshes to dense evaluation.

Traced mode
-----------
``mode="traced"`` runs the sparse mode down to cells of 2 voxels and then walks the surface
instead of refining the last shell: the voxels of every 2-voxel cell whose corners straddle
the level are evaluated, and from each straddling voxel the walk crosses every face whose 4
corners straddle too (the voxel behind it straddles as well; all voxels around a straddling
edge are linked through its faces). Only the straddling voxels' corners are evaluated (on a
trained head at 256^3 about 30 % fewer points than the sparse mode), and marching cubes meshes
exactly those voxels (``mask``), so every component of the dense mesh that has a straddling
2-voxel cell is reproduced exactly. What it can miss: a component that straddles no cell of the
lattice of every second grid point, i.e. one whose enclosed grid points are all off that
lattice (a blob or sheet thinner than 2 voxels standing apart from the rest of the surface).
On the tests' analytic shapes and the shipped model the meshes equal the dense ones.

When ``resolution - 1`` is not a multiple of the coarse step the index lattice is padded
past the box; padded indices are clamped to the last grid plane (clamping is a
contraction, so the distance bound above still holds), are evaluated at most once per
distinct in-box point and are cropped before marching cubes.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import trimesh
from skimage import measure

from nphm.utils.device import resolve_device

__all__ = [
    "DEFAULT_LIPSCHITZ",
    "DEFAULT_SAFETY_MARGIN",
    "MODES",
    "extract_mesh",
    "grid_points",
    "sdf_grid",
]

SdfFn = Callable[[torch.Tensor], torch.Tensor]

# A true SDF is 1-Lipschitz. Learned SDFs trained with an eikonal term stay close to
# |grad| = 1 near the surface but overshoot in places (1.2-1.5 is common where the fit
# is poor, e.g. hair and thin structures); 2.0 covers that with room to spare. The
# margin is an extra factor on top so that the cells right at the threshold, where
# any misjudgement would cost a hole, are refined as well. Together they widen the
# refined shell to about 2 * 3 * r around the surface; larger values only cost time.
DEFAULT_LIPSCHITZ = 2.0
DEFAULT_SAFETY_MARGIN = 1.5

# Default coarsest lattice: every 8th fine point. Coarser starts evaluate fewer points
# up front but refine almost everything anyway (the shell at step s is ~6 s voxels thick).
_DEFAULT_COARSE_STEP = 8

_OFFS8 = np.array([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)], dtype=np.int64)


def _grid_axes(
    bounds_min: Sequence[float], bounds_max: Sequence[float], resolution: int
) -> Tuple[np.ndarray, np.ndarray, list]:
    """Validate the box; return ``bmin (3,)``, ``spacing (3,)`` and three float64 axes ``(R,)``."""
    bmin = np.asarray(bounds_min, dtype=np.float64).reshape(-1)
    bmax = np.asarray(bounds_max, dtype=np.float64).reshape(-1)
    if bmin.shape != (3,) or bmax.shape != (3,):
        raise ValueError(f"bounds must be 3-vectors, got {bmin.tolist()} and {bmax.tolist()}")
    if not np.all(bmax > bmin):
        raise ValueError(f"bounds_max {bmax.tolist()} must exceed bounds_min {bmin.tolist()} on every axis")
    if int(resolution) != resolution or resolution < 2:
        raise ValueError(f"resolution must be an integer >= 2, got {resolution}")
    resolution = int(resolution)
    axes = [np.linspace(bmin[d], bmax[d], resolution) for d in range(3)]
    spacing = (bmax - bmin) / (resolution - 1)
    return bmin, spacing, axes


def grid_points(
    bounds_min: Sequence[float],
    bounds_max: Sequence[float],
    resolution: int,
    device: Optional[Union[str, torch.device]] = None,
) -> torch.Tensor:
    """All grid points, ``(R^3, 3)`` float32 in the frame of the bounds, ``i`` (x) slowest.

    Row ``(i * R + j) * R + k`` is ``(x_i, y_j, z_k)``, matching ``grid.reshape(-1)``.
    Materialises every point: use it for small grids only (400^3 points are 768 MB).
    """
    _, _, axes = _grid_axes(bounds_min, bounds_max, resolution)
    ax = [torch.as_tensor(a, dtype=torch.float32) for a in axes]
    pts = torch.stack(torch.meshgrid(*ax, indexing="ij"), dim=-1).reshape(-1, 3)
    return pts.to(resolve_device(device) if device is not None else "cpu")


class _Evaluator:
    """Evaluates ``sdf_fn`` at grid indices in chunks of at most ``batch_points``."""

    def __init__(self, sdf_fn: SdfFn, axes: list, device: torch.device, batch_points: int, progress: bool):
        if int(batch_points) < 1:
            raise ValueError(f"batch_points must be >= 1, got {batch_points}")
        self.sdf_fn = sdf_fn
        self.device = device
        self.batch_points = int(batch_points)
        # Coordinates come from these float32 tables in both modes, so dense and sparse
        # evaluate bit-identical points.
        self.axes = [torch.as_tensor(a, dtype=torch.float32, device=device) for a in axes]
        self.n_evaluated = 0
        self.bar = None
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=0, unit="pt", unit_scale=True, desc="SDF grid")

    def __call__(self, i: np.ndarray, j: np.ndarray, k: np.ndarray) -> np.ndarray:
        """SDF at grid indices ``i, j, k`` (each ``(N,)`` int, in-box) -> ``(N,)`` float32 numpy."""
        n = len(i)
        out = np.empty(n, dtype=np.float32)
        if self.bar is not None:
            self.bar.total += n
            self.bar.refresh()
        with torch.inference_mode():
            for start in range(0, n, self.batch_points):
                sl = slice(start, min(n, start + self.batch_points))
                idx = [torch.as_tensor(a[sl], device=self.device) for a in (i, j, k)]
                pts = torch.stack([self.axes[d][idx[d]] for d in range(3)], dim=-1)
                val = self.sdf_fn(pts)
                if not torch.is_tensor(val):
                    raise TypeError(f"sdf_fn must return a torch tensor, got {type(val).__name__}")
                m = sl.stop - sl.start
                if val.numel() != m:
                    raise ValueError(f"sdf_fn returned {tuple(val.shape)} values for {m} points; expected ({m},)")
                out[sl] = val.detach().reshape(-1).float().cpu().numpy()
                if not np.isfinite(out[sl]).all():
                    raise ValueError("sdf_fn returned non-finite values (NaN or inf) on the grid")
                self.n_evaluated += m
                if self.bar is not None:
                    self.bar.update(m)
        return out

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _dense_grid(ev: _Evaluator, res: int) -> np.ndarray:
    """Evaluate every grid point; returns ``(R, R, R)`` float32."""
    grid = np.empty(res**3, dtype=np.float32)
    # Chunk the index generation too, so no R^3-long index array is ever built.
    chunk = max(ev.batch_points, 1 << 20)
    for start in range(0, res**3, chunk):
        lin = np.arange(start, min(res**3, start + chunk), dtype=np.int64)
        i, rem = np.divmod(lin, res * res)
        j, k = np.divmod(rem, res)
        grid[start : start + len(lin)] = ev(i, j, k)
    return grid.reshape(res, res, res)


def _coarse_step(res: int, coarse_resolution: Optional[int]) -> int:
    """Largest power-of-two step giving at least ``coarse_resolution`` samples per axis."""
    if coarse_resolution is None:
        step = _DEFAULT_COARSE_STEP
        while step > 1 and (res - 1) / step < 4:  # keep at least 5 coarse samples per axis
            step //= 2
        return step
    if int(coarse_resolution) < 2:
        raise ValueError(f"coarse_resolution must be >= 2, got {coarse_resolution}")
    ratio = (res - 1) / (int(coarse_resolution) - 1)
    return 1 if ratio < 1 else 1 << int(math.floor(math.log2(ratio)))


#: corner pairs (indices into ``_OFFS8``) of the 4 cell edges along x, y and z
_EDGES = [np.array([[i, i | bit] for i in range(8) if not i & bit]) for bit in (4, 2, 1)]


#: ``lipschitz="auto"``: smallest slope assumed for a cell (an SDF has slope 1 near its surface)
AUTO_MIN_SLOPE = 1.0


def _cell_slopes(d: np.ndarray, step: int, spacing: np.ndarray) -> np.ndarray:
    """Finite-difference gradient norm (n,) of every cell with corner values ``d`` (n, 8): per
    cell, the steepest of its 4 edges along each axis gives that axis' component."""
    sq = np.zeros(len(d), dtype=np.float32)
    for axis, edges in enumerate(_EDGES):
        diff = np.abs(d[:, edges[:, 1]] - d[:, edges[:, 0]]).max(axis=1)
        sq += (diff / np.float32(step * float(spacing[axis]))) ** 2
    return np.sqrt(sq)


#: ``mode="traced"``: the cell size (voxels) from which the surface is walked instead of refined
TRACE_FROM = 2


def _sparse_grid(ev: _Evaluator, res: int, step0: int, spacing: np.ndarray, level: float, bound: Optional[float],
                 margin: float = DEFAULT_SAFETY_MARGIN, trace: bool = False
                 ) -> Tuple[np.ndarray, float, Optional[np.ndarray]]:
    """Coarse-to-fine evaluation (see module docstring); returns ``(R, R, R)`` float32, the
    Lipschitz bound (before the margin; with ``bound=None`` the largest cell slope measured) and,
    with ``trace``, the bool ``(R, R, R)`` mask of the corners of the voxels that straddle
    ``level`` (None without ``trace``). With ``trace`` the levels below cells of
    :data:`TRACE_FROM` voxels are walked (:func:`_walk_cells`) and only the values at the mask's
    voxel corners are meaningful.

    ``bound`` is lipschitz * safety_margin (None: per cell, ``margin * max(slope, 1)``); the child
    of a cell of step ``s`` that touches corner ``c`` is refined when ``|v_c - level| <= bound *
    s * |spacing| / 2`` (``s * |spacing| / 2``: the child's diagonal).
    """
    measured = 0.0
    rp = -(-(res - 1) // step0) * step0 + 1  # padded size: (rp - 1) is a multiple of step0
    vals = np.full((rp, rp, rp), np.nan, dtype=np.float32)
    flat = vals.reshape(-1)
    strides = np.array([rp * rp, rp, 1], dtype=np.int64)

    seen = np.zeros(rp**3, dtype=bool)

    def dedupe(ids: np.ndarray) -> np.ndarray:
        # A marker pass instead of np.unique: linear time, and returns the ids sorted.
        seen[ids] = True
        out = np.flatnonzero(seen)
        seen[out] = False
        return out

    def evaluate(lin: np.ndarray) -> None:
        """Make ``flat[lin]`` known (padded linear ids, duplicates allowed)."""
        lin = lin[np.isnan(flat[lin])]
        if len(lin) == 0:
            return
        lin = dedupe(lin)
        ijk = np.stack(np.unravel_index(lin, (rp, rp, rp)), axis=-1)
        padded = np.any(ijk > res - 1, axis=1)
        inb = ~padded
        flat[lin[inb]] = ev(ijk[inb, 0], ijk[inb, 1], ijk[inb, 2])
        if padded.any():
            # Padded ids share their coordinates with the clamped in-box point.
            clin = np.minimum(ijk[padded], res - 1) @ strides
            need = clin[np.isnan(flat[clin])]
            if len(need):
                need = dedupe(need)
                ni, nj, nk = np.unravel_index(need, (rp, rp, rp))
                flat[need] = ev(ni, nj, nk)
            flat[lin[padded]] = flat[clin]

    coarse = np.arange(0, rp, step0, dtype=np.int64)
    ci, cj, ck = np.meshgrid(coarse, coarse, coarse, indexing="ij")
    evaluate((np.stack([ci, cj, ck], -1).reshape(-1, 3) @ strides))
    # Every lower corner of the coarse lattice is <= res - 1 by construction of rp.
    lo = coarse[:-1]
    li, lj, lk = np.meshgrid(lo, lo, lo, indexing="ij")
    cells = np.stack([li, lj, lk], -1).reshape(-1, 3) @ strides

    offs8 = _OFFS8 @ strides
    half_diag = 0.5 * float(np.linalg.norm(spacing))
    step = step0
    # Bound the size of the (cells x 27) index arrays.
    cell_chunk = 1 << 18
    traced = None
    while step > 1 and len(cells):
        d = flat[cells[:, None] + step * offs8[None]] - np.float32(level)
        dmin, dmax = d.min(axis=1), d.max(axis=1)
        if trace and step <= TRACE_FROM:
            # walk the surface at every finer level; mark the corners of the straddling voxels
            cells = cells[(dmin <= 0) & (dmax >= 0)]
            while step > 1:
                step //= 2
                cells = _walk_cells(evaluate, flat, cells, step, rp, res, strides, level, dedupe)
            traced = np.zeros(rp**3, dtype=bool)
            traced[(cells[:, None] + offs8[None]).reshape(-1)] = True
            cells = cells[:0]
            break
        if bound is None:
            slopes = _cell_slopes(d, step, spacing)
            measured = max(measured, float(slopes.max())) if len(slopes) else measured
            limit = np.maximum(slopes, np.float32(AUTO_MIN_SLOPE)) * np.float32(margin * step * half_diag)
        else:
            limit = bound * step * half_diag
        # Child j of a cell touches the cell's corner j and lies within one child diagonal
        # (step * half_diag) of it: it can hold the level only if |d_j| <= limit.
        active = np.abs(d) <= np.asarray(limit, dtype=np.float32).reshape(-1, 1)
        # Safety net where the slope estimate fails: a sign change but no corner close enough.
        lost = ~active.any(axis=1) & (dmin <= 0) & (dmax >= 0)
        active[lost] = True
        keep = active.any(axis=1)
        cells, active = cells[keep], active[keep]
        half = step // 2
        children = []
        for c0 in range(0, len(cells), cell_chunk):
            cc, aa = cells[c0 : c0 + cell_chunk], active[c0 : c0 + cell_chunk]
            ch = (cc[:, None] + half * offs8[None])[aa]
            inside = np.all(np.stack(np.unravel_index(ch, (rp, rp, rp)), -1) <= res - 1, axis=1)
            ch = ch[inside]
            evaluate((ch[:, None] + half * offs8[None]).reshape(-1))
            children.append(ch)
        cells = np.concatenate(children) if children else np.empty(0, dtype=np.int64)
        step = half

    _fill_from_parents(vals, step0)
    used = measured if bound is None else bound / margin
    if trace and traced is None:  # the lattice was the fine grid (step0 == 1: all known) or no cell survived
        traced = np.full(rp**3, step0 == 1)
    crop = (lambda a: a) if rp == res else (lambda a: np.ascontiguousarray(a[:res, :res, :res]))
    return crop(vals), used, (None if traced is None else crop(traced.reshape(rp, rp, rp)))


def _walk_cells(evaluate: Callable[[np.ndarray], None], flat: np.ndarray, seeds: np.ndarray, step: int, rp: int,
                res: int, strides: np.ndarray, level: float, dedupe: Callable[[np.ndarray], np.ndarray]
                ) -> np.ndarray:
    """The cells of ``step`` voxels whose corners straddle ``level``, found by walking the surface.

    ``seeds`` are the lower corners (padded linear ids) of straddling cells of ``2 * step``
    voxels; each holds at least one straddling cell of ``step`` voxels (its corners are on this
    lattice too). From those cells the walk crosses every face whose 4 corners straddle the
    level: the cell behind such a face straddles too, and all cells around a straddling edge are
    linked through its 4 faces, so every component of straddling cells with a cell in a seed is
    found whole. Evaluates the corners of the seeds' sub-cells and of the straddling cells only.
    Returns their lower corners (sorted padded ids).
    """
    offs = _OFFS8 @ strides
    lvl = np.float32(level)
    coords = lambda ids, axis: (ids // strides[axis]) % rp  # noqa: E731
    sub = (seeds[:, None] + step * offs[None]).reshape(-1)
    # a cell exists when its upper corner lies in the box
    frontier = dedupe(sub[np.all(np.stack([coords(sub, a) for a in range(3)], -1) <= res - 1 - step, axis=1)])
    visited = np.zeros(rp**3, dtype=bool)
    found = []
    while len(frontier):
        visited[frontier] = True
        corners = frontier[:, None] + step * offs[None]
        evaluate(corners.reshape(-1))
        d = flat[corners] - lvl
        hit = (d.min(axis=1) <= 0) & (d.max(axis=1) >= 0)
        frontier, d = frontier[hit], d[hit]
        found.append(frontier)
        step_to = []
        for axis, bit in enumerate((4, 2, 1)):
            for side in (0, 1):
                face = d[:, [c for c in range(8) if bool(c & bit) == bool(side)]]
                cross = (face.min(axis=1) <= 0) & (face.max(axis=1) >= 0)
                at = coords(frontier, axis)
                cross &= (at + 2 * step <= res - 1) if side else (at >= step)
                step_to.append(frontier[cross] + (step if side else -step) * strides[axis])
        nxt = np.concatenate(step_to)
        nxt = nxt[~visited[nxt]]
        frontier = dedupe(nxt) if len(nxt) else nxt
    return np.sort(np.concatenate(found)) if found else seeds[:0]


def _fill_from_parents(vals: np.ndarray, step0: int) -> None:
    """Replace NaNs, finest lattice last, by the value of the lattice parent one level up."""
    t = step0 // 2
    while t >= 1:
        lat = vals[::t, ::t, ::t]  # a view: writes go to ``vals``
        n0, n1, n2 = lat.shape
        slab = max(2, (1 << 24) // (n1 * n2)) // 2 * 2
        for a0 in range(0, n0, slab):
            blk = lat[a0 : a0 + slab]
            miss = np.isnan(blk)
            if not miss.any():
                continue
            par = lat[a0 : a0 + slab : 2, ::2, ::2]
            up = par.repeat(2, 0).repeat(2, 1).repeat(2, 2)[: blk.shape[0], :n1, :n2]
            np.copyto(blk, up, where=miss)
        t //= 2


MODES = ("sparse", "traced", "dense")


def _sample(sdf_fn: SdfFn, bounds_min, bounds_max, resolution: int, mode: str, batch_points: int,
            lipschitz: Union[float, str], level: float, coarse_resolution: Optional[int], device, progress: bool,
            safety_margin: float) -> Tuple[np.ndarray, int, float, Optional[np.ndarray]]:
    """Grid values, points evaluated, Lipschitz bound used and (traced mode) the mask of the
    straddling voxels' corners (None in the other modes)."""
    _, spacing, axes = _grid_axes(bounds_min, bounds_max, resolution)
    res = int(resolution)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(map(repr, MODES))}; got {mode!r}")
    auto = isinstance(lipschitz, str)
    if auto and lipschitz != "auto":
        raise ValueError(f"lipschitz must be a positive number or 'auto', got {lipschitz!r}")
    if not ((auto or lipschitz > 0) and safety_margin > 0):
        raise ValueError(f"lipschitz and safety_margin must be positive, got {lipschitz} and {safety_margin}")
    ev = _Evaluator(sdf_fn, axes, resolve_device(device), batch_points, progress)
    used, cells = float("nan") if auto else float(lipschitz), None
    try:
        if mode == "dense":
            grid = _dense_grid(ev, res)
        else:
            step0 = _coarse_step(res, coarse_resolution)
            bound = None if auto else float(lipschitz) * float(safety_margin)
            grid, used, cells = _sparse_grid(ev, res, step0, spacing, level, bound, float(safety_margin),
                                             trace=mode == "traced")
    finally:
        ev.close()
    return grid, ev.n_evaluated, used, cells


def sdf_grid(
    sdf_fn: SdfFn,
    bounds_min: Sequence[float],
    bounds_max: Sequence[float],
    resolution: int,
    mode: str = "sparse",
    batch_points: int = 262144,
    lipschitz: Union[float, str] = DEFAULT_LIPSCHITZ,
    level: float = 0.0,
    coarse_resolution: Optional[int] = None,
    device: Optional[Union[str, torch.device]] = None,
    progress: bool = False,
    safety_margin: float = DEFAULT_SAFETY_MARGIN,
) -> Tuple[np.ndarray, int]:
    """SDF sampled on the grid: ``(R, R, R)`` float32 and the number of points evaluated.

    In sparse mode only values near the ``level`` set are exact; the others carry the
    correct sign (given the Lipschitz bound) but not the correct magnitude. The traced mode
    of :func:`extract_mesh` gives no such grid (its values are only meaningful at the voxels it
    meshes), so ``mode`` is ``"sparse"`` or ``"dense"`` here. Arguments as in :func:`extract_mesh`.
    """
    if mode == "traced":
        raise ValueError("sdf_grid: mode 'traced' has no full grid of signs; use 'sparse' or 'dense'")
    grid, n, _, _ = _sample(sdf_fn, bounds_min, bounds_max, resolution, mode, batch_points, lipschitz, level,
                            coarse_resolution, device, progress, safety_margin)
    return grid, n


def extract_mesh(
    sdf_fn: SdfFn,
    bounds_min: Sequence[float],
    bounds_max: Sequence[float],
    resolution: int,
    mode: str = "sparse",
    batch_points: int = 262144,
    lipschitz: Union[float, str] = DEFAULT_LIPSCHITZ,
    level: float = 0.0,
    coarse_resolution: Optional[int] = None,
    device: Optional[Union[str, torch.device]] = None,
    progress: bool = False,
    safety_margin: float = DEFAULT_SAFETY_MARGIN,
) -> trimesh.Trimesh:
    """Marching-cubes mesh of the ``level`` set of ``sdf_fn`` inside a box.

    Args:
        sdf_fn: maps points ``(N, 3)`` float32 on ``device``, in the frame of the bounds,
            to SDF values ``(N,)`` (negative inside). Called with ``N <= batch_points``
            under ``torch.inference_mode()``.
        bounds_min, bounds_max: box corners ``(3,)``.
        resolution: grid samples per axis, both box ends included.
        mode: ``"sparse"`` (coarse-to-fine, evaluates only a shell around the surface),
            ``"traced"`` (coarse-to-fine, the last level traced along the surface; module
            docstring) or ``"dense"`` (every grid point). Sparse and dense give the same mesh
            when the SDF is ``lipschitz``-Lipschitz; traced too, but for components that
            straddle no cell of the lattice of every second grid point.
        batch_points: most points per ``sdf_fn`` call.
        lipschitz: assumed bound on ``|grad sdf|`` (sparse mode), or ``"auto"``: measured
            per cell from finite differences of its corners (module docstring).
        level: iso-value to extract.
        coarse_resolution: samples per axis of the coarsest lattice in sparse mode
            (rounded so the step is a power of two); default: every 8th grid point.
        device: where points are made and ``sdf_fn`` runs (default: CUDA if available).
        progress: show a tqdm bar over evaluated points.
        safety_margin: extra factor on ``lipschitz`` for the refinement test.

    Returns:
        Mesh with vertices ``(V, 3)`` in the frame of the bounds and faces oriented so
        that normals point to values above ``level``. ``metadata["n_evaluated"]`` is the
        number of SDF evaluations, ``metadata["n_grid"]`` the number of grid points (R^3),
        ``metadata["lipschitz"]`` the bound used (with ``"auto"``: the largest cell slope seen).

    Raises:
        ValueError: if the level set does not cross the box (grid all outside or all
            inside), or ``sdf_fn`` returns non-finite values.
    """
    grid, n_eval, used, cells = _sample(sdf_fn, bounds_min, bounds_max, resolution, mode, batch_points, lipschitz,
                                        level, coarse_resolution, device, progress, safety_margin)
    bmin, spacing, _ = _grid_axes(bounds_min, bounds_max, resolution)
    vmin, vmax = float(grid.min()), float(grid.max())
    where = f"in the box {bmin.tolist()}..{np.asarray(bounds_max, dtype=np.float64).tolist()}"
    if vmin > level:
        raise ValueError(
            f"no surface {where}: SDF > {level} at every grid point (grid all outside; "
            "is the surface inside the box and the resolution fine enough?)"
        )
    if vmax < level:
        raise ValueError(
            f"no surface {where}: SDF < {level} at every grid point (grid all inside; "
            "does the box contain the whole surface?)"
        )
    # skimage winds "descent" faces so that normals point to increasing values: outwards for an SDF.
    verts, faces, _, _ = measure.marching_cubes(
        grid, level=level, spacing=tuple(float(s) for s in spacing), gradient_direction="descent",
        allow_degenerate=False, mask=cells,
    )
    if len(faces) == 0:
        raise ValueError(f"no surface {where}: the SDF touches {level} but never crosses it")
    mesh = trimesh.Trimesh(vertices=verts.astype(np.float64) + bmin, faces=faces, process=False)
    mesh.remove_unreferenced_vertices()  # left behind by dropped degenerate triangles
    mesh.metadata["n_evaluated"] = int(n_eval)
    mesh.metadata["n_grid"] = int(resolution) ** 3
    mesh.metadata["mode"] = mode
    mesh.metadata["lipschitz"] = used
    return mesh
