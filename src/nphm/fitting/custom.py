"""Fitting your own scans: reading them, bringing them into the nphm frame, fitting, writing.

Input: one file per expression of the same person (``.ply``/``.obj`` meshes or point clouds,
``.xyz`` text, ``.npy`` arrays), in any frame and unit. Alignment to the nphm frame (a
similarity per scan, or one shared by all scans):

* with landmarks (an (L, 3) file per scan, or one for all): Umeyama to the model's reference
  landmarks: L = 39 -> the identity model's anchors at ``z = 0`` (release order), L = 68 -> the
  dataset's mean 68 landmarks, any L -> a reference file given explicitly;
* without: :func:`nphm.fitting.auto_pose.auto_pose`: starts in every orientation, ICP to the
  model's mean head, the best candidates refined and ranked by the identity model itself, with a
  confidence (margin between the two best poses, residual); the scale comes from the declared
  unit or, with ``units="auto"``, is estimated (any unit). ``{name}_alignment.png`` shows it.

Scale: with a declared unit (``units="mm"`` ...) the similarity's scale is the unit's and only
rotation and translation are estimated, so the head keeps its own size (the nphm frame is
metric: 250 mm per unit). With ``units="auto"`` the scale is estimated; when it lies within
25 % of a unit's (:func:`nphm.fitting.alignment.unit_of_scale`), the scan is taken as in that unit at the head's real size
and treated as above. Otherwise (or with ``size="estimate"``) the estimate stays, which brings
every head to about the model's mean size: points in an arbitrary scale do not tell a large head
from a mean one.

Landmark files may be 68 iBUG, 51 (without the jaw line) or 39 NPHM anchors
(:mod:`nphm.fitting.landmarks`, format from the count or given); their reference comes from the
models folder's ``landmarks_reference.json`` (``models_dir``). ``alignment="none"`` takes points
already in the nphm frame (identity similarity). Optionally (``checks``) the aligned scans pass
the sanity checks of :mod:`nphm.fitting.checks` (wrong unit, landmarks that do not fit), and
(``refine_pose``) the alignment is the start pose refined in the fit (:mod:`nphm.fitting.pose`);
the written transforms are then the refined ones. Points may also come as arrays (``clouds``,
e.g. back-projected depth frames of :mod:`nphm.fitting.depth`); with ``identity_latent`` only
the expressions are fitted (``sequence``: frame after frame).

After alignment, points outside the release's fitting box (:data:`nphm.boxes.FITTING_BOUNDS`,
down to y = -0.5) are dropped (shoulders, background), and with ``neck_plane`` those below the
neck (:func:`nphm.fitting.crop.crop_head`); the fit is meshed in the config's grid, which may
reach lower. Outputs,
for every scan ``{name}`` (file stem)::

    {name}_nphm.ply            fitted mesh in the nphm frame
    {name}_input_frame.ply     the same mesh mapped back into the input's frame and unit
    {name}_aligned_points.ply  the input points in the nphm frame (what was fitted)
    {name}_transform.json      the similarity input -> nphm (scale, rotation, translation, 4x4)
    {name}_error.ply           the fit coloured by its distance to the scan (mm per vertex)
    {name}_alignment.png       the aligned input over the model's mean head (front, side, top)
    overview.png               the first scan: scan over fit, fit and scan coloured by distance (mm)
    {name}_fit.png             the same picture of every further scan
    canonical_nphm.ply, lat_shape.npy, lat_expr.npy
    fitting.json               settings, transforms, and per scan the distances in mm (median,
                               mean, p90, max; head and face), landmark residuals, alignment
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import trimesh
from torch import nn

from nphm.boxes import FITTING_BOUNDS
from nphm.fitting.alignment import (
    UNIT_TO_NPHM, Similarity, Target, check_points, mm_per_nphm, umeyama, unit_of_scale,
)
from nphm.fitting.joint import FitResult, fit_expressions, fit_identity, fit_joint, fit_sequence
from nphm.fitting.meshing import mesh_fit
from nphm.fitting.schedule import FittingSettings
from nphm.reconstruction import mesh_identity
from nphm.utils.io import PathLike, save_json, save_mesh, save_npy

POINT_SUFFIXES = (".ply", ".obj", ".xyz", ".txt", ".npy", ".off", ".stl")
#: Surface samples drawn from a mesh input.
MESH_SAMPLES = 50_000


def load_point_file(path: PathLike, n_surface_samples: int = MESH_SAMPLES, seed: int = 0) -> np.ndarray:
    """Points (N, 3) float64 of a scan file.

    Meshes contribute their vertices plus ``n_surface_samples`` area-uniform surface samples (so
    that coarse meshes still give dense points); point clouds their points; ``.xyz``/``.txt``
    the first three columns of every row; ``.npy`` an (N, >=3) array (first three columns).

    Raises:
        FileNotFoundError, ValueError: missing, unreadable, empty, non-finite or degenerate input.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"scan file not found: {path}")
    suffix = path.suffix.lower()
    if suffix not in POINT_SUFFIXES:
        raise ValueError(f"{path}: unsupported file type {suffix!r} (use one of {', '.join(POINT_SUFFIXES)})")
    try:
        if suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
            if arr.ndim != 2 or arr.shape[1] < 3:
                raise ValueError(f"expected an (N, 3) array, got shape {arr.shape}")
            points = arr[:, :3]
        elif suffix in (".xyz", ".txt"):
            arr = np.loadtxt(path, ndmin=2, comments="#")
            if arr.size == 0:
                points = np.zeros((0, 3))
            elif arr.shape[1] < 3:
                raise ValueError(f"expected at least 3 columns per row, got {arr.shape[1]}")
            else:
                points = arr[:, :3]
        else:
            geom = trimesh.load(str(path), process=False)
            if isinstance(geom, trimesh.Scene):
                geom = geom.dump(concatenate=True) if len(geom.geometry) else trimesh.PointCloud(np.zeros((0, 3)))
            points = np.asarray(geom.vertices)
            faces = getattr(geom, "faces", None)
            if faces is not None and len(faces) and len(points) and n_surface_samples > 0:
                if not np.isfinite(points).all():
                    raise ValueError("contains NaN or infinite vertex coordinates")
                samples, _ = trimesh.sample.sample_surface(geom, n_surface_samples, seed=seed)
                points = np.concatenate([points, samples])
    except (ValueError, OSError) as e:
        raise ValueError(f"{path}: cannot read points ({e})") from e
    except Exception as e:  # parsers raise many exception types for corrupt files
        raise ValueError(f"{path}: cannot read points ({type(e).__name__}: {e})") from e
    return check_points(points, str(path), min_points=10)


def load_landmark_file(path: PathLike) -> np.ndarray:
    """Landmarks (L, 3) from ``.npy`` or a text file (one ``x y z`` per row)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"landmark file not found: {path}")
    try:
        arr = np.load(path, allow_pickle=False) if path.suffix.lower() == ".npy" else np.loadtxt(path, ndmin=2)
    except Exception as e:
        raise ValueError(f"{path}: cannot read landmarks ({type(e).__name__}: {e})") from e
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim == 1 and arr.size % 3 == 0:
        arr = arr.reshape(-1, 3)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"{path}: expected (L, 3) landmarks, got shape {arr.shape}")
    return check_points(arr, f"{path} (landmarks)", min_points=3)


def reference_landmarks(identity: nn.Module, n: int, dataset_mean_68: Optional[np.ndarray] = None) -> np.ndarray:
    """Reference positions (n, 3) in the nphm frame for ``n`` landmarks.

    39 -> the identity model's anchors at ``z = 0``; 68 -> ``dataset_mean_68``.
    """
    if n == getattr(identity, "n_loc", -1):
        dev = next(identity.parameters()).device
        with torch.no_grad():
            return identity.anchors(torch.zeros(1, identity.lat_dim, device=dev))[0].double().cpu().numpy()
    if n == 68 and dataset_mean_68 is not None:
        return np.asarray(dataset_mean_68, dtype=np.float64).reshape(68, 3)
    hint = " (or an NPHM identity model's 39 anchors)" if hasattr(identity, "n_loc") else ""
    raise ValueError(
        f"no reference for {n} landmarks: give 68 landmarks in the dataset's order with the dataset available"
        f"{hint}, or a reference file of {n} points in the nphm frame"
    )


def dataset_mean_landmarks(manager, max_subjects: Optional[int] = None) -> np.ndarray:
    """(68, 3) mean landmarks of the training subjects' neutral registrations (nphm frame)."""
    subjects = manager.subjects("train")[:max_subjects]
    found = []
    for s in subjects:
        try:
            found.append(manager.landmarks(s, manager.neutral_expression(s)))
        except Exception:  # a subject without registration simply does not count
            continue
    if not found:
        raise ValueError(f"no training registration with landmarks found in {manager.data_dir}")
    return np.mean(found, axis=0)


#: Meshes of a custom fit: the last level traced along the surface (:mod:`nphm.mesh`; the same
#: mesh as the certified coarse-to-fine one on the shipped models, in 30 % less time). The
#: release-protocol fits and the benchmarks keep the certified mode.
CUSTOM_MESH_MODE = "traced"


#: The mean head of the alignment: marching cubes at this resolution, this many surface samples.
MEAN_HEAD_RESOLUTION = 96
MEAN_HEAD_SAMPLES = 30_000
#: The mean head stored in an identity experiment's folder (:func:`write_mean_head`).
MEAN_HEAD_FILE = "mean_head.npz"


def mean_head_target(identity: nn.Module, resolution: int = MEAN_HEAD_RESOLUTION, n: int = MEAN_HEAD_SAMPLES,
                     seed: int = 0, bounds=None) -> Target:
    """Surface samples (n, 3) with normals of the model's mean head (``z = 0``), nphm frame."""
    dev = next(identity.parameters()).device
    mesh = mesh_identity(identity, torch.zeros(identity.lat_dim, device=dev), resolution=resolution,
                         bounds=bounds or FITTING_BOUNDS, device=dev, extraction=CUSTOM_MESH_MODE)
    pts, face = trimesh.sample.sample_surface(mesh, n, seed=seed)
    return Target(pts, mesh.face_normals[face])


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 (hex) of a model's state dict: names, dtypes, shapes and values."""
    import hashlib

    h = hashlib.sha256()
    for name, value in model.state_dict().items():
        t = value.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def write_mean_head(experiment: PathLike, identity: nn.Module, seed: int = 0) -> Path:
    """Store :func:`mean_head_target` of ``identity`` (default resolution and samples, float32)
    as ``experiment/mean_head.npz`` with the model's fingerprint, so that fitting with this model
    skips computing it (2 s on a laptop CPU; :func:`cached_mean_head`). Returns the path."""
    from nphm.utils.io import atomic_path

    target = mean_head_target(identity, seed=seed)
    path = Path(experiment) / MEAN_HEAD_FILE
    with atomic_path(path) as tmp:  # the temporary name ends in .npz: savez adds nothing
        np.savez(tmp, points=target.points.astype(np.float32), normals=target.normals.astype(np.float32),
                 fingerprint=model_fingerprint(identity), resolution=MEAN_HEAD_RESOLUTION, n=MEAN_HEAD_SAMPLES,
                 seed=seed, mesh_mode=CUSTOM_MESH_MODE)
    return path


def cached_mean_head(identity: nn.Module, models_dir: Optional[PathLike] = None, seed: int = 0) -> Target:
    """:func:`mean_head_target` of ``identity``: read from a ``MODELS_DIR/*/mean_head.npz`` made
    for this very model (same fingerprint, resolution, samples, seed and meshing; its points
    rounded to float32) when there is one, else computed."""
    files = sorted(Path(models_dir).glob(f"*/{MEAN_HEAD_FILE}")) if models_dir is not None else []
    if files:
        fingerprint = model_fingerprint(identity)
        wanted = {"fingerprint": fingerprint, "resolution": MEAN_HEAD_RESOLUTION, "n": MEAN_HEAD_SAMPLES,
                  "seed": seed, "mesh_mode": CUSTOM_MESH_MODE}
        for path in files:
            try:
                with np.load(path, allow_pickle=False) as data:
                    if all(key in data and data[key].item() == value for key, value in wanted.items()):
                        return Target(data["points"].astype(np.float64), data["normals"].astype(np.float64))
            except (OSError, ValueError):  # unreadable or foreign file: compute instead
                continue
    return mean_head_target(identity, seed=seed)


def face_anchor_points(identity: nn.Module, z_id: torch.Tensor, models_dir: Optional[PathLike] = None
                       ) -> Optional[np.ndarray]:
    """(39, 3) nphm-frame anchors that mark the face for the distance statistics: the NPHM
    model's anchors of the fitted identity ``z_id`` (D_id,), else (a global model such as NPM)
    the models folder's reference anchors; None when neither exists."""
    with torch.no_grad():
        dev = next(identity.parameters()).device
        anchors = identity.anchors(z_id.reshape(1, -1).to(dev))
    if anchors is not None:
        return anchors[0].double().cpu().numpy()
    if models_dir is not None:
        from nphm.fitting.landmarks import load_landmark_reference, reference_path

        if reference_path(models_dir).is_file():
            return load_landmark_reference(models_dir, "39")
    return None


def crop_to_box(points: np.ndarray, bmin: Sequence[float], bmax: Sequence[float]) -> np.ndarray:
    """bool (N,) points inside the box."""
    return np.all((points >= np.asarray(bmin)) & (points <= np.asarray(bmax)), axis=1)


@dataclass
class AlignedScan:
    name: str
    source: Path
    points_input: np.ndarray  # (N, 3) input frame
    transform: Similarity
    points_nphm: np.ndarray  # (M, 3) aligned and cropped
    method: str
    unit: Optional[str] = None
    #: bool (N,) the input points kept by the crop (None: all)
    keep: Optional[np.ndarray] = None
    #: messages of the sanity checks that did not pass cleanly (warnings, or errors let through by force)
    check_messages: List[str] = field(default_factory=list)
    #: the automatic pose search's record (:meth:`nphm.fitting.auto_pose.AutoPose.to_dict`) or
    #: the landmarks' fit (``{"method", "rms_nphm"}``); None for ``alignment="none"``
    alignment_record: Optional[dict] = None
    #: (L, 3) input-frame landmarks and their (L, 3) nphm-frame reference, when landmarks aligned it
    landmarks: Optional[Tuple[np.ndarray, np.ndarray]] = None
    #: :meth:`nphm.fitting.auto_pose.AutoPose.summary` of an automatic alignment
    summary: str = ""
    #: where the scale came from: "unit" (declared, trusted: the head's own size), "estimated"
    #: (landmarks or the pose search: about the mean head's size), "none" (no alignment)
    scale_source: str = "estimated"

    @property
    def mm_per_unit(self) -> float:
        """Millimetres per nphm unit of this scan (its unit when known, else the model's 250)."""
        return mm_per_nphm(self.transform.scale, self.unit)

    @property
    def points_kept_input(self) -> np.ndarray:
        """The kept (cropped) points in the input frame (M, 3)."""
        return self.points_input if self.keep is None else self.points_input[self.keep]


#: Alignment methods of :func:`align_scans` (None: "landmarks" with landmark files, else "auto").
ALIGNMENTS = ("auto", "landmarks", "none")
#: Where the scale of the alignment comes from (``size`` of :func:`align_scans`).
SIZES = ("auto", "unit", "estimate")


def _landmark_reference(identity: nn.Module, lm: np.ndarray, source: str, landmark_format: str,
                        ref: Optional[np.ndarray], models_dir: Optional[PathLike],
                        dataset_mean_68: Optional[np.ndarray]) -> Tuple[np.ndarray, Optional[str]]:
    """Reference (L, 3) nphm frame and format (None: another set) of landmarks ``lm``.

    First the explicit reference ``ref``; else by format (:func:`nphm.fitting.landmarks.resolve_format`):
    39 -> the identity model's anchors at ``z = 0`` when it has 39, 68 / 51 / 39 -> the models
    folder's reference file (:func:`nphm.fitting.landmarks.load_landmark_reference`), else the
    dataset's mean 68 (51: its last 51 rows).
    """
    from nphm.fitting.landmarks import FORMAT_COUNTS, load_landmark_reference, reference_path, resolve_format

    if ref is not None:
        if landmark_format not in (None, "auto"):
            fmt = resolve_format(len(lm), landmark_format, source)
        else:
            known = [f for f, n in FORMAT_COUNTS.items() if n == len(lm)]
            fmt = known[0] if len(known) == 1 else None
        if len(ref) != len(lm):
            raise ValueError(f"{source}: {len(lm)} landmarks but the reference has {len(ref)}")
        return ref, fmt
    fmt = resolve_format(len(lm), landmark_format, source)
    if fmt == "39" and getattr(identity, "n_loc", -1) == 39:
        return reference_landmarks(identity, 39), fmt
    if models_dir is not None and reference_path(models_dir).is_file():
        return load_landmark_reference(models_dir, fmt), fmt
    if fmt in ("68", "51") and dataset_mean_68 is not None:
        mean = np.asarray(dataset_mean_68, dtype=np.float64).reshape(68, 3)
        return (mean if fmt == "68" else mean[17:]), fmt
    where = f" (none in {reference_path(models_dir)})" if models_dir is not None else ""
    raise ValueError(f"{source}: no reference for the {len(lm)} landmarks (format {fmt}){where}: give the models "
                     "folder with its landmarks_reference.json, the dataset (68 / 51), or a reference file")


def _refuse_size_before_icp(points: np.ndarray, scale: float, mean_head: Target, unit: str, guessed: bool,
                            source: str) -> None:
    """Refuse a scan whose size is wrong whatever its rotation before the (then slow) ICP: the
    head-size check on the scaled, not yet rotated points when its ratio is a factor 2 beyond
    the error band (a head's extents differ by less than 1.3x between axes)."""
    import warnings

    from nphm.fitting.checks import SIZE_BANDS, check_head_size, head_extent

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pre = check_head_size(points * scale, head_extent(mean_head.points), unit, guessed, source=source, force=True)
    lo, hi = SIZE_BANDS["unit"][1]
    if not lo / 2 <= pre.value <= hi * 2:
        check_head_size(points * scale, head_extent(mean_head.points), unit, guessed, source=source)


def align_scans(
    identity: nn.Module,
    point_files: Sequence[PathLike],
    landmark_files: Sequence[PathLike] = (),
    units: str = "auto",
    reference_file: Optional[PathLike] = None,
    dataset_mean_68: Optional[np.ndarray] = None,
    shared_transform: bool = False,
    crop_box=None,
    mean_head: Optional[Target] = None,
    seed: int = 0,
    *,
    clouds: Optional[Sequence[Tuple[str, PathLike, np.ndarray]]] = None,
    landmark_format: str = "auto",
    models_dir: Optional[PathLike] = None,
    alignment: Optional[str] = None,
    neck_plane=None,
    checks: bool = False,
    force: bool = False,
    size: str = "auto",
    refine_landmark_pose: bool = True,
) -> List[AlignedScan]:
    """Read the scans and estimate their similarity to the nphm frame (see the module docstring).

    Args:
        landmark_files: none, one (shared by all scans: they must share one frame), or one per scan.
        units: "auto" or a key of :data:`UNIT_TO_NPHM` (the scale without landmarks; with
            landmarks and ``checks``, a declared unit is checked against their scale).
        reference_file: (L, 3) reference landmarks in the nphm frame (overrides the defaults).
        shared_transform: estimate the similarity on the first scan and use it for all.
        crop_box: ``(min (3,), max (3,))`` nphm box to keep (None: keep everything).
        mean_head: surface of the mean head (:func:`mean_head_target`; computed when needed).
        clouds: ``(name, source, points (N, 3))`` given directly instead of ``point_files``
            (e.g. back-projected depth frames, :mod:`nphm.fitting.depth`).
        landmark_format: "auto", "68", "51" or "39" (:func:`nphm.fitting.landmarks.resolve_format`).
        models_dir: the models folder whose ``landmarks_reference.json`` gives the references.
        alignment: "landmarks", "auto" (multi-start ICP), "none" (the points are in the nphm
            frame already: identity similarity); None: "landmarks" with landmark files, else "auto".
        neck_plane: ``(origin, normal)`` nphm frame: also drop the points below it
            (:func:`nphm.fitting.crop.crop_head`; with ``crop_box``).
        checks: run :func:`nphm.fitting.checks.check_alignment` on every aligned scan (before
            the crop); refused alignments raise :class:`nphm.fitting.checks.AlignmentCheckError`
            unless ``force`` (then a warning, recorded in ``check_messages``).
        size: where the similarity's scale comes from: "unit" (the declared unit's: the head
            keeps its own size; landmarks and the automatic search fit rotation and translation
            only), "estimate" (from the landmarks or the search: every head is brought to about
            the model's mean size, which is all that points in an unknown unit allow), "auto":
            "unit" when ``units`` is declared; without, the estimated scale, or the scale of the
            unit it lies within :data:`~nphm.fitting.alignment.UNIT_GUESS_FACTOR` of
            (:func:`~nphm.fitting.alignment.unit_of_scale`: a scan in mm,
            cm or m at the head's real size) (:data:`SIZES`).
        refine_landmark_pose: refine the landmarks' similarity by the identity model
            (:func:`nphm.fitting.auto_pose.refine_pose_with_model`, as the automatic alignment's
            best pose): the landmarks' Umeyama to the mean landmarks places a head that is not
            the mean head a few mm off.
    """
    if units != "auto" and units not in UNIT_TO_NPHM:
        raise ValueError(f"unknown unit {units!r}; use auto or one of {sorted(UNIT_TO_NPHM)}")
    alignment = alignment or ("landmarks" if landmark_files else "auto")
    if alignment not in ALIGNMENTS:
        raise ValueError(f"unknown alignment {alignment!r}; use one of {', '.join(ALIGNMENTS)}")
    if alignment == "landmarks" and not landmark_files:
        raise ValueError("alignment 'landmarks' needs landmark files")
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; use one of {', '.join(SIZES)}")
    if size == "unit" and units == "auto" and alignment != "none":
        raise ValueError("size 'unit' needs a declared unit (units mm, cm, m ...)")
    keep_scale = units != "auto" and size != "estimate"
    guess = units == "auto" and size == "auto"  # a unit guessed from the estimated scale
    if clouds is not None:
        scans = [(Path(src), check_points(np.asarray(p, dtype=np.float64), str(src), min_points=10))
                 for _, src, p in clouds]
        names = [str(n) for n, _, _ in clouds]
    else:
        if not point_files:
            raise ValueError("no scan files given")
        scans = [(Path(f), load_point_file(f, seed=seed)) for f in point_files]
        names = [p.stem for p, _ in scans]
    if not scans:
        raise ValueError("no scans given")
    if len(landmark_files) not in (0, 1, len(scans)):
        raise ValueError(f"give no landmark file, one for all scans, or one per scan ({len(scans)}), "
                         f"got {len(landmark_files)}")
    if len(set(names)) != len(names):
        raise ValueError(f"scan files must have distinct names, got {names}")
    ref = np.asarray(np.load(reference_file), dtype=np.float64) if reference_file is not None else None
    if ref is not None:
        ref = check_points(ref.reshape(-1, 3), f"{reference_file} (reference landmarks)")

    transforms: List[Similarity] = []
    methods: List[str] = []
    records: List[Optional[dict]] = []
    unit_used: List[Optional[str]] = []
    check_args: List[dict] = []
    landmark_pairs: List[Optional[Tuple[np.ndarray, np.ndarray]]] = []
    summaries: List[str] = []
    scale_sources: List[str] = []
    for i, (path, pts) in enumerate(scans):
        if shared_transform and i > 0:
            for values in (transforms, records, unit_used, check_args, landmark_pairs, summaries, scale_sources):
                values.append(values[0])
            methods.append(methods[0] + " (shared)")
            continue
        landmark_pairs.append(None)
        summaries.append("")
        if alignment == "none":
            transforms.append(Similarity.identity())
            scale_sources.append("none")
            methods.append("none (points already in the nphm frame)")
            records.append(None)
            unit_used.append("nphm" if units == "auto" else units)
            check_args.append(dict(unit="nphm", unit_guessed=False))
        elif alignment == "landmarks":
            lm_path = landmark_files[0] if len(landmark_files) == 1 else landmark_files[i]
            from nphm.fitting.landmarks import read_landmark_array

            lm = check_points(read_landmark_array(lm_path), f"{lm_path} (landmarks)", min_points=3)
            target, fmt = _landmark_reference(identity, lm, str(lm_path), landmark_format, ref, models_dir,
                                              dataset_mean_68)
            from nphm.fitting.checks import LANDMARK_SCALE_BAND
            from nphm.fitting.landmarks import rigid_landmarks

            def rms_of(T: Similarity) -> float:
                return float(np.sqrt(((T.apply(lm) - target) ** 2).sum(1).mean()))

            rigid_rows = rigid_landmarks(fmt, len(lm))
            T_lm = umeyama(lm[rigid_rows], target[rigid_rows], with_scale=True)
            guessed = unit_of_scale(T_lm.scale) if guess else None
            unit_scale = UNIT_TO_NPHM[units] if keep_scale else (UNIT_TO_NPHM[guessed] if guessed else None)
            # a unit the landmarks contradict is refused by the checks; forced, their scale is used
            scan_keeps = unit_scale is not None and (
                LANDMARK_SCALE_BAND[0] <= T_lm.scale / unit_scale <= LANDMARK_SCALE_BAND[1])
            if scan_keeps:
                rigid = umeyama(lm[rigid_rows] * unit_scale, target[rigid_rows], with_scale=False)
                T_lm = Similarity(unit_scale, rigid.rotation, rigid.translation)
            rms = rms_of(T_lm)
            method = (f"landmarks ({len(lm)}{'' if fmt is None else ', format ' + fmt}, Umeyama"
                      f"{', scale of the unit ' + (guessed or units) if scan_keeps else ''}"
                      f"{' (guessed from the size)' if scan_keeps and guessed else ''}")
            if refine_landmark_pose:
                from nphm.fitting.auto_pose import refine_pose_with_model

                # the mean landmarks place a head that is not the mean head a few mm off
                T_lm, _, _, _ = refine_pose_with_model(identity, pts, T_lm, fit_scale=not scan_keeps, seed=seed)
                method += ", refined by the model"
            transforms.append(T_lm)
            scale_sources.append("unit" if scan_keeps else "estimated")
            methods.append(method + ")")
            records.append({"method": methods[-1], "rms_nphm": rms, "rms_after_nphm": rms_of(T_lm)})
            landmark_pairs[-1] = (lm, target)
            unit_used.append(guessed if units == "auto" else units)
            check_args.append(dict(landmarks=lm, reference=target, transform=transforms[-1], fmt=fmt,
                                   unit=None if units == "auto" else units))
        else:
            from nphm.fitting.auto_pose import auto_pose

            if mean_head is None:
                mean_head = mean_head_target(identity, seed=seed)
            declared = None if units == "auto" else units
            if checks and not force and declared is not None:
                _refuse_size_before_icp(pts, UNIT_TO_NPHM[declared], mean_head, declared, False, path.name)
            result = auto_pose(pts, mean_head, identity, unit=declared, seed=seed, keep_unit_scale=keep_scale,
                               snap_to_unit=guess)
            T_auto, guessed = result.transform, result.unit if result.unit_guessed else None
            transforms.append(T_auto)
            scale_sources.append("unit" if keep_scale or guessed else "estimated")
            methods.append(f"automatic (pose search scored by the {result.scored_by}, unit {result.unit}"
                           f"{' estimated' if declared is None else ''}"
                           f"{', scale of the unit' if keep_scale or guessed else ''}"
                           f"{' (guessed from the size)' if guessed else ''})")
            records.append(result.to_dict())
            summaries[-1] = result.summary() + (f"; taken as {guessed} at the head's real size (scale "
                                                f"{UNIT_TO_NPHM[guessed]:g})" if guessed else "")
            unit_used.append(result.unit)
            check_args.append(dict(unit=result.unit, unit_guessed=declared is None))
    mean_extent = None
    if checks:
        from nphm.fitting.checks import head_extent

        if mean_head is None:
            mean_head = mean_head_target(identity, seed=seed)
        mean_extent = head_extent(mean_head.points)
    out = []
    for (path, pts), name, T, method, record, unit, cargs, pair, summary, scale_source in zip(
            scans, names, transforms, methods, records, unit_used, check_args, landmark_pairs, summaries,
            scale_sources):
        aligned = T.apply(pts)
        messages: List[str] = []
        if checks:
            import warnings

            from nphm.fitting.checks import check_alignment

            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                check_alignment(aligned, mean_extent, source=path.name, force=force, **cargs)
            for w in caught:
                messages.append(str(w.message))
                warnings.warn(w.message, w.category, stacklevel=2)
        keep = None
        if crop_box is not None:
            from nphm.fitting.crop import crop_head

            keep = crop_head(aligned, crop_box, neck_plane)
            aligned = aligned[keep]
        if len(aligned) < 10:
            raise ValueError(f"{path}: only {len(aligned)} points lie in the model's box after alignment "
                             f"({method}); check the landmarks / units")
        out.append(AlignedScan(name, path, pts, T, aligned, method, unit, keep, messages, record, pair, summary,
                               scale_source))
    return out


@dataclass
class CustomFitOutputs:
    """Paths of everything :func:`write_custom_fit` wrote, per scan name, and the reports."""

    out_dir: Path
    meshes_nphm: Dict[str, Path] = field(default_factory=dict)
    meshes_input: Dict[str, Path] = field(default_factory=dict)
    transforms: Dict[str, Path] = field(default_factory=dict)
    #: per scan: :func:`nphm.fitting.report.fit_report` (distances in mm, transform, alignment)
    reports: Dict[str, dict] = field(default_factory=dict)
    #: per scan: the automatic alignment's one-line summary (empty for other alignments)
    alignment_summaries: Dict[str, str] = field(default_factory=dict)
    #: wall-clock seconds per phase ("meshes"; :func:`run_custom_fit` adds the others)
    seconds: Dict[str, float] = field(default_factory=dict)


def write_custom_fit(
    out_dir: PathLike,
    scans: Sequence[AlignedScan],
    identity: nn.Module,
    deformation: Optional[nn.Module],
    fit: FitResult,
    settings: FittingSettings,
    resolution: int = 256,
    figure: bool = True,
    mean_head: Optional[Target] = None,
    face_anchor_points: Optional[np.ndarray] = None,
) -> CustomFitOutputs:
    """Mesh the fit and write meshes (nphm and input frame), transforms, latents, error meshes and
    pictures (see the module docstring for the files).

    Args:
        mean_head: the model's mean head (:func:`mean_head_target`) for the alignment pictures
            (None: no alignment picture).
        face_anchor_points: (K, 3) nphm-frame anchors whose surroundings are the face in the
            distance statistics (:func:`nphm.fitting.report.face_mask`; None: no face statistics).
    """
    from nphm.fitting.report import face_mask, landmark_residuals, write_fit_report

    out_dir = Path(out_dir)
    z_ex = fit.z_ex if deformation is not None else None
    bounds = (settings.grid_min, settings.grid_max)
    started = time.perf_counter()
    canonical, posed = mesh_fit(identity, deformation, fit.z_id, z_ex, resolution, bounds, mode=CUSTOM_MESH_MODE)
    if deformation is None:
        posed = [canonical.copy() for _ in scans]
    outputs = CustomFitOutputs(out_dir)
    outputs.seconds["meshes"] = time.perf_counter() - started
    save_mesh(out_dir / "canonical_nphm.ply", canonical)
    save_npy(out_dir / "lat_shape.npy", fit.z_id.cpu().numpy().reshape(1, 1, -1))
    if z_ex is not None:
        save_npy(out_dir / "lat_expr.npy", z_ex.cpu().numpy()[:, None, :])
    for i, (scan, mesh) in enumerate(zip(scans, posed)):
        back = trimesh.Trimesh(scan.transform.invert(np.asarray(mesh.vertices)), np.asarray(mesh.faces), process=False)
        outputs.meshes_nphm[scan.name] = out_dir / f"{scan.name}_nphm.ply"
        outputs.meshes_input[scan.name] = out_dir / f"{scan.name}_input_frame.ply"
        outputs.transforms[scan.name] = out_dir / f"{scan.name}_transform.json"
        save_mesh(outputs.meshes_nphm[scan.name], mesh)
        save_mesh(outputs.meshes_input[scan.name], back)
        save_mesh(out_dir / f"{scan.name}_aligned_points.ply", trimesh.PointCloud(scan.points_nphm))
        info = {"source": str(scan.source), "alignment": scan.method, **scan.transform.to_dict()}
        if scan.unit is not None:
            info["unit"] = scan.unit
        save_json(outputs.transforms[scan.name], info)
        mm = scan.mm_per_unit
        face = None if face_anchor_points is None else face_mask(scan.points_nphm, face_anchor_points)
        residuals = None if scan.landmarks is None else landmark_residuals(*scan.landmarks, scan.transform, mm)
        picture = "overview" if i == 0 else f"{scan.name}_fit"
        report = write_fit_report(out_dir, scan.name, scan.points_nphm, mesh, scan.transform, mm, face,
                                  scan.alignment_record, residuals, figure=figure, title=scan.name,
                                  picture_name=picture)
        if figure and mean_head is not None:
            from nphm.pictures import alignment_figure

            alignment_figure(out_dir / f"{scan.name}_alignment.png", scan.points_nphm, mean_head,
                             caption=scan.summary or scan.method)
            report["files"]["alignment_picture"] = f"{scan.name}_alignment.png"
        report["unit"] = scan.unit
        outputs.reports[scan.name] = report
        outputs.alignment_summaries[scan.name] = scan.summary
    return outputs


#: ``--robust``: Geman-McClure surface loss starting at this scale (nphm units, 7.5 mm) ...
ROBUST_SCALE = 0.03
#: ... shrunk by these factors from these release steps on (0.03 -> 0.01 at step 250): the
#: start far from the person (the mean head) sees the whole head first, then ignores outliers.
ROBUST_SCALE_SCHEDULE = {250: 1.0 / 3.0}


def robust_settings(settings: FittingSettings, scale: float = ROBUST_SCALE,
                    schedule: Optional[Dict[int, float]] = None) -> FittingSettings:
    """``settings`` with the Geman-McClure surface loss of scale ``scale`` and its shrinking schedule."""
    return settings.replace(surface_loss="geman_mcclure", robust_scale=float(scale),
                            robust_scale_schedule=dict(ROBUST_SCALE_SCHEDULE if schedule is None else schedule))


def run_custom_fit(
    identity: nn.Module,
    deformation: Optional[nn.Module],
    point_files: Sequence[PathLike],
    out_dir: PathLike,
    settings: FittingSettings = FittingSettings(),
    landmark_files: Sequence[PathLike] = (),
    units: str = "auto",
    reference_file: Optional[PathLike] = None,
    dataset_mean_68: Optional[np.ndarray] = None,
    shared_transform: bool = False,
    crop: bool = True,
    resolution: int = 256,
    seed: int = 0,
    progress: bool = True,
    figure: bool = True,
    *,
    clouds: Optional[Sequence[Tuple[str, PathLike, np.ndarray]]] = None,
    landmark_format: str = "auto",
    models_dir: Optional[PathLike] = None,
    alignment: Optional[str] = None,
    refine_pose: Optional[bool] = False,
    neck_plane=None,
    checks: bool = True,
    force: bool = False,
    identity_latent: Optional[np.ndarray] = None,
    sequence: bool = False,
    smoothness: float = 0.0,
    log: Optional[Callable[[str], None]] = None,
    size: str = "auto",
    refine_landmark_pose: bool = True,
) -> CustomFitOutputs:
    """Align, check, crop, fit (jointly when a deformation model is given, else identity only) and write.

    See :func:`align_scans` for the alignment arguments and :func:`write_custom_fit` for the outputs.

    Args:
        refine_pose: refine the alignment in the fit (:mod:`nphm.fitting.pose`: the alignment is
            the start ``pose=``, ``settings.pose`` enabled); None: refine unless ``alignment``
            is "none". The written transforms are then the refined ones (input -> nphm).
        neck_plane: with ``crop``, also drop points below this plane (``(origin, normal)``;
            :func:`nphm.fitting.crop.neck_plane_for`).
        identity_latent: (D_id,) a known identity latent: fit only the expression latents
            (:func:`nphm.fitting.joint.fit_expressions`, ``settings.for_known_identity()``).
        sequence: the scans are ordered frames: :func:`nphm.fitting.joint.fit_sequence`
            (needs ``identity_latent``) with smoothness weight ``smoothness``.
        log: called with one line per scan once it is aligned (how, and the automatic
            alignment's confidence), before the fit starts.
        size: where the alignment's scale comes from (:func:`align_scans`); with the declared
            unit's scale, the pose refined in the fit keeps it too (rotation and translation).
        refine_landmark_pose: see :func:`align_scans`.
    """
    from dataclasses import replace

    if (identity_latent is not None or sequence) and deformation is None:
        raise ValueError("fitting expressions of a known identity (or a sequence) needs an expression model")
    if sequence and identity_latent is None:
        raise ValueError("a sequence fit needs a known identity latent (fit a neutral scan first, then pass "
                         "its lat_shape.npy)")
    # the crop keeps the release's box even where the config's grid reaches lower (the CPU
    # configs, nphm.boxes.HEAD_FITTING_BOUNDS): with the lower neck in the fit, posed scans of the
    # 300-subject models fitted 0.68-0.70 mm on the face against 0.57 mm in the nphm frame
    box = FITTING_BOUNDS if crop else None
    started = time.perf_counter()
    mean_head = cached_mean_head(identity, models_dir, seed=seed)
    scans = align_scans(identity, point_files, landmark_files, units, reference_file, dataset_mean_68,
                        shared_transform, box, mean_head, seed=seed, clouds=clouds, landmark_format=landmark_format,
                        models_dir=models_dir, alignment=alignment, neck_plane=neck_plane, checks=checks,
                        force=force, size=size, refine_landmark_pose=refine_landmark_pose)
    aligned = time.perf_counter()
    if log is not None:
        for scan in scans:
            log(f"{scan.name}: {scan.summary or scan.method}")
    if refine_pose is None:
        refine_pose = (alignment or ("landmarks" if landmark_files else "auto")) != "none"
    pose = None
    if refine_pose:
        # a trusted unit's scale is the head's own size: the fit refines rotation and translation
        fit_scale = settings.pose.fit_scale and any(s.scale_source != "unit" for s in scans)
        settings = settings.replace(pose=replace(settings.pose, enabled=True, fit_scale=fit_scale))
        observations = [s.points_kept_input for s in scans]
        pose = scans[0].transform if shared_transform else [s.transform for s in scans]
    else:
        observations = [s.points_nphm for s in scans]
    generator = torch.Generator().manual_seed(seed)
    if identity_latent is not None:
        z_id = torch.as_tensor(np.asarray(identity_latent, dtype=np.float32).reshape(-1))
        known = settings.for_known_identity()
        if sequence:
            fit = fit_sequence(identity, deformation, z_id, observations, known, smoothness, first_settings=settings,
                               generator=generator, progress=progress, pose=pose)
        else:
            fit = fit_expressions(identity, deformation, z_id, observations, known, generator, progress, pose=pose)
        settings = known if not sequence else settings
    elif deformation is None:
        fit = fit_identity(identity, observations, settings, generator, progress, pose=pose)
    else:
        fit = fit_joint(identity, deformation, observations, settings, generator, progress, pose=pose)
    if refine_pose and fit.poses is not None:
        for scan, T in zip(scans, fit.poses):
            scan.transform = T
            scan.points_nphm = T.apply(scan.points_kept_input)
            scan.method += " + pose refined in the fit"
    fitted = time.perf_counter()
    outputs = write_custom_fit(out_dir, scans, identity, deformation, fit, settings, resolution, figure,
                               mean_head, face_anchor_points(identity, fit.z_id, models_dir))
    meshes = outputs.seconds["meshes"]
    outputs.seconds = {"alignment": aligned - started, "fit": fitted - aligned, "meshes": meshes,
                       "outputs": time.perf_counter() - fitted - meshes}
    save_json(Path(out_dir) / "fitting.json", {
        "per_scan": outputs.reports,
        "scans": [str(s.source) for s in scans],
        "alignment": [s.method for s in scans],
        "transforms_input_to_nphm": {s.name: s.transform.to_dict() for s in scans},
        "pose_refined": bool(refine_pose),
        "scale": {s.name: s.scale_source for s in scans},
        "surface_loss": settings.surface_loss,
        "robust_scale": settings.robust_scale if settings.surface_loss != "l1" else None,
        "neck_crop": neck_plane is not None and crop,
        "fit": ("sequence" if sequence else "expressions (known identity)") if identity_latent is not None
               else ("joint" if deformation is not None else "identity"),
        "check_messages": {s.name: s.check_messages for s in scans if s.check_messages},
        "steps": settings.n_iterations,
        "points_per_step": f"{settings.observations_per_step} x {settings.points_per_observation}",
        "jacobians": {"roots": settings.broyden.jacobian, "implicit_step": settings.broyden.implicit_jacobian},
        "seconds_fit": round(fit.seconds, 2),
        #: wall clock per phase: alignment (with the mean head), fit, meshes, outputs (reports, pictures)
        "seconds": {k: round(v, 2) for k, v in outputs.seconds.items()},
        "final": fit.history[-1] if fit.history else {},
    })
    return outputs
