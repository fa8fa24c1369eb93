"""Write a synthetic dataset in the NPHM release layout.

::

    OUT/{subject:03d}/{expression:03d}/registration.ply  flame.ply  scan.ply  s.npy  R.npy  t.npy
    OUT/assets/anchors_39.npy  lm_inds_39.npy  lm_inds_68.npy  face.npy  face_region_flame.npy
               throat_plane_flame.npy  template.ply (FLAME-like topology)  template_registration.ply
    OUT/dataset.json      description: splits, neutral expressions, index tables, assets
    OUT/synthetic.json    generator settings (a later run into the same folder must match)

Two sources of heads (:func:`get_source`): ``"procedural"`` (the implicit heads of this
package: small, fast, the library default) and ``"ict"`` (realistic heads from the ICT Face
Model with hair, eyes, mouth interior and scanner-like scans, :mod:`nphm.data.synthetic.ict`).
The source and its generator version are recorded; a folder made with one source is never
extended with the other.

Every file is written atomically; finished scans (all six files present) are skipped unless
``overwrite``. Output is byte-for-byte identical for the same seed, whatever the number of
workers or the order of the work.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import traceback
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import trimesh
from tqdm import tqdm

from nphm.data.synthetic.expression import EXPRESSION_TYPES, NEUTRAL_CLOSED, NEUTRAL_OPEN, expression_type
from nphm.data.synthetic.landmarks import TemplateMetadata, get_metadata
from nphm.data.synthetic.subject import SyntheticSubject
from nphm.data.synthetic.template import get_template
from nphm.utils.io import PathLike, save_json, save_mesh, save_npy


#: bump when the generated geometry or assets change, so that stale folders are not silently extended
#: (2: anchor pairs in the release order, right member first); the procedural source's version
GENERATOR_VERSION = 2
#: the source of ``generate_dataset`` and of folders whose synthetic.json names none
DEFAULT_SOURCE = "procedural"
SCAN_FILES = ("registration.ply", "flame.ply", "scan.ply", "s.npy", "R.npy", "t.npy")
ASSETS_DIR = "assets"
ASSET_FILES = {
    "anchors_mean": "anchors_39.npy",
    "anchor_indices": "lm_inds_39.npy",
    "landmark_indices_68": "lm_inds_68.npy",
    "face_mask_registration": "face.npy",
    "face_region_flame": "face_region_flame.npy",
    "throat_plane_flame": "throat_plane_flame.npy",
    "template": "template.ply",
    "template_registration": "template_registration.ply",
}
#: local latent codes without observations in single-view fitting: the back-of-head anchor
#: pair (30, 31) and the background member (39), as in the release
UNOBSERVED_LOCAL_LATENTS = [30, 31, 39]


@dataclass(frozen=True)
class SyntheticSource:
    """A generator of synthetic subjects and its fixed topologies.

    Attributes:
        name: recorded in ``synthetic.json`` and ``dataset.json``.
        generator_version: recorded likewise; bumped when the source's output changes.
        subject: ``(subject, seed) -> object`` with ``item(expression) -> ScanItem``.
        metadata: the topologies' index tables and masks.
        templates: ``{"flame": mesh, "registration": mesh}``, the template meshes (nphm frame).
        n_vertices: vertex count of each topology (for the description).
        prepare: builds the shared caches (called before worker processes are forked).
    """

    name: str
    generator_version: int
    subject: Callable[[int, int], Any]
    metadata: Callable[[], TemplateMetadata]
    templates: Callable[[], Dict[str, trimesh.Trimesh]]
    n_vertices: Callable[[], Dict[str, int]]
    prepare: Callable[[], None]


def _procedural_templates() -> Dict[str, trimesh.Trimesh]:
    t = get_template()
    return {name: trimesh.Trimesh(t.rest[name], t.grids[name].faces, process=False)
            for name in ("flame", "registration")}


def _procedural_n_vertices() -> Dict[str, int]:
    return {name: int(g.n_vertices) for name, g in get_template().grids.items()}


def _prepare_procedural() -> None:
    get_template()
    get_metadata()


def _procedural_source() -> SyntheticSource:
    return SyntheticSource(name="procedural", generator_version=GENERATOR_VERSION, subject=SyntheticSubject,
                           metadata=get_metadata, templates=_procedural_templates, n_vertices=_procedural_n_vertices,
                           prepare=_prepare_procedural)


def _ict_source() -> SyntheticSource:
    from nphm.data.synthetic.ict import ICT_SOURCE

    return ICT_SOURCE


#: source name -> factory (imported on first use: the ICT source loads its model then)
SOURCES: Dict[str, Callable[[], SyntheticSource]] = {"procedural": _procedural_source, "ict": _ict_source}
SourceLike = Union[str, SyntheticSource]


@lru_cache(maxsize=None)
def _source_by_name(name: str) -> SyntheticSource:
    if name not in SOURCES:
        raise ValueError(f"unknown synthetic source {name!r}; known: {', '.join(SOURCES)}")
    return SOURCES[name]()


def get_source(source: SourceLike = DEFAULT_SOURCE) -> SyntheticSource:
    """The :class:`SyntheticSource` named ``source`` (``"procedural"`` or ``"ict"``), or ``source`` itself."""
    return source if isinstance(source, SyntheticSource) else _source_by_name(str(source))


@dataclass
class GenerationReport:
    """Outcome of :func:`generate_dataset`."""

    out_dir: Path
    written: int = 0
    skipped: int = 0
    failures: List[Tuple[int, int, str]] = field(default_factory=list)

    @property
    def description_path(self) -> Path:
        return self.out_dir / "dataset.json"


def scan_dir(out_dir: PathLike, subject: int, expression: int) -> Path:
    return Path(out_dir) / f"{subject:03d}" / f"{expression:03d}"


def is_finished(folder: Path) -> bool:
    return all((folder / name).is_file() for name in SCAN_FILES)


def split_subjects(subjects: Sequence[int]) -> Tuple[List[int], List[int], List[int]]:
    """Deterministic ~70/10/20 % train/eval/test split of sorted ``subjects``: train first,
    then eval, then test (at least one test subject from 2 subjects on, one eval subject from
    3 on, and always at least one training subject)."""
    subjects = sorted(int(s) for s in subjects)
    n = len(subjects)
    n_test = max(1, int(round(0.2 * n))) if n >= 2 else 0
    n_eval = max(1, int(round(0.1 * n))) if n >= 3 else 0
    n_train = n - n_test - n_eval
    return subjects[:n_train], subjects[n_train:n_train + n_eval], subjects[n_train + n_eval:]


def write_scan(folder: Path, subject: Any, expression: int) -> None:
    """Write the six files of one scan of ``subject`` (a source's subject object, e.g. a
    :class:`SyntheticSubject`) into ``folder``."""
    item = subject.item(expression)
    save_npy(folder / "s.npy", np.float64(item.s))
    save_npy(folder / "R.npy", item.R.astype(np.float64))
    save_npy(folder / "t.npy", item.t.astype(np.float64))
    save_mesh(folder / "flame.ply", item.flame)
    save_mesh(folder / "registration.ply", item.registration)
    save_mesh(folder / "scan.ply", item.scan)


def _generate_subject(task: Tuple[str, int, int, int, bool, str]) -> Tuple[int, int, int, List[Tuple[int, int, str]]]:
    out_dir, subject_id, n_expressions, seed, overwrite, source = task
    written, skipped, failures = 0, 0, []
    subject: Optional[Any] = None
    for expression in range(n_expressions):
        folder = scan_dir(out_dir, subject_id, expression)
        if not overwrite and is_finished(folder):
            skipped += 1
            continue
        try:
            if subject is None:
                subject = get_source(source).subject(subject_id, seed)
            write_scan(folder, subject, expression)
            written += 1
        except Exception as e:  # report the failing scan and go on with the others
            failures.append((subject_id, expression, f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))
    return subject_id, written, skipped, failures


def _check_settings(out_dir: Path, seed: int, overwrite: bool, source: SyntheticSource) -> None:
    """Refuse to extend a folder generated with another seed, source or generator version."""
    marker = out_dir / "synthetic.json"
    settings = {"seed": seed, "generator_version": source.generator_version, "source": source.name}
    if marker.is_file() and not overwrite:
        try:
            old = json.loads(marker.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{marker}: not valid JSON ({e}); remove it or pass overwrite") from e
        old = {k: old.get(k, DEFAULT_SOURCE if k == "source" else None) for k in settings}
        if old != settings:
            raise ValueError(f"{out_dir} holds a synthetic dataset generated with {old}, not {settings}; "
                             "use another folder or overwrite")
    save_json(marker, settings)


def write_assets(out_dir: Path, train_subjects: Sequence[int], source: SourceLike = DEFAULT_SOURCE) -> Dict[str, str]:
    """Write the template assets of ``source``; the mean anchors are averaged over the
    neutral-open registrations of ``train_subjects`` found on disk. Returns the assets table."""
    source = get_source(source)
    meta = source.metadata()
    assets = out_dir / ASSETS_DIR
    anchors = []
    for subject in train_subjects:
        path = scan_dir(out_dir, subject, NEUTRAL_OPEN) / "registration.ply"
        if path.is_file():
            mesh = trimesh.load(path, process=False)
            anchors.append(np.asarray(mesh.vertices, dtype=np.float64)[meta.anchor_indices])
    if not anchors:
        raise RuntimeError(f"{out_dir}: no neutral-open registration of a training subject found; "
                           "cannot compute the mean anchors")
    save_npy(assets / ASSET_FILES["anchors_mean"], np.mean(anchors, axis=0))
    save_npy(assets / ASSET_FILES["anchor_indices"], meta.anchor_indices)
    save_npy(assets / ASSET_FILES["landmark_indices_68"], meta.landmark_indices_68)
    save_npy(assets / ASSET_FILES["face_mask_registration"], meta.face_mask_registration)
    save_npy(assets / ASSET_FILES["face_region_flame"], meta.face_region_flame)
    save_npy(assets / ASSET_FILES["throat_plane_flame"], meta.throat_plane_flame)
    templates = source.templates()
    save_mesh(assets / ASSET_FILES["template"], templates["flame"])
    save_mesh(assets / ASSET_FILES["template_registration"], templates["registration"])
    return dict(ASSET_FILES)


def build_description(subjects: Sequence[int], n_expressions: int, seed: int,
                      assets: Dict[str, str], source: SourceLike = DEFAULT_SOURCE) -> Dict[str, object]:
    """The ``dataset.json`` content for a synthetic dataset made by ``source``."""
    source = get_source(source)
    meta = source.metadata()
    train, eval_, test = split_subjects(subjects)
    return {
        "name": "synthetic",
        "subjects_train": train,
        "subjects_eval": eval_,
        "subjects_test": test,
        "neutral_open": {str(s): NEUTRAL_OPEN for s in subjects},
        "neutral_closed": {str(s): NEUTRAL_CLOSED for s in subjects},
        "invalid_expressions_test": {},
        "bad_scans": {},
        "anchor_vertex_indices_registration": meta.anchor_indices.tolist(),
        "landmark_vertex_indices_registration_68": meta.landmark_indices_68.tolist(),
        "throat_plane_flame_vertex_indices": meta.throat_plane_flame.tolist(),
        "unobserved_local_latent_indices_in_fitting": list(UNOBSERVED_LOCAL_LATENTS),
        "assets_dir": ASSETS_DIR,
        "assets": assets,
        "synthetic": {
            "source": source.name,
            "seed": seed,
            "generator_version": source.generator_version,
            "n_subjects": len(subjects),
            "n_expressions": n_expressions,
            "neutral_closed_expression": NEUTRAL_CLOSED,
            "neutral_open_expression": NEUTRAL_OPEN,
            "expression_types": [expression_type(e) for e in range(n_expressions)],
            "anchor_names": list(meta.anchor_names),
            "n_vertices": source.n_vertices(),
            "frame": "nphm (FLAME x 4), +y up, +z forward, +x subject's left; 1 unit = 250 mm",
        },
    }


def generate_dataset(out_dir: Optional[PathLike] = None, n_subjects: int = 50, n_expressions: int = 10,
                     seed: int = 0, workers: int = 1, overwrite: bool = False, first_subject: int = 0,
                     progress: bool = True, source: SourceLike = DEFAULT_SOURCE) -> GenerationReport:
    """Generate ``n_subjects`` x ``n_expressions`` synthetic scans of ``source``
    (``"procedural"``, the default, or ``"ict"``) into ``out_dir`` (default
    ``nphm.paths.DATA``), then the assets and ``dataset.json``.

    ``source`` is a name in :data:`SOURCES` or a :class:`SyntheticSource` registered there (worker
    processes look it up by name). Subjects are ``first_subject .. first_subject + n_subjects - 1``
    (folders ``{id:03d}``);
    expression 0 is the neutral closed-mouth scan, 1 the neutral open-mouth one, the rest
    follow :data:`nphm.data.synthetic.expression.EXPRESSION_TYPES` and then random mixtures.
    Failing scans are reported in the returned report and do not stop the others.
    """
    if out_dir is None:
        from nphm import paths

        out_dir = paths.DATA
    out_dir = Path(out_dir)
    if n_subjects < 1:
        raise ValueError(f"n_subjects must be >= 1, got {n_subjects}")
    if not 2 <= n_expressions <= 1000:
        raise ValueError(f"n_expressions must be in [2, 1000] (0 = neutral closed, 1 = neutral open), "
                         f"got {n_expressions}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if first_subject < 0 or first_subject + n_subjects > 1000:
        raise ValueError(f"subject ids must lie in [0, 999], got {first_subject}..{first_subject + n_subjects - 1}")
    source = get_source(source)
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_settings(out_dir, seed, overwrite, source)

    # build the shared templates before any worker starts (forked workers inherit them)
    source.prepare()
    subjects = list(range(first_subject, first_subject + n_subjects))
    tasks = [(str(out_dir), s, n_expressions, seed, overwrite, source.name) for s in subjects]
    report = GenerationReport(out_dir=out_dir)
    bar = tqdm(total=len(tasks), desc="synthetic subjects", unit="subject", disable=not progress)

    def collect(result):
        _, written, skipped, failures = result
        report.written += written
        report.skipped += skipped
        report.failures.extend(failures)
        for subject, expression, message in failures:
            tqdm.write(f"failed: subject {subject:03d} expression {expression:03d}: {message.splitlines()[0]}")
        bar.update(1)

    workers = max(1, min(int(workers), len(tasks)))
    if workers == 1:
        for task in tasks:
            collect(_generate_subject(task))
    else:
        method = "fork" if "fork" in mp.get_all_start_methods() else None
        with mp.get_context(method).Pool(workers) as pool:
            for result in pool.imap_unordered(_generate_subject, tasks):
                collect(result)
    bar.close()

    train, _, _ = split_subjects(subjects)
    assets = write_assets(out_dir, train if train else subjects, source)
    save_json(out_dir / "dataset.json", build_description(subjects, n_expressions, seed, assets, source))
    return report


__all__ = [
    "DEFAULT_SOURCE",
    "EXPRESSION_TYPES",
    "GenerationReport",
    "SOURCES",
    "SyntheticSource",
    "build_description",
    "generate_dataset",
    "get_source",
    "is_finished",
    "scan_dir",
    "split_subjects",
    "write_assets",
    "write_scan",
]
