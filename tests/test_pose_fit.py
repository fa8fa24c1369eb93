"""The pose of the observations refined in the fit (nphm.fitting.pose)."""
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from nphm.data.frames import Similarity
from nphm.fitting.implicit import ForwardDeformation, find_canonical, implicit_canonical
from nphm.fitting.joint import ObservationSet, fit_identity, fit_joint, frozen, identity_loss, joint_loss
from nphm.fitting.losses import surface_penalty
from nphm.fitting.meshing import mesh_fit
from nphm.fitting.pose import PoseSettings, ScanPose, compose, pose_errors, rotation_exp
from nphm.fitting.schedule import BroydenSettings, FittingSettings
from nphm.preprocessing.observations import ObservationProtocol
from support.recovery import render_observations, sampled_surface_distance
from support.toy_models import AnalyticExpression, AnalyticHeadIdentity, toy_expression_offsets, toy_surface_samples

pytestmark = pytest.mark.usefixtures("single_thread")

Z_ID = torch.tensor([0.12, -0.08, 0.1, 0.06])
Z_EX = torch.tensor([[0.0, 0.0], [0.16, 0.06], [0.06, 0.18]])
FAST = FittingSettings(step_scale=0.15, points_per_observation=300)
TIGHT = BroydenSettings(max_iters=50, converge_threshold=1e-12, diverge_threshold=0.5)
HEAD_CENTRE = (0.0, 0.05, 0.0)


def random_similarity(rng, degrees, translation, scale):
    w = rng.normal(size=3)
    return Similarity(float(scale), Rotation.from_rotvec(w / np.linalg.norm(w) * np.radians(degrees)).as_matrix(),
                      rng.normal(size=3) / np.sqrt(3) * translation)


def toy_observations(n=200, seed=0, dtype=torch.float64):
    """Noisy surface samples of two expressions of the toy head (no meshing)."""
    idm = AnalyticHeadIdentity()
    g = torch.Generator().manual_seed(seed)
    out = []
    for e in Z_EX[:2]:
        p = toy_surface_samples(idm.params(Z_ID), n, g).to(dtype)
        out.append(p + toy_expression_offsets(p, e.to(dtype) * 5.0) + 0.003 * torch.randn(p.shape, generator=g).to(dtype))
    return out


# ---------------------------------------------------------------------------------- the transform
def test_scan_pose_applies_its_similarity_and_prior():
    rng = np.random.default_rng(0)
    starts = [random_similarity(rng, 20, 0.1, 1.3), random_similarity(rng, 5, 0.02, 0.8)]
    settings = PoseSettings(enabled=True, shared=False, sigma_rotation=0.5, sigma_log_scale=0.1, sigma_translation=0.02)
    pose = ScanPose(starts, settings, dtype=torch.float64)
    assert pose.n_poses == 2 and ScanPose(starts, PoseSettings(enabled=True)).n_poses == 1
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in pose.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.05)
    x = torch.randn(50, 3, generator=g, dtype=torch.float64)
    for i in range(2):
        T = pose.similarity(i)
        torch.testing.assert_close(pose.apply(x, i), torch.as_tensor(T.apply(x.numpy())), rtol=0, atol=1e-12)
        # correction after start, with rotation and scale about the nphm origin
        C = pose.correction(i)
        np.testing.assert_allclose(T.apply(x.numpy()), C.apply(starts[i].apply(x.numpy())), atol=1e-12)
        assert np.allclose(C.rotation @ C.rotation.T, np.eye(3), atol=1e-12) and np.linalg.det(C.rotation) > 0
    np.testing.assert_allclose(compose(starts[0], starts[1]).apply(x.numpy()), starts[0].apply(starts[1].apply(x.numpy())),
                               atol=1e-12)
    ls, w, t = (p.detach() for p in (pose.log_scale, pose.rotvec, pose.translation))
    expected = np.mean([float(ls[i]) ** 2 / 0.01 + float(w[i].square().sum()) / 0.25
                        + float(t[i].square().sum()) / 0.02 ** 2 for i in range(2)])
    assert float(pose.prior().detach()) == pytest.approx(expected, rel=1e-12)
    w = torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64)
    np.testing.assert_allclose(rotation_exp(w).numpy(), Rotation.from_rotvec(w.numpy()).as_matrix(), atol=1e-12)


def test_pose_settings_config_round_trip_and_release_default():
    assert FittingSettings().pose == PoseSettings() and not PoseSettings().enabled
    s = FittingSettings.from_config({"pose": {"enabled": True, "lr": 0.002, "shared": False, "start_step": 100}})
    assert s.pose == PoseSettings(enabled=True, lr=0.002, shared=False, start_step=100)
    assert FittingSettings.from_config(s.to_config()) == s
    with pytest.raises(ValueError, match="unknown keys"):
        FittingSettings.from_config({"pose": {"enabeld": True}})
    with pytest.raises(ValueError, match="true or false"):
        FittingSettings.from_config({"pose": {"enabled": "yes"}})
    with pytest.raises(ValueError, match="sigmas"):
        PoseSettings(sigma_translation=0.0)


# ---------------------------------------------------------------------------------- gradients
def test_canonical_points_follow_the_observations_by_the_inverse_jacobian():
    """dx_c/dx_obs of the implicit correction = finite differences of the root finding itself."""
    de = AnalyticExpression().double()
    g = torch.Generator().manual_seed(1)
    obs = toy_observations(40, seed=1)[1]
    z_id, z_ex = torch.zeros(1, 4, dtype=torch.float64), torch.tensor([[0.16, 0.06]], dtype=torch.float64)
    forward = ForwardDeformation(de, z_id, z_ex)
    group = torch.zeros(len(obs), dtype=torch.long)
    roots = find_canonical(forward, obs, group, TIGHT)
    assert roots.converged.all()
    observed = obs.clone().requires_grad_(True)
    moved = implicit_canonical(forward, roots.canonical, group, observed=observed)
    torch.testing.assert_close(moved, roots.canonical, rtol=0, atol=0)
    v = torch.randn(len(obs), 3, generator=g, dtype=torch.float64)
    (grad,) = torch.autograd.grad((moved * v).sum(), observed)
    h = 1e-6
    for j in range(3):
        e = torch.zeros(3, dtype=torch.float64)
        e[j] = h
        plus = find_canonical(forward, obs + e, group, TIGHT).canonical
        minus = find_canonical(forward, obs - e, group, TIGHT).canonical
        fd = ((plus - minus) / (2 * h) * v).sum(-1)  # v . dx_c/dx_obs[:, :, j]
        torch.testing.assert_close(grad[:, j], fd, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("shared", [True, False])
def test_pose_gradient_matches_finite_differences(shared):
    """Gradient of the joint loss (L1 and Geman-McClure) and of the identity-only loss w.r.t. the
    pose parameters, through the root finding, against central differences (float64)."""
    idm, de = AnalyticHeadIdentity().double(), AnalyticExpression().double()
    obs = ObservationSet(toy_observations(), dtype=torch.float64)
    z_id = torch.tensor([0.1, -0.05, 0.08, 0.05], dtype=torch.float64, requires_grad=True)
    z_ex = torch.tensor([[0.01, 0.0], [0.12, 0.05]], dtype=torch.float64, requires_grad=True)
    pose = ScanPose([Similarity.identity()] * 2, PoseSettings(enabled=True, shared=shared, lambda_pose=0.1),
                    dtype=torch.float64)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in pose.parameters():
            p.copy_(0.02 * torch.randn(p.shape, generator=g, dtype=torch.float64))
    lambdas = FittingSettings().lambdas_at(0)
    obs_idx = torch.tensor([0, 1])
    point_idx = torch.arange(len(obs.points)).reshape(2, -1)
    losses = {
        "joint l1": lambda: joint_loss(idm, de, z_id, z_ex, obs, obs_idx, point_idx, 10.0, lambdas, TIGHT, pose=pose),
        "joint gm": lambda: joint_loss(idm, de, z_id, z_ex, obs, obs_idx, point_idx, 10.0, lambdas, TIGHT, pose=pose,
                                       penalty=surface_penalty("geman_mcclure", 0.01)),
        "identity": lambda: identity_loss(idm, z_id, obs, point_idx, 10.0, lambdas, pose=pose),
    }
    h = 1e-6
    with frozen(idm, de):
        for name, loss_fn in losses.items():
            step = loss_fn()
            assert step.stats.converged_fraction == 1.0 and "pose" in step.terms
            for t in (z_id, z_ex, *pose.parameters()):
                t.grad = None
            step.backward()
            analytic = torch.cat([p.grad.reshape(-1) for p in pose.parameters()])
            fd = []
            with torch.no_grad():
                for p in pose.parameters():
                    flat = p.view(-1)
                    for k in range(flat.numel()):
                        v = float(flat[k])
                        flat[k] = v + h
                        plus = float(loss_fn().total)
                        flat[k] = v - h
                        minus = float(loss_fn().total)
                        flat[k] = v
                        fd.append((plus - minus) / (2 * h))
            fd = torch.tensor(fd, dtype=torch.float64)
            assert fd.abs().max() > 0.1, name  # the surface term depends on the pose
            torch.testing.assert_close(analytic, fd, rtol=1e-6, atol=1e-8, msg=name)


# ---------------------------------------------------------------------------------- fits
@pytest.fixture(scope="module")
def scene():
    idm, de = AnalyticHeadIdentity(), AnalyticExpression()
    bounds = (FAST.grid_min, FAST.grid_max)
    _, truth = mesh_fit(idm, de, Z_ID, Z_EX, 48, bounds)
    obs = render_observations(truth, seed=0, protocol=ObservationProtocol(resolution=150))
    return idm, de, bounds, truth, obs


def chamfer_mm(scene, fit):
    idm, de, bounds, truth, _ = scene
    _, fitted = mesh_fit(idm, de, fit.z_id, fit.z_ex, 48, bounds)
    return np.array([sampled_surface_distance(f, t) for f, t in zip(fitted, truth)]) * 250


def test_fit_recovers_pose_and_latents(scene):
    """Observations under a random similarity (12 degrees, 1.5 cm, scale in [0.9, 1.1]), started
    2.5 degrees / 2 % / 2 mm off: the fit recovers the similarity and the latents of the fit
    without pose error."""
    idm, de, bounds, truth, obs = scene
    rng = np.random.default_rng(0)
    true = random_similarity(rng, 12, 0.06, rng.uniform(0.9, 1.1))  # input -> nphm
    scan = [true.invert(o) for o in obs]
    start = compose(random_similarity(rng, 2.5, 0.01, 1.02), true)
    r0, s0, t0 = pose_errors(start, true, HEAD_CENTRE)
    assert r0 > 2.4 and s0 > 0.019 and t0 * 250 > 1.5

    settings = FAST.replace(pose=PoseSettings(enabled=True))
    fit = fit_joint(idm, de, scan, settings, torch.Generator().manual_seed(0), progress=False, pose=start)
    clean = fit_joint(idm, de, obs, FAST, torch.Generator().manual_seed(0), progress=False)
    fixed = fit_joint(idm, de, scan, FAST, torch.Generator().manual_seed(0), progress=False, pose=start)
    rot, scale, trans = pose_errors(fit.poses[0], true, HEAD_CENTRE)
    err_pose, err_clean, err_fixed = chamfer_mm(scene, fit), chamfer_mm(scene, clean), chamfer_mm(scene, fixed)
    print(f"\npose error: {rot:.3f} deg, scale {scale * 100:.3f} %, {trans * 250:.3f} mm (start {r0:.2f} deg, "
          f"{s0 * 100:.1f} %, {t0 * 250:.2f} mm); Chamfer mm: pose fit {err_pose.round(3)}, without pose error "
          f"{err_clean.round(3)}, start pose kept {err_fixed.round(3)}")
    assert len(fit.poses) == 3 and all(np.array_equal(p.matrix(), fit.poses[0].matrix()) for p in fit.poses)  # shared
    assert rot < 1.0 and scale < 0.01 and trans * 250 < 1.0
    assert err_pose.mean() < 1.25 * err_clean.mean() and (err_pose < 0.5).all()
    torch.testing.assert_close(fit.z_ex, clean.z_ex, atol=0.01, rtol=0)
    torch.testing.assert_close(fit.z_id, clean.z_id, atol=0.01, rtol=0)
    assert err_fixed.mean() > 5 * err_clean.mean()  # the start's error alone would cost this much
    assert fit.history[-1]["pose"] > 0 and "pose_rotation_deg" in fit.history[-1]
    assert all(p is start for p in fixed.poses) and clean.poses is None


def test_fixed_start_pose_is_fitting_the_mapped_points():
    """Pose refinement off: the start is applied once and the fit is the release's on the mapped points."""
    idm, de = AnalyticHeadIdentity(), AnalyticExpression()
    obs = [o.float().numpy() for o in toy_observations(300, dtype=torch.float32)]
    T = random_similarity(np.random.default_rng(3), 10, 0.05, 1.05)
    scan = [T.invert(o) for o in obs]
    s = FAST.replace(step_scale=0.02)
    a = fit_joint(idm, de, scan, s, torch.Generator().manual_seed(0), progress=False, pose=T)
    b = fit_joint(idm, de, [T.apply(x) for x in scan], s, torch.Generator().manual_seed(0), progress=False)
    assert torch.equal(a.z_id, b.z_id) and torch.equal(a.z_ex, b.z_ex)
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history] and all(p is T for p in a.poses)
    a = fit_identity(idm, scan[:1], s, torch.Generator().manual_seed(0), progress=False, pose=T)
    b = fit_identity(idm, [T.apply(scan[0])], s, torch.Generator().manual_seed(0), progress=False)
    assert torch.equal(a.z_id, b.z_id) and b.poses is None


def test_identity_fit_refines_pose():
    """Identity-only fitting with pose refinement: neutral points 1.5 mm and 2 degrees off."""
    idm = AnalyticHeadIdentity()
    pts = toy_surface_samples(idm.params(Z_ID), 4000, torch.Generator().manual_seed(0)).double().numpy()
    true = random_similarity(np.random.default_rng(5), 2.0, 0.006, 1.0)
    settings = FAST.replace(pose=PoseSettings(enabled=True, fit_scale=False))
    fit = fit_identity(idm, [true.invert(pts)], settings, torch.Generator().manual_seed(0), progress=False)
    rot, scale, trans = pose_errors(fit.poses[0], true, HEAD_CENTRE)
    assert scale == 0.0 and rot < 0.5 and trans * 250 < 0.5
    torch.testing.assert_close(fit.z_id[:3], Z_ID[:3], atol=0.01, rtol=0)
