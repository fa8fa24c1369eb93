"""The shipped ICT head model (nphm.data.heads): asset contents, the real nphm frame, the 39
anchors, the neck plane, and the converter / storage round trips on small synthetic inputs.

Nothing here reads the kit itself (it is not shipped); the asset is checked for internal
consistency and against the release's mean anchors that ship beside it.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from nphm.data.frames import Similarity, umeyama
from nphm.data.heads import (ANCHOR_MEANINGS, ANCHOR_VERTICES, ASSET_PATH, THROAT_PLANE_VERTICES,
                             load_ict_model, load_release_anchors, read_ict_model)
from nphm.data.heads.anchor_search import mirror_anchors, symmetrise_anchors
from nphm.data.heads.anchors import LANDMARK_OF_ANCHOR
from nphm.data.heads.regions import KIT_REGIONS, NARROW_FACE, kit_vertex_count
from nphm.data.heads.storage import pack_identity, rigid_groups, unpack_identity

MM = 250.0  # mm per nphm unit
N_VERTICES = 24591  # kit vertices 0-24590: everything but the rendering helpers


@pytest.fixture(scope="module")
def model():
    return load_ict_model()


@pytest.fixture(scope="module")
def release():
    return load_release_anchors()


# --- the asset -----------------------------------------------------------------------------

def test_documented_shapes(model):
    v = model.n_vertices
    assert v == N_VERTICES
    assert model.neutral.shape == (v, 3) and model.neutral.dtype == np.float64
    assert model.identity_modes.shape == (100, v, 3)
    assert model.expression_shapes.shape == (57, v, 3)
    assert len(model.expression_names) == 57 and "jawOpen" in model.expression_names
    assert model.faces.ndim == 2 and model.faces.shape[1] == 3
    assert model.landmarks68.shape == (68,) and model.anchors39.shape == (39,)
    assert model.throat_plane_vertices.shape == (3,)
    assert len(model.anchor_meanings) == 39 and model.anchor_meanings == ANCHOR_MEANINGS
    assert model.region_labels.shape == (v,)
    assert not model.neutral.flags.writeable  # shared cached instance


def test_faces_index_valid_vertices(model):
    assert model.faces.min() >= 0 and model.faces.max() < model.n_vertices
    used = np.zeros(model.n_vertices, dtype=bool)
    used[model.faces] = True
    assert used.all()  # no orphan vertex


def test_skin_has_no_degenerate_faces(model):
    f = model.region_faces("skin")
    assert len(f) > 20000
    assert not ((f[:, 0] == f[:, 1]) | (f[:, 1] == f[:, 2]) | (f[:, 0] == f[:, 2])).any()
    tri = model.neutral[f]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    assert area.min() > 1e-4 * area.mean()


def test_regions_follow_the_kit_table(model):
    kept = {name for name, first, _ in KIT_REGIONS if first < N_VERTICES}
    assert kept <= set(model.regions)
    parts = np.concatenate([model.regions[name] for name in kept])
    assert np.array_equal(np.sort(parts), np.arange(model.n_vertices))  # a partition
    for name, first, last in KIT_REGIONS:
        if name in kept:
            assert np.array_equal(model.kit_vertex_index[model.regions[name]], np.arange(first, last + 1))
    skin = np.union1d(model.regions["face"], model.regions["head_and_neck"])
    assert np.array_equal(model.regions["skin"], skin)
    assert np.array_equal(model.face_region, np.arange(NARROW_FACE[0], NARROW_FACE[1] + 1))


def test_landmarks_lie_in_the_face_region(model):
    assert np.isin(model.landmarks68, model.face_region).all()
    lm = model.neutral[model.landmarks68]
    assert lm[30, 2] == pytest.approx(model.neutral[model.regions["face"], 2].max(), abs=0.01)  # nose tip in front
    assert lm[36, 0] < lm[39, 0] < 0 < lm[42, 0] < lm[45, 0]  # right eye at x < 0


def test_storage_errors_recorded_in_the_asset_are_small():
    with np.load(ASSET_PATH) as z:
        assert float(z["identity_float16_error_mm"]) < 0.01
        assert float(z["identity_affine_error_mm"]) < 0.2
        assert float(z["expression_float16_error_mm"]) < 0.05


def test_identity_samples_are_plausible_heads(model):
    rng = np.random.default_rng(0)
    heads = model.vertices(rng.standard_normal((32, model.n_identity)))
    assert heads.shape == (32, model.n_vertices, 3)
    skin = heads[:, model.regions["skin"]]
    widths = []
    for v in skin:
        band = v[(v[:, 1] > 0.2) & (v[:, 1] < 0.35)]  # skull breadth above the ears
        widths.append(np.ptp(band[:, 0]))
    widths = np.array(widths)
    assert 0.50 < widths.min() and widths.max() < 0.80  # 125..200 mm
    assert 0.58 < widths.mean() < 0.70                  # 145..175 mm
    assert np.abs(skin.mean(axis=0) - model.neutral[model.regions["skin"]]).max() < 0.02


def test_vertices_api(model):
    assert np.array_equal(model.vertices(), model.neutral)
    w = np.zeros(model.n_expressions)
    w[model.expression_names.index("jawOpen")] = 0.7
    by_name = model.vertices(None, {"jawOpen": 0.7})
    assert np.allclose(by_name, model.vertices(None, w))
    assert np.abs(by_name - model.neutral).max() > 0.05  # the jaw moves by centimetres
    few = model.vertices(np.ones(3))
    assert np.allclose(few, model.neutral + model.identity_modes[:3].sum(axis=0), atol=1e-6)
    with pytest.raises(KeyError):
        model.vertices(None, {"noSuchShape": 1.0})
    with pytest.raises(ValueError):
        model.vertices(np.zeros(model.n_identity + 1))


# --- the real nphm frame -------------------------------------------------------------------

def test_similarity_is_a_metric_pitch(model):
    s = model.to_nphm
    assert np.linalg.det(s.rotation) == pytest.approx(1.0)
    assert np.allclose(s.rotation @ s.rotation.T, np.eye(3), atol=1e-9)
    assert s.scale == pytest.approx(0.04, rel=0.05)  # cm -> nphm = metric FLAME x 4
    assert abs(s.rotation[0, 1]) < 1e-3 and abs(s.rotation[0, 2]) < 1e-3  # no yaw / roll
    assert abs(s.translation[0]) < 1e-3


def test_anchors_map_onto_the_release_means(model, release):
    assert release.shape == (39, 3)
    r = MM * np.linalg.norm(model.anchors() - release, axis=1)
    assert r.mean() < 10.0, r.round(1)
    assert r.max() < 25.0, r.round(1)


def test_anchor_vertices_are_the_documented_ones(model):
    assert np.array_equal(model.kit_vertex_index[model.anchors39], ANCHOR_VERTICES)
    assert np.array_equal(model.kit_vertex_index[model.throat_plane_vertices], THROAT_PLANE_VERTICES)
    assert np.isin(model.anchors39, model.regions["skin"]).all()
    for anchor, landmark in LANDMARK_OF_ANCHOR.items():
        assert model.anchors39[anchor] == model.landmarks68[landmark]


def test_mirror_pairs_are_mirror_images(model):
    a = model.anchors()
    first, second = a[0:32:2], a[1:32:2]
    assert MM * np.abs(first[:, 0] + second[:, 0]).max() < 2.0
    assert MM * np.abs(first[:, 1:] - second[:, 1:]).max() < 2.0
    assert MM * np.abs(a[32:, 0]).max() < 1.0
    # the release convention: first of a pair at x < 0, except pairs 26/27 and 28/29
    flipped = {13, 14}
    for k in range(16):
        assert (first[k, 0] > 0) == (k in flipped)


def test_throat_plane_keeps_the_head_and_cuts_below_the_chin(model, release):
    origin, normal = model.throat_plane()
    assert normal[1] > 0.9  # mostly horizontal, kept side up
    assert MM * ((model.anchors() - origin) @ normal).min() > 10.0
    assert MM * ((release - origin) @ normal).min() > 10.0
    skin = model.neutral[model.regions["skin"]]
    kept = skin[(skin - origin) @ normal > 0]
    assert -0.62 < kept[:, 1].min() < -0.55  # release heads reach y ~ -0.58
    assert kept[:, 2].min() > -0.60           # ... and z ~ -0.58 at the back
    chin = model.neutral[model.landmarks68[8]]
    assert ((chin - origin) @ normal) > 0.1


# --- building blocks -----------------------------------------------------------------------

def test_umeyama_recovers_a_known_transform_and_maps_offsets():
    """The frame fit of the converter: weights, and offsets (modes) scaled and rotated only."""
    rng = np.random.default_rng(1)
    src = rng.normal(size=(40, 3))
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    true = Similarity(scale=0.04, rotation=q, translation=np.array([0.1, -0.2, 0.3]))
    fit = umeyama(src, true.apply(src))
    assert fit.scale == pytest.approx(0.04)
    assert np.allclose(fit.rotation, q) and np.allclose(fit.translation, true.translation)
    assert np.allclose(fit.apply_offsets(src), 0.04 * src @ q.T)
    assert np.allclose(fit.apply(src), fit.apply_offsets(src) + fit.translation)
    dst = true.apply(src)
    dst[:5] += 1.0  # outliers with weight 0 do not move the fit
    weighted = umeyama(src, dst, weights=np.r_[np.zeros(5), np.ones(35)])
    assert weighted.scale == pytest.approx(0.04) and np.allclose(weighted.rotation, q)


def test_symmetrised_anchors_are_symmetric(release):
    sym = symmetrise_anchors(release)
    assert np.allclose(mirror_anchors(sym), sym)
    assert MM * np.abs(sym - release).max() < 25.0


def test_identity_storage_round_trip():
    rng = np.random.default_rng(2)
    n, k = 60, 4
    neutral = rng.normal(size=(n, 3))
    faces = np.array([[i, i + 1, i + 2] for i in range(0, 18)] + [[i, i + 1, i + 2] for i in range(30, 58)])
    rigid = np.zeros(n, dtype=bool)
    rigid[30:] = True                      # one rigid body: vertices 30..59
    groups = rigid_groups(faces, n, rigid)
    assert (groups[:30] == -1).all() and (groups[30:] == 0).all()
    maps = rng.normal(size=(k, 3, 4)) * 0.01
    modes = rng.normal(size=(k, n, 3)) * 0.1
    modes[:, 30:] = np.einsum("nj,kij->kni", np.c_[neutral[30:], np.ones(30)], maps)
    stored = pack_identity(neutral, modes, groups)
    assert stored["identity_modes_dense_cm"].dtype == np.float16
    back = unpack_identity(neutral, stored)
    assert np.abs(back[:, 30:] - modes[:, 30:]).max() < 1e-6    # affine part exact
    assert np.abs(back[:, :30] - modes[:, :30]).max() < 1e-3    # float16 part


def _fake_kit(path, n_id=2, n_expr=3):
    """A kit folder with the real vertex layout but tiny random contents."""
    rng = np.random.default_rng(3)
    v = kit_vertex_count()
    neutral = rng.normal(size=(v, 3)).astype(np.float32) * 5
    # template anchors at the symmetrised release means, in cm: the fitted frame is x 0.04
    neutral[list(ANCHOR_VERTICES)] = (symmetrise_anchors(load_release_anchors()) / 0.04).astype(np.float32)
    chains = [np.arange(first, last - 1) for _, first, last in KIT_REGIONS]
    faces = np.concatenate([np.stack([c, c + 1, c + 2], axis=1) for c in chains]).astype(np.int32)
    np.savez_compressed(
        path / "ict_face_model_light.npz", neutral=neutral, faces=faces,
        identity_modes=(rng.normal(size=(n_id, v, 3)) * 0.1).astype(np.float32),
        expression_shapes=(rng.normal(size=(n_expr, v, 3)) * 0.1).astype(np.float32),
        expression_names=np.array([f"shape{i}" for i in range(n_expr)]))
    (path / "vertex_indices.json").write_text(json.dumps({"idx_to_landmark_verts": list(range(0, 680, 10))}))
    (path / "LICENSE").write_text("MIT License (test)\n")


def test_converter_round_trip(tmp_path):
    from nphm.data.heads.convert_ict import convert_ict_facekit

    kit = tmp_path / "kit"
    kit.mkdir()
    _fake_kit(kit)
    out = tmp_path / "asset" / "ict.npz"
    report = convert_ict_facekit(kit, out, rigid_parts=(), verbose=False)
    assert out.is_file() and (out.parent / "LICENSE_ICT_FaceKit.txt").read_text() == "MIT License (test)\n"
    m = read_ict_model(out)
    with np.load(kit / "ict_face_model_light.npz") as z:
        neutral_cm, modes_cm, expr_cm = z["neutral"], z["identity_modes"], z["expression_shapes"]
    assert m.n_vertices == N_VERTICES and m.n_identity == 2 and m.n_expressions == 3
    assert np.allclose(m.neutral, m.to_nphm.apply(neutral_cm[:N_VERTICES]), atol=1e-6)
    assert np.allclose(m.identity_modes, m.to_nphm.apply_offsets(modes_cm[:, :N_VERTICES]), atol=1e-5)
    assert np.allclose(m.expression_shapes, m.to_nphm.apply_offsets(expr_cm[:, :N_VERTICES]), atol=1e-5)
    assert m.faces.max() < N_VERTICES and report.n_outside_faces > 0
    assert np.array_equal(m.landmarks68, np.arange(0, 680, 10))
    assert m.to_nphm.scale == pytest.approx(0.04, rel=1e-5)
    assert np.allclose(m.to_nphm.rotation, np.eye(3), atol=1e-5)
    asymmetry = MM * np.linalg.norm(symmetrise_anchors(load_release_anchors()) - load_release_anchors(), axis=1)
    assert np.allclose(report.anchor_residuals_mm, asymmetry, atol=0.01)


def test_anchor_proposal_reproduces_the_chosen_vertices(model, release):
    from nphm.data.heads.anchor_search import fixed_by_landmarks, propose_anchor_vertices

    with np.load(ASSET_PATH) as z:
        neutral_cm = z["neutral_cm"]
    chosen, similarity = propose_anchor_vertices(neutral_cm, release, model.regions["skin"],
                                                 fixed_by_landmarks(model.landmarks68))
    assert np.array_equal(chosen, model.anchors39)
    assert np.allclose(similarity.apply(neutral_cm), model.neutral, atol=1e-6)
