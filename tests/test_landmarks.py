"""Landmark formats (68 / 51 / 39), landmark files and the reference file shipped with the models."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import trimesh

from nphm.fitting.landmarks import (
    FORMAT_COUNTS,
    INDICES_51_IN_68,
    MIRROR,
    REFERENCE_FILE,
    load_landmark_reference,
    load_landmark_spread,
    load_landmarks,
    mirrored,
    read_landmark_array,
    resolve_format,
    to_51,
)

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "pretrained" / "synthetic_cpu"


@pytest.mark.parametrize("n, fmt", [(68, "68"), (51, "51"), (39, "39")])
def test_format_from_the_row_count(n, fmt):
    assert resolve_format(n) == fmt and resolve_format(n, None) == fmt and resolve_format(n, fmt) == fmt


def test_unknown_counts_and_mismatches_name_the_file_and_the_accepted_counts():
    with pytest.raises(ValueError, match=r"me.txt: 40 landmarks fit no known format \(accepted: 68 .*51 .*39 "):
        resolve_format(40, "auto", "me.txt")
    with pytest.raises(ValueError, match="me.txt: 68 landmarks, but format 51 .* has 51"):
        resolve_format(68, "51", "me.txt")
    with pytest.raises(ValueError, match="unknown landmark format '5'"):
        resolve_format(5, "5")


def test_landmark_files_of_every_kind(tmp_path):
    points = np.random.default_rng(0).normal(size=(51, 3))
    np.save(tmp_path / "a.npy", points)
    np.save(tmp_path / "flat.npy", points.ravel())
    np.savetxt(tmp_path / "b.txt", points, header="x y z")
    np.savetxt(tmp_path / "c.csv", points, delimiter=",")
    (tmp_path / "d.json").write_text(json.dumps({"landmarks": points.tolist()}))
    (tmp_path / "e.json").write_text(json.dumps(points.tolist()))
    for name in ("a.npy", "flat.npy", "b.txt", "c.csv", "d.json", "e.json"):
        lm, fmt = load_landmarks(tmp_path / name)
        assert fmt == "51"
        np.testing.assert_allclose(lm, points, rtol=1e-15 if name.endswith("npy") else 1e-8)
    with pytest.raises(ValueError, match=r"b.txt: 51 landmarks, but format 68"):
        load_landmarks(tmp_path / "b.txt", "68")
    bad = points.copy()
    bad[[3, 7], 1] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(ValueError, match=r"nan.npy: landmarks \[3, 7\] have NaN"):
        read_landmark_array(tmp_path / "nan.npy")
    (tmp_path / "two.txt").write_text("1 2\n3 4\n")
    with pytest.raises(ValueError, match=r"two.txt: expected \(L, 3\) landmarks"):
        read_landmark_array(tmp_path / "two.txt")
    with pytest.raises(FileNotFoundError, match="landmark file not found"):
        read_landmark_array(tmp_path / "missing.txt")


def test_51_is_68_without_the_jaw_line_and_mirrors_are_involutions():
    lm = np.arange(68 * 3, dtype=float).reshape(68, 3)
    np.testing.assert_array_equal(to_51(lm), lm[17:])
    assert INDICES_51_IN_68[0] == 17 and len(INDICES_51_IN_68) == 51
    for fmt, perm in MIRROR.items():
        assert sorted(perm) == list(range(FORMAT_COUNTS[fmt]))
        np.testing.assert_array_equal(perm[perm], np.arange(len(perm)))
    assert MIRROR["68"][36] == 45 and MIRROR["68"][8] == 8 and MIRROR["39"][12] == 13 and MIRROR["39"][33] == 33


# -------------------------------------------------------------------------- the shipped reference
@pytest.mark.parametrize("fmt", ["68", "51", "39"])
def test_shipped_reference_is_a_symmetric_head_in_the_nphm_frame(fmt):
    ref = load_landmark_reference(MODELS, fmt)
    assert ref.shape == (FORMAT_COUNTS[fmt], 3) and np.isfinite(ref).all()
    # the synthetic heads are left/right symmetric: the mirrored order is the reflection x -> -x
    np.testing.assert_allclose(mirrored(ref, fmt) * [-1, 1, 1], ref, atol=2e-3)
    assert 0.3 < np.ptp(ref[:, 0]) < 0.8  # a face is 0.3-0.8 nphm units wide (75-200 mm)
    spread = load_landmark_spread(MODELS, fmt)
    assert spread.shape == (len(ref),) and (spread < 0.04).all()  # under 10 mm
    if fmt == "51":
        np.testing.assert_array_equal(ref, load_landmark_reference(MODELS, "68")[17:])


def test_shipped_reference_has_the_model_anchors_at_zero():
    from nphm.checkpoints import available_epochs, load_identity
    from nphm.pretrained import identity_anchors_at_zero

    model, _ = load_identity(MODELS / "nphm_cpu", available_epochs(MODELS / "nphm_cpu")[-1])
    stored = load_landmark_reference(MODELS, "39", model="nphm_cpu")
    np.testing.assert_allclose(stored, identity_anchors_at_zero(model), atol=1e-6)
    data = json.loads((MODELS / REFERENCE_FILE).read_text())
    assert data["frame"] == "nphm" and data["source"]["synthetic"]["seed"] == 1
    assert data["source"]["subjects"] == list(range(21))
    with pytest.raises(ValueError, match="no anchors of model 'npm_cpu'.*nphm_cpu"):
        load_landmark_reference(MODELS, "39", model="npm_cpu")


def test_missing_reference_says_how_to_make_one(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"landmark reference not found: .*landmarks_reference.json.*"
                                                 r"write_landmark_reference"):
        load_landmark_reference(tmp_path, "68")
    (tmp_path / REFERENCE_FILE).write_text(json.dumps({"format_version": 1, "landmarks_68": [[0, 0, 0]]}))
    with pytest.raises(ValueError, match=r"'landmarks_68' must be finite \(68, 3\) points"):
        load_landmark_reference(tmp_path, "51")
    with pytest.raises(ValueError, match="has no 'anchors_39'"):
        load_landmark_reference(tmp_path, "39")


# ----------------------------------------------------------------------------- writing the reference
class _Registrations:
    """A stand-in for a DataManager: subject s's neutral registration is a sphere shifted by s/100."""

    def __init__(self, n_subjects: int = 3):
        self.sphere = trimesh.creation.icosphere(subdivisions=2)
        n = len(self.sphere.vertices)
        self.description = SimpleNamespace(
            name="spheres", extra={"synthetic": {"seed": 7, "n_subjects": n_subjects, "unused": 1}},
            landmark_vertex_indices_registration_68=list(range(68)),
            anchor_vertex_indices_registration=list(range(n - 39, n)))
        self.n_subjects = n_subjects

    def subjects(self, split="train"):
        return list(range(self.n_subjects))

    def neutral_expression(self, subject, kind="open"):
        return 1

    def load_registration(self, subject, expression):
        return trimesh.Trimesh(np.asarray(self.sphere.vertices) + subject / 100.0, self.sphere.faces, process=False)


def test_write_landmark_reference_averages_the_training_registrations(tmp_path):
    from nphm.checkpoints import save_checkpoint, save_config
    from nphm.models import NPHMIdentity
    from nphm.pretrained import identity_anchors_at_zero, write_landmark_reference

    torch.manual_seed(0)
    model = NPHMIdentity(lat_dim_glob=8, lat_dim_loc=4, hidden_dim=24, pos_mlp_dim=16,
                         anchors_mean=torch.randn(39, 3) * 0.3)
    cfg = {"decoder": {"decoder_lat_dim_glob": 8, "decoder_lat_dim_loc": 4, "decoder_nloc": 39,
                       "decoder_nsymm_pairs": 16, "decoder_hidden_dim": 24, "decoder_nlayers": 4}}
    save_config(tmp_path / "ident", cfg)
    save_checkpoint(tmp_path / "ident", 5, model, torch.nn.Embedding(2, model.lat_dim))
    manager = _Registrations()
    path = write_landmark_reference(tmp_path, manager)
    assert path == tmp_path / REFERENCE_FILE
    v = np.asarray(manager.sphere.vertices)
    np.testing.assert_allclose(load_landmark_reference(tmp_path, "68"), v[:68] + 0.01, atol=1e-7)
    np.testing.assert_allclose(load_landmark_reference(tmp_path, "39"), v[-39:] + 0.01, atol=1e-7)
    np.testing.assert_allclose(load_landmark_spread(tmp_path, "39"), np.full(39, np.sqrt(3 * 2 / 3) / 100), atol=1e-7)
    np.testing.assert_allclose(load_landmark_reference(tmp_path, "39", model="ident"),
                               identity_anchors_at_zero(model.eval()), atol=1e-6)
    source = json.loads(path.read_text())["source"]
    assert source["subjects"] == [0, 1, 2] and source["synthetic"] == {"seed": 7, "n_subjects": 3}


@pytest.mark.slow
def test_shipped_reference_is_what_the_regenerated_training_set_gives(tmp_path):
    """Regenerates the training set of pretrained/synthetic_cpu (about 80 s on 2 cores)."""
    from nphm.data import DataManager
    from nphm.data.synthetic import generate_dataset
    from nphm.pretrained import fingerprint_mismatches, mean_registration_landmarks

    generate_dataset(tmp_path / "data", n_subjects=30, n_expressions=8, seed=1, workers=2, progress=False,
                     source="procedural")
    manager = DataManager(tmp_path / "data")
    shipped = json.loads((MODELS / "training_dataset.json").read_text())
    assert fingerprint_mismatches(manager, shipped["held_out_fingerprints"], manager.subjects("test")) == []
    means = mean_registration_landmarks(manager)
    np.testing.assert_allclose(load_landmark_reference(MODELS, "68"), means["landmarks_68"], atol=1e-6)
    np.testing.assert_allclose(load_landmark_reference(MODELS, "39"), means["anchors_39"], atol=1e-6)
    # the export command writes the same file (re-exporting the shipped identity model)
    from nphm.cli.export_compact import main

    out = tmp_path / "exported"
    assert main(["--experiment_dir", str(MODELS), "--names", "nphm_cpu", "npm_cpu", "--dataset",
                 str(tmp_path / "data"), "--out", str(out)]) == 0
    assert json.loads((out / REFERENCE_FILE).read_text()) == json.loads((MODELS / REFERENCE_FILE).read_text())


def test_rigid_landmarks_ignore_a_moving_mouth():
    """An Umeyama start on the expression-stable landmarks recovers the pose of a face whose mouth
    and jaw moved; over all 68 it does not."""
    from scipy.spatial.transform import Rotation

    from nphm.data.frames import Similarity, umeyama
    from nphm.fitting.landmarks import INDICES_51_IN_68, RIGID, rigid_landmarks

    assert set(RIGID["68"]) >= {27, 30, 33, 36, 39, 42, 45}
    assert not set(RIGID["68"]) & set(range(48, 68))  # no mouth point
    # the 51 format's rows are the same landmarks
    np.testing.assert_array_equal(INDICES_51_IN_68[RIGID["51"]], RIGID["68"][RIGID["68"] >= 17])
    np.testing.assert_array_equal(rigid_landmarks("39", 39), np.arange(39))
    np.testing.assert_array_equal(rigid_landmarks(None, 12), np.arange(12))

    rng = np.random.default_rng(0)
    ref = rng.normal(size=(68, 3)) * 0.05
    true = Similarity(0.004, Rotation.from_rotvec([0.2, -0.5, 0.1]).as_matrix(), np.array([0.1, -0.2, 0.3]))
    scan = true.invert(ref)
    moved = scan.copy()
    moved[list(range(3, 14)) + list(range(48, 68))] += rng.normal(size=(31, 3)) * 8.0  # mm: jaw and mouth
    for fmt, rows in (("68", np.arange(68)), ("51", INDICES_51_IN_68)):
        keep = rigid_landmarks(fmt, len(rows))
        T = umeyama(moved[rows][keep], ref[rows][keep], with_scale=True)
        np.testing.assert_allclose(T.rotation, true.rotation, atol=1e-9)
        assert abs(T.scale / true.scale - 1) < 1e-9
    T_all = umeyama(moved, ref, with_scale=True)
    assert np.abs(T_all.rotation - true.rotation).max() > 1e-3
