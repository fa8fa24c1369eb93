"""Convert the ICT Face Model Light arrays into the compact asset the project ships.

Input (``kit_dir``): ``ict_face_model_light.npz`` (neutral in cm, faces, 100 identity modes, 57
expression shapes, expression names), ``vertex_indices.json`` (68 landmark vertices) and the
kit's ``LICENSE``. Output (``out_path``, e.g. ``src/nphm/data/heads/ict_light.npz``): only the
parts a head generator needs (skin, mouth and eye sockets, gums/tongue, teeth, eyeballs; the
rendering helpers are dropped), faces remapped to the kept vertices, per-vertex region labels,
the kit's region table, landmarks, the 39 anchor vertices and three neck-plane vertices of
:mod:`nphm.data.heads.anchors`, and the similarity into the real nphm frame (fitted from the
anchors to the release's mirror-symmetrised mean anchors).

Storage: the neutral as float32 cm; expression shapes and the identity modes of the deformable
parts as float16 cm offsets; the identity modes of the rigid bodies (each tooth, each eyeball),
which move by an affine map of their neutral shape in every mode, as one float32 3x4 matrix per
mode and body (:mod:`nphm.data.heads.storage`). The loader expands them to per-vertex offsets.
The conversion reports the storage error of both in millimetres.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Sequence, Tuple

import numpy as np

from nphm.data.frames import Similarity, umeyama
from nphm.data.heads.anchor_search import anchor_residuals_mm, symmetrise_anchors
from nphm.data.heads.anchors import ANCHOR_MEANINGS, ANCHOR_VERTICES, THROAT_PLANE_VERTICES
from nphm.data.heads.regions import (FACE_REGION_NAME, KEPT_REGIONS, KIT_REGIONS, RIGID_PARTS,
                                     NARROW_FACE, SKIN_REGIONS, region_labels)
from nphm.data.heads.storage import FORMAT_VERSION, pack_identity, rigid_groups, unpack_identity
from nphm.utils.io import PathLike, atomic_path


KIT_ARRAYS = "ict_face_model_light.npz"
KIT_INDICES = "vertex_indices.json"
#: the kit's license notice, copied beside the asset
LICENSE_NAME = "LICENSE_ICT_FaceKit.txt"
CM_TO_MM = 10.0
#: the release's mean anchors, shipped beside this module
RELEASE_ANCHORS_FILE = Path(__file__).with_name("release_anchors39_mean_nphm.npy")


@dataclass
class ConversionReport:
    """What :func:`convert_ict_facekit` wrote and measured (errors in mm)."""

    out_path: Path
    size_bytes: int
    n_vertices: int
    n_faces: int
    n_outside_faces: int
    n_degenerate_faces: int
    identity_float16_error_mm: float
    identity_affine_error_mm: float
    identity_sample_error_mm: float
    expression_float16_error_mm: float
    similarity: Similarity
    anchor_residuals_mm: np.ndarray

    def summary(self) -> str:
        """Human-readable lines (sizes, storage errors, frame, per-anchor residuals)."""
        r = self.anchor_residuals_mm
        s = self.similarity
        pitch = np.degrees(np.arctan2(s.rotation[2, 1], s.rotation[1, 1]))
        lines = [
            f"wrote {self.out_path} ({self.size_bytes / 2**20:.2f} MiB): {self.n_vertices} vertices, "
            f"{self.n_faces} faces (dropped: {self.n_outside_faces} outside the kept regions, "
            f"{self.n_degenerate_faces} degenerate)",
            f"float16 error, identity modes (dense parts): max {self.identity_float16_error_mm:.4f} mm per unit weight",
            f"affine error, identity modes (rigid parts): max {self.identity_affine_error_mm:.4f} mm per unit weight",
            f"identity samples w ~ N(0,1), all modes: max vertex error {self.identity_sample_error_mm:.4f} mm",
            f"float16 error, expression shapes: max {self.expression_float16_error_mm:.4f} mm at weight 1",
            f"to nphm: scale {s.scale:.6f} (cm -> nphm; 0.04 = metric), pitch {pitch:.2f} deg, "
            f"translation {np.round(s.translation, 4).tolist()}",
            f"anchor residuals vs release means: mean {r.mean():.2f} mm, max {r.max():.2f} mm (anchor {int(r.argmax())})",
        ]
        lines += [f"  {k:2d} {r[k]:5.1f} mm  {ANCHOR_MEANINGS[k]}" for k in range(len(r))]
        return "\n".join(lines)


def load_kit(kit_dir: PathLike) -> Tuple[Dict[str, np.ndarray], np.ndarray]:
    """The kit's arrays (``neutral``, ``faces``, ``identity_modes``, ``expression_shapes``,
    ``expression_names``) and its 68 landmark vertex indices (68,)."""
    kit_dir = Path(kit_dir)
    with np.load(kit_dir / KIT_ARRAYS) as z:
        arrays = {k: z[k] for k in z.files}
    landmarks = np.asarray(json.loads((kit_dir / KIT_INDICES).read_text())["idx_to_landmark_verts"], dtype=np.int64)
    return arrays, landmarks


def kept_vertex_map(n_kit_vertices: int, kept: Sequence[str] = KEPT_REGIONS) -> Tuple[np.ndarray, np.ndarray]:
    """``(kit_index (V,) of each kept vertex, lookup (n_kit,) kit -> kept index or -1)``."""
    keep = np.zeros(n_kit_vertices, dtype=bool)
    for name, first, last in KIT_REGIONS:
        if name in kept:
            keep[first:last + 1] = True
    kit_index = np.flatnonzero(keep)
    lookup = np.full(n_kit_vertices, -1, dtype=np.int64)
    lookup[kit_index] = np.arange(len(kit_index))
    return kit_index, lookup


def remap_faces(faces: np.ndarray, lookup: np.ndarray, vertices: np.ndarray) -> Tuple[np.ndarray, int, int]:
    """Faces with every vertex kept, renumbered, without degenerate ones.

    Args:
        faces: (F, 3) kit faces; lookup: (n_kit,) kit -> kept index or -1;
        vertices: (V, 3) kept vertices (for the area test).

    Returns:
        ``(faces (F', 3) int32, number outside the kept regions, number degenerate)``.
        Degenerate: a repeated vertex or an area below 1e-12 of the mean.
    """
    new = lookup[np.asarray(faces, dtype=np.int64)]
    inside = (new >= 0).all(axis=1)
    new = new[inside]
    repeated = (new[:, 0] == new[:, 1]) | (new[:, 1] == new[:, 2]) | (new[:, 0] == new[:, 2])
    tri = vertices[new]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    good = ~repeated & (area > 1e-12 * area.mean())
    return new[good].astype(np.int32), int((~inside).sum()), int((~good).sum())


def fit_frame(neutral_cm: np.ndarray, anchors: np.ndarray, release_anchors: np.ndarray) -> Similarity:
    """Similarity cm -> nphm from the template's anchor vertices (39,) to the release's mean
    anchors (39, 3), mirror-symmetrised so that x = 0 stays the symmetry plane."""
    return umeyama(np.asarray(neutral_cm, np.float64)[anchors], symmetrise_anchors(release_anchors))


def convert_ict_facekit(
    kit_dir: PathLike,
    out_path: PathLike,
    release_anchors: PathLike | np.ndarray = RELEASE_ANCHORS_FILE,
    n_identity_modes: int | None = None,
    rigid_parts: Sequence[str] = RIGID_PARTS,
    seed: int = 0,
    verbose: bool = True,
) -> ConversionReport:
    """Write the compact ICT head-model asset (see the module docstring).

    Args:
        kit_dir: folder with the kit's arrays, ``vertex_indices.json`` and ``LICENSE``.
        out_path: the ``.npz`` to write.
        release_anchors: (39, 3) release mean anchors (nphm frame) or a ``.npy`` path.
        n_identity_modes: keep the first n identity modes (default: all 100).
        rigid_parts: regions whose bodies (connected components) store their identity modes as
            per-mode affine maps (() = every vertex dense).
        seed: seed of the random identities used to measure the sample error.
        verbose: print :meth:`ConversionReport.summary`.
    """
    out_path = Path(out_path)
    kit, landmarks_kit = load_kit(kit_dir)
    n_kit = kit["neutral"].shape[0]
    kit_index, lookup = kept_vertex_map(n_kit)
    neutral = kit["neutral"][kit_index].astype(np.float32)
    faces, n_outside, n_degenerate = remap_faces(kit["faces"], lookup, neutral.astype(np.float64))

    region_names = [name for name, _, _ in KIT_REGIONS]
    labels = region_labels(n_kit)[kit_index]

    modes = kit["identity_modes"][:n_identity_modes, kit_index].astype(np.float32)
    rigid = np.isin(labels, [region_names.index(p) for p in rigid_parts])
    identity = pack_identity(neutral, modes, rigid_groups(faces, len(neutral), rigid))
    restored = unpack_identity(neutral, identity)
    err = np.linalg.norm(restored - modes, axis=-1) * CM_TO_MM                       # (K, V)
    dense_mask = identity["identity_groups"] < 0
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((16, len(modes)))
    sample_err = float(np.linalg.norm(np.tensordot(w, restored - modes, axes=1), axis=-1).max() * CM_TO_MM)

    expressions = kit["expression_shapes"][:, kit_index].astype(np.float32)
    expressions16 = expressions.astype(np.float16)
    expr_err = float(np.linalg.norm(expressions16.astype(np.float32) - expressions, axis=-1).max() * CM_TO_MM)

    def remap(indices: Sequence[int]) -> np.ndarray:
        out = lookup[np.asarray(indices, dtype=np.int64)]
        if (out < 0).any():
            raise ValueError(f"vertices {np.asarray(indices)[out < 0]} are not in the kept regions")
        return out.astype(np.int32)

    release = np.load(release_anchors) if isinstance(release_anchors, (str, os.PathLike)) \
        else np.asarray(release_anchors)
    anchors = remap(ANCHOR_VERTICES)
    similarity = fit_frame(neutral, anchors, release)
    residuals = anchor_residuals_mm(similarity.apply(neutral[anchors]), release)

    arrays = {
        "format_version": np.int32(FORMAT_VERSION),
        "source": np.str_("ICT Face Model Light, ICT-VGL/ICT-FaceKit (USC ICT, MIT license), FaceXModel/"),
        "neutral_cm": neutral,
        "faces": faces,
        "kit_vertex_index": kit_index.astype(np.int32),
        "region_labels": labels,
        "region_names": np.asarray(region_names, dtype=str),
        "region_kit_ranges": np.asarray([(a, b) for _, a, b in KIT_REGIONS], dtype=np.int32),
        "region_kept": np.asarray([name in KEPT_REGIONS for name in region_names]),
        "skin_regions": np.asarray(SKIN_REGIONS, dtype=str),
        "narrow_face_kit_range": np.asarray(NARROW_FACE, dtype=np.int32),
        "face_region_name": np.str_(FACE_REGION_NAME),
        **identity,
        "expression_shapes_cm": expressions16,
        "expression_names": np.asarray([str(n) for n in kit["expression_names"]], dtype=str),
        "landmarks68": remap(landmarks_kit),
        "anchors39": anchors,
        "anchor_meanings": np.asarray(ANCHOR_MEANINGS, dtype=str),
        "throat_plane_vertices": remap(THROAT_PLANE_VERTICES),
        "to_nphm_scale": np.float64(similarity.scale),
        "to_nphm_rotation": similarity.rotation.astype(np.float64),
        "to_nphm_translation": similarity.translation.astype(np.float64),
        "identity_float16_error_mm": np.float64(err[:, dense_mask].max() if dense_mask.any() else 0.0),
        "identity_affine_error_mm": np.float64(err[:, ~dense_mask].max() if (~dense_mask).any() else 0.0),
        "expression_float16_error_mm": np.float64(expr_err),
    }
    with atomic_path(out_path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    os.chmod(out_path, 0o644)
    license_file = Path(kit_dir) / "LICENSE"
    if license_file.is_file():
        notice = out_path.with_name(LICENSE_NAME)
        if not notice.is_file() or notice.read_bytes() != license_file.read_bytes():
            shutil.copyfile(license_file, notice)
    report = ConversionReport(
        out_path=out_path, size_bytes=out_path.stat().st_size, n_vertices=len(neutral), n_faces=len(faces),
        n_outside_faces=n_outside, n_degenerate_faces=n_degenerate, identity_float16_error_mm=float(arrays["identity_float16_error_mm"]),
        identity_affine_error_mm=float(arrays["identity_affine_error_mm"]), identity_sample_error_mm=sample_err,
        expression_float16_error_mm=expr_err, similarity=similarity, anchor_residuals_mm=residuals,
    )
    if verbose:
        print(report.summary())
    return report
