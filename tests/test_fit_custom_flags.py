"""fit_custom's options for real scans: --alignment none, landmark formats, sanity checks,
depth maps, a known identity (the toy models stand in for the trained ones)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from nphm.fitting import io as fio
from nphm.fitting.custom import align_scans
from nphm.fitting.landmarks import write_reference_file
from support.recovery import surface_distance
from support.toy_models import AnalyticExpression, AnalyticHeadIdentity
from test_fit_custom import TRUE, errors, head

pytestmark = pytest.mark.usefixtures("single_thread")

ROOT = Path(__file__).resolve().parents[1]
CFG = ROOT / "configs" / "fitting_nphm_cpu.yaml"
Z = (0.06, -0.04, 0.05, 0.03)


@pytest.fixture
def toy_models(monkeypatch):
    """fit_custom loads the analytic toy models instead of trained ones."""
    def load(cfg, device="cpu", experiment_dir=None, anchors_path=None):
        deformation = AnalyticExpression() if cfg.exp_name_expr else None
        return fio.FittingModels(identity=AnalyticHeadIdentity(), deformation=deformation,
                                 latents_train=torch.zeros(1, 4), epochs={})

    monkeypatch.setattr(fio, "load_models", load)


def run_cli(*args):
    from nphm.cli import fit_custom

    return fit_custom.main([str(a) for a in args] + ["--cfg_file", str(CFG), "--device", "cpu"])


def transform_of(path: Path) -> dict:
    return json.loads(path.read_text())


def test_alignment_none_keeps_the_nphm_frame(tmp_path, toy_models):
    scan = head(z=Z, frontal=True, seed=10)
    np.savetxt(tmp_path / "scan.xyz", scan)
    out = tmp_path / "out"
    assert run_cli("--points", tmp_path / "scan.xyz", "--alignment", "none", "--steps", 500, "--resolution", 64,
                   "--out", out, "--experiment_dir", tmp_path) == 0
    info = transform_of(out / "scan_transform.json")
    np.testing.assert_allclose(info["matrix_input_to_nphm"], np.eye(4))
    assert info["alignment"].startswith("none")
    assert not json.loads((out / "fitting.json").read_text())["pose_refined"]
    mesh = trimesh.load(str(out / "scan_nphm.ply"), process=False)
    d = surface_distance(scan, mesh) / 0.004  # mm
    assert np.mean(d) < 0.5 and np.quantile(d, 0.95) < 1.5, np.mean(d)


def test_51_landmarks_use_the_models_folder_reference(tmp_path):
    rng = np.random.default_rng(3)
    surface = head(n=4000, seed=1)
    ref68 = surface[rng.choice(len(surface), 68, replace=False)]
    write_reference_file(tmp_path / "landmarks_reference.json", ref68, surface[:39])
    np.save(tmp_path / "scan.npy", TRUE.invert(head(frontal=True, seed=2)))
    np.savetxt(tmp_path / "lm51.txt", TRUE.invert(ref68[17:]) + rng.normal(scale=0.3, size=(51, 3)))
    (aligned,) = align_scans(AnalyticHeadIdentity(), [tmp_path / "scan.npy"], [tmp_path / "lm51.txt"], units="mm",
                             models_dir=tmp_path, checks=True)
    rot, scale, trans = errors(aligned.transform)
    assert rot < 1.0 and scale < 0.01 and trans < 1.0
    assert "format 51" in aligned.method and not aligned.check_messages
    with pytest.raises(ValueError, match="format 68"):  # 51 rows declared as 68
        align_scans(AnalyticHeadIdentity(), [tmp_path / "scan.npy"], [tmp_path / "lm51.txt"],
                    models_dir=tmp_path, landmark_format="68")


def test_wrong_unit_is_refused_unless_forced(tmp_path, toy_models, capsys):
    rng = np.random.default_rng(1)
    scan = head(frontal=True, seed=2)
    np.savetxt(tmp_path / "scan.xyz", TRUE.invert(scan))  # millimetres
    ref = scan[rng.choice(len(scan), 12, replace=False)]
    np.save(tmp_path / "ref.npy", ref)
    np.save(tmp_path / "lm.npy", TRUE.invert(ref))  # millimetres too
    common = ["--points", tmp_path / "scan.xyz", "--units", "m", "--experiment_dir", tmp_path,
              "--steps", 20, "--resolution", 32]
    # without landmarks: the head-size check
    assert run_cli(*common, "--out", tmp_path / "refused") == 2
    err = capsys.readouterr().err
    assert "is it in millimetres, not metres as declared? pass --units mm" in err, err
    # with landmarks: their scale against the declared unit
    with_lm = common + ["--landmarks", tmp_path / "lm.npy", "--reference_landmarks", tmp_path / "ref.npy"]
    assert run_cli(*with_lm, "--out", tmp_path / "refused") == 2
    err = capsys.readouterr().err
    assert "the landmarks give a scale of 0.004" in err and "pass --units mm" in err, err
    assert not (tmp_path / "refused").exists()
    with pytest.warns(UserWarning, match="forced past"):
        assert run_cli(*with_lm, "--force", "--out", tmp_path / "forced") == 0
    fitting = json.loads((tmp_path / "forced" / "fitting.json").read_text())
    assert "pass --units mm" in fitting["check_messages"]["scan"][0]


def test_landmarks_that_do_not_fit_are_refused_unless_forced(tmp_path, toy_models, capsys):
    """A 39-row file in another order than the reference: 80 mm-like residuals after Umeyama."""
    rng = np.random.default_rng(4)
    scan = head(frontal=True, seed=2)
    np.savetxt(tmp_path / "scan.xyz", TRUE.invert(scan))
    ref = scan[rng.choice(len(scan), 39, replace=False)]
    np.save(tmp_path / "ref.npy", ref)
    np.save(tmp_path / "lm.npy", TRUE.invert(ref[rng.permutation(39)]))
    common = ["--points", tmp_path / "scan.xyz", "--units", "mm", "--landmarks", tmp_path / "lm.npy",
              "--reference_landmarks", tmp_path / "ref.npy", "--experiment_dir", tmp_path, "--steps", 20,
              "--resolution", 32]
    assert run_cli(*common, "--out", tmp_path / "refused") == 2
    err = capsys.readouterr().err
    assert "the 39 landmarks are" in err and "mm (RMS)" in err and "order" in err, err
    assert not (tmp_path / "refused").exists()
    with pytest.warns(UserWarning, match="forced past"):
        assert run_cli(*common, "--force", "--out", tmp_path / "forced") == 0
    report = json.loads((tmp_path / "forced" / "fitting.json").read_text())["per_scan"]["scan"]
    assert report["landmark_residuals_mm"]["mean"] > 15.0


def test_depth_map_of_a_known_mesh_fits_end_to_end(tmp_path, toy_models):
    from nphm.fitting.depth import Intrinsics
    from nphm.reconstruction import mesh_identity
    from nphm.rendering import Camera, MeshRayCaster, look_at

    mesh = mesh_identity(AnalyticHeadIdentity(), torch.tensor(Z, dtype=torch.float32), resolution=48,
                         bounds=((-0.55, -0.5, -0.95), (0.55, 0.75, 0.4)))
    world = np.asarray(mesh.vertices) / 4.0  # nphm -> metres
    camera = Camera(64, 64, fx=220.0, fy=220.0, cx=32.0, cy=32.0,
                    cam_to_world=look_at((0.05, 0.03, 0.6), (0.0, 0.0, 0.0)))
    hits = MeshRayCaster(world, np.asarray(mesh.faces)).cast(camera)
    depth = np.zeros((64, 64))
    depth[hits.pixels[:, 0], hits.pixels[:, 1]] = hits.depth
    np.save(tmp_path / "frame.npy", depth)
    front = np.asarray(mesh.vertices)[np.asarray(mesh.vertices)[:, 2] > 0.1]
    ref = front[np.random.default_rng(0).choice(len(front), 15, replace=False)]
    np.save(tmp_path / "ref.npy", ref)
    np.save(tmp_path / "lm.npy", (ref / 4.0 - camera.center) @ camera.rotation)  # camera frame, metres
    out = tmp_path / "out"
    K = Intrinsics.from_camera(camera)
    assert run_cli("--depth", tmp_path / "frame.npy", "--intrinsics", K.fx, K.fy, K.cx, K.cy,
                   "--landmarks", tmp_path / "lm.npy", "--reference_landmarks", tmp_path / "ref.npy",
                   "--steps", 300, "--resolution", 48, "--out", out, "--experiment_dir", tmp_path) == 0
    info = transform_of(out / "frame_transform.json")
    assert abs(info["scale"] / 4.0 - 1.0) < 0.02 and "pose refined" in info["alignment"]
    fitted = trimesh.load(str(out / "frame_input_frame.ply"), process=False)
    points_cam = np.load(tmp_path / "frame.npy")
    assert (out / "frame_aligned_points.ply").is_file() and points_cam.shape == (64, 64)
    from nphm.fitting.depth import back_project

    points = back_project(depth, K)[0]
    d_mm = surface_distance(points, fitted) * 1000.0
    assert np.median(d_mm) < 2.0, np.median(d_mm)
    # the same points as a point cloud file: the same fit (the depth map is only another reader)
    np.save(tmp_path / "frame_points.npy", points)
    assert run_cli("--points", tmp_path / "frame_points.npy", "--landmarks", tmp_path / "lm.npy",
                   "--reference_landmarks", tmp_path / "ref.npy", "--units", "m", "--steps", 300,
                   "--resolution", 48, "--out", tmp_path / "cloud", "--experiment_dir", tmp_path) == 0
    cloud_fit = trimesh.load(str(tmp_path / "cloud" / "frame_points_input_frame.ply"), process=False)
    gap_mm = surface_distance(np.asarray(cloud_fit.vertices), fitted) * 1000.0
    assert np.quantile(gap_mm, 0.95) < 0.05, np.quantile(gap_mm, 0.95)


def test_known_identity_fits_only_expressions(tmp_path, toy_models):
    z = np.asarray(Z, dtype=np.float32).reshape(1, 1, -1)
    np.save(tmp_path / "lat_shape.npy", z)
    files = []
    for i, expr in enumerate([(0.0, 0.0), (0.15, 0.1)]):
        files.append(tmp_path / f"expr{i}.xyz")
        np.savetxt(files[-1], head(z=Z, frontal=True, seed=10 + i, expr=expr))
    for extra in ([], ["--sequence", "--smoothness", "0.1"]):
        out = tmp_path / f"out{len(extra)}"
        assert run_cli("--points", *files, "--alignment", "none", "--identity", tmp_path / "lat_shape.npy",
                       "--steps", 150, "--resolution", 32, "--out", out, "--experiment_dir", tmp_path, *extra) == 0
        np.testing.assert_array_equal(np.load(out / "lat_shape.npy"), z)
        assert np.load(out / "lat_expr.npy").shape == (2, 1, 2)
        assert json.loads((out / "fitting.json").read_text())["fit"] == ("sequence" if extra else
                                                                         "expressions (known identity)")


def test_depth_and_points_are_exclusive(tmp_path, capsys):
    from nphm.cli import fit_custom

    with pytest.raises(SystemExit):
        fit_custom.parse_args(["--points", "a.ply", "--depth", "a.png"])
    assert fit_custom.main(["--depth", "a.png"]) == 2
    assert "--intrinsics" in capsys.readouterr().err


def test_robust_fit_crops_at_the_neck(tmp_path, toy_models):
    from nphm.fitting.crop import crop_head, neck_plane_for

    scan = head(z=Z, seed=10)
    np.savetxt(tmp_path / "scan.xyz", scan)
    out = tmp_path / "out"
    assert run_cli("--points", tmp_path / "scan.xyz", "--alignment", "none", "--robust", "--steps", 100,
                   "--resolution", 32, "--out", out, "--experiment_dir", tmp_path) == 0
    fitting = json.loads((out / "fitting.json").read_text())
    assert fitting["surface_loss"] == "geman_mcclure" and fitting["neck_crop"]
    kept = np.asarray(trimesh.load(str(out / "scan_aligned_points.ply"), process=False).vertices)
    expected = crop_head(scan, neck_plane=neck_plane_for(AnalyticHeadIdentity())).sum()
    assert len(kept) == expected < len(scan)


def test_unit_guess_and_rescaling_about_the_centroid():
    from nphm.data.frames import Similarity
    from nphm.fitting.alignment import at_unit_scale, unit_of_scale

    assert unit_of_scale(0.004 * 0.85) == "mm" and unit_of_scale(0.04 * 1.2) == "cm"
    assert unit_of_scale(4.0 / 1.1) == "m"
    assert unit_of_scale(0.004 * 1.4) is None and unit_of_scale(0.004 / 1.3) is None  # no unit within 25 %
    pts = np.random.default_rng(0).normal(size=(50, 3)) * 80.0 + 300.0
    T = Similarity(0.0042, TRUE.rotation, np.array([0.3, -0.1, 0.2]))
    U = at_unit_scale(T, 0.004, pts)
    assert U.scale == 0.004 and np.array_equal(U.rotation, T.rotation)
    np.testing.assert_allclose(U.apply(pts.mean(0, keepdims=True)), T.apply(pts.mean(0, keepdims=True)), atol=1e-12)
    # every other point moves towards that centroid image by the scale ratio
    np.testing.assert_allclose(U.apply(pts) - U.apply(pts.mean(0, keepdims=True)),
                               (T.apply(pts) - T.apply(pts.mean(0, keepdims=True))) * (0.004 / 0.0042), atol=1e-12)


@pytest.mark.parametrize("with_landmarks", [True, False])
def test_declared_unit_keeps_the_head_size(tmp_path, with_landmarks):
    """A head 10 % larger than the model's mean in mm: with --units mm the alignment keeps the
    unit's scale exactly; size="estimate" brings the head towards the mean head's size."""
    from nphm.data.frames import Similarity

    big = Similarity(1.1, np.eye(3), np.zeros(3))  # the larger head, nphm frame
    surface = head(n=4000, seed=1)
    scan = big.apply(head(frontal=True, n=6000, seed=2))
    np.save(tmp_path / "scan.npy", TRUE.invert(scan))
    lm_args = {}
    if with_landmarks:
        ref = surface[:40]
        np.save(tmp_path / "ref.npy", ref)
        np.save(tmp_path / "lm.npy", TRUE.invert(big.apply(ref)))
        lm_args = dict(landmark_files=[tmp_path / "lm.npy"], reference_file=tmp_path / "ref.npy")
    kept, estimated = (align_scans(AnalyticHeadIdentity(), [tmp_path / "scan.npy"], units="mm", size=size, **lm_args)[0]
                       for size in ("auto", "estimate"))
    assert kept.transform.scale == 0.004 and kept.scale_source == "unit"
    assert estimated.scale_source == "estimated" and estimated.transform.scale < 0.004 / 1.03
    if with_landmarks:  # the landmarks' rotation at the unit's scale (the pose of the automatic
        # alignment at a kept scale is checked on the ICT heads, tests/test_fit_custom_poses.py: the
        # analytic toy head scaled by 1.1 is nearly front-back symmetric)
        assert errors(kept.transform)[0] < 1.0


def test_size_options_are_checked(tmp_path):
    np.save(tmp_path / "scan.npy", TRUE.invert(head(frontal=True, n=2000, seed=2)))
    with pytest.raises(ValueError, match="size 'unit' needs a declared unit"):
        align_scans(AnalyticHeadIdentity(), [tmp_path / "scan.npy"], units="auto", size="unit")
    with pytest.raises(ValueError, match="unknown size 'huge'"):
        align_scans(AnalyticHeadIdentity(), [tmp_path / "scan.npy"], units="mm", size="huge")


def test_command_line_fitting_settings():
    from nphm.cli.fit_custom import SCAN_POINTS_PER_DRAW, fitting_config, parse_args

    base = fio.load_fitting_config(CFG).settings
    cfg = fitting_config(parse_args(["--points", "scan.ply", "--cfg_file", str(CFG)])).settings
    assert cfg.points_per_observation == SCAN_POINTS_PER_DRAW != base.points_per_observation
    assert (cfg.broyden.implicit_jacobian, cfg.broyden.jacobian) == ("broyden", "forward_bf16")
    assert cfg.broyden.max_iters == base.broyden.max_iters and cfg.n_iterations == base.n_iterations
    exact = fitting_config(parse_args(["--points", "scan.ply", "--cfg_file", str(CFG), "--exact_jacobians",
                                       "--points_per_observation", "500", "--step_scale", "0.1"])).settings
    assert exact.broyden == base.broyden and exact.points_per_observation == 500
    assert exact.n_iterations == 100
    with pytest.raises(ValueError, match="points_per_observation must be >= 1"):
        fitting_config(parse_args(["--points", "scan.ply", "--cfg_file", str(CFG), "--points_per_observation", "0"]))
