"""Single-view test observations: the release's protocol, rendered by CPU ray casting.

For every test expression of a subject the raw scan (nphm frame) is rendered from a random
frontal camera; the first test expression is also rendered from behind. Every pixel hit is
back-projected to a 3D point (``full_obs.npy`` / ``full_obs_back.npy``); the points above
the neck plane are subsampled to ``n_points`` (``obs.npy`` / ``obs_back.npy``).

Camera protocol (release values; camera positions are defined in the flame frame and scaled
by 4 into the nphm frame, where the scan lives):

- frontal: one of the points of a 1000-point Fibonacci sphere with ``0.6 < z < 0.9`` and
  ``|y| < 0.55`` (unit vectors), times 0.65 (flame) = 2.6 (nphm);
- back: ``(sin(pi), 0, cos(pi)) * 0.65 + (0, 0.4, 0)`` (flame), i.e. behind the head and
  raised by 0.4 along +y without renormalising the distance: (0, 1.6, -2.6) in nphm;
- both look at the origin with +y up; pinhole 1000 x 1000 px, focal 1500 px, principal point
  at the image centre; near 0.2 and far 5.0 z-depth in nphm units (the release passes these
  clip planes unchanged to a renderer of the nphm-frame scan). A smaller ``resolution``
  scales the focal length with it, keeping the field of view.

Differences to the release, all deliberate: a seeded random generator per item (the release
draws from the unseeded global generator), the 2500 points are drawn without replacement
when enough exist (the release draws with replacement), ``full_obs`` stores only pixels that
hit (the release stores every pixel, NaN for misses) and files are float32.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from nphm.data.frames import FLAME_TO_NPHM_SCALE
from nphm.data.manager import DataManager
from nphm.rendering import Camera, MeshRayCaster, fibonacci_sphere, look_at
from nphm.utils.io import save_npy
from nphm.layout import ItemResult
from nphm.preprocessing.jobs import run_jobs
from nphm.utils.batch import GROUND_TRUTH, BatchFolder, blame, take_shard
from nphm.utils.seeding import item_generators


@dataclass(frozen=True)
class ObservationProtocol:
    """Parameters of the single-view protocol (defaults = the release)."""

    n_points: int = 2500
    resolution: int = 1000
    #: focal length in pixels at a resolution of 1000 px (scaled with ``resolution``)
    focal_at_1000: float = 1500.0
    #: z-depth clip planes, nphm units
    near: float = 0.2
    far: float = 5.0
    #: camera distance from the origin, flame units
    distance: float = 0.65
    back_angle: float = float(np.pi)
    #: upward offset of the back camera, flame units
    back_raise: float = 0.4
    n_sphere: int = 1000
    front_z_range: Tuple[float, float] = (0.6, 0.9)
    front_max_abs_y: float = 0.55

    def __post_init__(self) -> None:
        if self.resolution < 1 or self.n_points < 1:
            raise ValueError("resolution and n_points must be positive")
        if not 0 <= self.near < self.far:
            raise ValueError(f"need 0 <= near < far, got near={self.near}, far={self.far}")

    @property
    def focal(self) -> float:
        """Focal length in pixels at :attr:`resolution`."""
        return self.focal_at_1000 * self.resolution / 1000.0


def frontal_directions(protocol: ObservationProtocol = ObservationProtocol()) -> np.ndarray:
    """(K, 3) unit directions the frontal camera is drawn from (flame/nphm frame, +z = face)."""
    p = fibonacci_sphere(protocol.n_sphere)
    lo, hi = protocol.front_z_range
    keep = (p[:, 2] > lo) & (p[:, 2] < hi) & (np.abs(p[:, 1]) < protocol.front_max_abs_y)
    return p[keep]


def frontal_eye(rng: np.random.Generator, protocol: ObservationProtocol = ObservationProtocol()) -> np.ndarray:
    """(3,) a random frontal camera position in the nphm frame."""
    dirs = frontal_directions(protocol)
    return dirs[rng.integers(len(dirs))] * protocol.distance * FLAME_TO_NPHM_SCALE


def back_eye(protocol: ObservationProtocol = ObservationProtocol()) -> np.ndarray:
    """(3,) the back camera position in the nphm frame."""
    a = protocol.back_angle
    eye = np.array([np.sin(a), 0.0, np.cos(a)]) * protocol.distance
    eye[1] += protocol.back_raise
    return eye * FLAME_TO_NPHM_SCALE


def make_camera(eye: np.ndarray, protocol: ObservationProtocol = ObservationProtocol()) -> Camera:
    """Pinhole camera at ``eye`` (3,) (nphm frame) looking at the origin, +y up."""
    r = protocol.resolution
    f = protocol.focal
    return Camera(r, r, f, f, r / 2.0, r / 2.0, look_at(eye, (0.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
                  protocol.near, protocol.far)


def subsample(points: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` random rows of ``points`` (N, 3): without replacement if N >= n, else with."""
    if len(points) == 0:
        raise ValueError("no points to subsample")
    idx = rng.choice(len(points), size=n, replace=len(points) < n)
    return points[idx]


@dataclass
class Observation:
    """One rendered view: ``points`` (n_points, 3) after the neck cut and subsampling, and
    ``full`` (M, 3) every back-projected pixel; both nphm frame. ``eye`` (3,) camera centre."""

    points: np.ndarray
    full: np.ndarray
    eye: np.ndarray


def observe(caster: MeshRayCaster, eye: np.ndarray, keep_mask, rng: np.random.Generator,
            protocol: ObservationProtocol = ObservationProtocol()) -> Observation:
    """Render one view and build its observation.

    Args:
        caster: ray caster of the scan (nphm frame).
        eye: (3,) camera centre, nphm frame.
        keep_mask: callable ``(N, 3) points -> bool (N,)`` (the neck cut).
        rng: draws the subsample.
    """
    hits = caster.cast(make_camera(eye, protocol))
    if len(hits) == 0:
        raise ValueError(f"the camera at {np.round(eye, 3).tolist()} sees nothing of the scan")
    kept = hits.points[keep_mask(hits.points)]
    if len(kept) == 0:
        raise ValueError(f"the camera at {np.round(eye, 3).tolist()} sees no point above the neck plane")
    return Observation(points=subsample(kept, protocol.n_points, rng), full=hits.points, eye=np.asarray(eye))


def item_rngs(seed: int, subject: int, expression: int) -> Tuple[np.random.Generator, ...]:
    """Three independent generators (frontal camera, frontal subsample, back subsample) per
    (seed, subject, expression): results do not depend on which items were already done or
    on the number of workers."""
    return item_generators(seed, subject, expression, n=3)


def _outputs(manager: DataManager, subject: int, expression: int, with_back: bool) -> List:
    views = [False, True] if with_back else [False]
    return [manager.observation_path(subject, expression, back=b, full=f) for b in views for f in (False, True)]


def observations_folder(manager: DataManager, claims: bool = True) -> BatchFolder:
    """Ledger and claims of the observations root (``manager.single_view_dir``)."""
    return BatchFolder(manager.single_view_dir, "observations", claims=claims)


def generate_item(manager: DataManager, subject: int, expression: int, with_back: bool, seed: int,
                  protocol: ObservationProtocol = ObservationProtocol(), overwrite: bool = False,
                  folder: Optional[BatchFolder] = None) -> ItemResult:
    """Render and save the observation(s) of one scan; never raises for a bad scan (the
    failure names the file, e.g. a scan with non-finite vertices)."""
    folder = folder if folder is not None else observations_folder(manager)

    def work() -> ItemResult:
        scan_path = manager.scan_path(subject, expression)
        scan = blame(GROUND_TRUTH, scan_path, lambda: manager.load_scan(subject, expression))
        caster = MeshRayCaster(np.asarray(scan.vertices), np.asarray(scan.faces))
        flame_path = manager.flame_path(subject, expression)
        blame(GROUND_TRUTH, flame_path, lambda: manager.throat_plane(subject, expression))

        def keep(points: np.ndarray) -> np.ndarray:
            return manager.neck_keep_mask(points, subject, expression)

        camera_rng, front_rng, back_rng = item_rngs(seed, subject, expression)
        views = [(False, frontal_eye(camera_rng, protocol), front_rng)]
        if with_back:
            views.append((True, back_eye(protocol), back_rng))
        for back, eye, rng in views:
            obs = blame(GROUND_TRUTH, scan_path, lambda: observe(caster, eye, keep, rng, protocol))
            save_npy(manager.observation_path(subject, expression, back=back, full=True), obs.full.astype(np.float32))
            save_npy(manager.observation_path(subject, expression, back=back), obs.points.astype(np.float32))
        return ItemResult(subject, expression, "done")

    def done() -> bool:
        return all(p.is_file() for p in _outputs(manager, subject, expression, with_back))

    return folder.run_item(subject, expression, done, work, overwrite)


def plan(manager: DataManager, subjects: Iterable[int]) -> Tuple[List[Tuple[int, int, bool]], List[ItemResult]]:
    """Work items ``(subject, expression, with_back)`` for ``subjects``: every test expression
    (on disk, minus bad scans and invalid test expressions); the first one also gets the back
    view. Subjects whose expressions cannot be listed are returned as failures."""
    items, failures = [], []
    for s in subjects:
        try:
            expressions = manager.test_expressions(s)
        except Exception as e:
            failures.append(ItemResult(int(s), -1, "failed", str(e)))
            continue
        items.extend((int(s), e, i == 0) for i, e in enumerate(expressions))
    return items, failures


def _run(args) -> ItemResult:
    manager, subject, expression, with_back, seed, protocol, overwrite, folder = args
    return generate_item(manager, subject, expression, with_back, seed, protocol, overwrite, folder)


def generate_observations(manager: DataManager, subjects: Sequence[int], seed: int = 0,
                          protocol: ObservationProtocol = ObservationProtocol(), workers: int = 1,
                          overwrite: bool = False, shard: Optional[Tuple[int, int]] = None,
                          claims: bool = True) -> Iterator[ItemResult]:
    """Generate observations for ``subjects`` into ``manager.single_view_dir``.

    Yields one :class:`ItemResult` per scan (in order; only the scans of ``shard``, see
    :func:`nphm.utils.batch.take_shard`). Finished scans are skipped unless ``overwrite``, so
    are scans another worker has claimed; failures are reported, not raised, and every outcome
    goes into the ledger ``single_view_dir/ledger``. Stale temporary files of killed writers
    are removed first.
    """
    folder = observations_folder(manager, claims)
    folder.clean()
    items, failures = plan(manager, subjects)
    for f in failures:
        folder.ledger.record_result(f)
    yield from failures
    jobs = [(manager, s, e, b, seed, protocol, overwrite, folder) for s, e, b in take_shard(items, shard)]
    yield from run_jobs(_run, jobs, workers)
