"""A known identity: expression-only fits of new scans and of ordered frames (fit_expressions, fit_sequence)."""
import numpy as np
import pytest
import torch

from nphm.data.frames import Similarity
from nphm.fitting.implicit import ForwardDeformation, find_canonical
from nphm.fitting.joint import fit_expressions, fit_joint, fit_sequence
from nphm.fitting.pose import PoseSettings
from nphm.fitting.schedule import BroydenSettings, FittingSettings
from support.toy_models import AnalyticExpression, AnalyticHeadIdentity, toy_expression_offsets, toy_surface_samples

pytestmark = pytest.mark.usefixtures("single_thread")

Z_ID = torch.tensor([0.12, -0.08, 0.1, 0.06])
Z_EX = torch.tensor([[0.0, 0.0], [0.16, 0.06], [0.06, 0.18]])
FAST = FittingSettings(step_scale=0.15, points_per_observation=300)
NOISE = 0.002  # 0.5 mm


def scans(z_ex, n=5000, noise=NOISE, seed=0, frontal_from=1):
    """Surface samples of the toy head posed by every expression (the first whole, the others
    their front half), with Gaussian noise."""
    idm = AnalyticHeadIdentity()
    g = torch.Generator().manual_seed(seed)
    out = []
    for i, z in enumerate(z_ex):
        p = toy_surface_samples(idm.params(Z_ID), n, g)
        if i >= frontal_from:
            p = p[p[:, 2] > -0.05]
        p = p + toy_expression_offsets(p, z * 5.0) + noise * torch.randn(p.shape, generator=g)
        out.append(p.numpy())
    return out


def surface_error_mm(identity, deformation, z_id, z_ex, observations):
    """Mean distance of the observed points from the fitted surface: |SDF| at their canonical
    correspondences (no meshing), mm."""
    errors = []
    for obs, z in zip(observations, z_ex):
        x = torch.as_tensor(obs, dtype=torch.float32)
        roots = find_canonical(ForwardDeformation(deformation, z_id[None], z[None]), x,
                               torch.zeros(len(x), dtype=torch.long), BroydenSettings(max_iters=30))
        errors.append(identity(roots.canonical[None], z_id[None])[0].abs().mean().item())
    return float(np.mean(errors)) * 250


def test_expression_fit_of_a_known_identity_is_a_third_of_the_joint_fit():
    idm, de = AnalyticHeadIdentity(), AnalyticExpression()
    obs = scans(Z_EX)
    joint = fit_joint(idm, de, obs, FAST, torch.Generator().manual_seed(0), progress=False)
    short = FAST.for_known_identity()  # a third of the steps at twice the learning rate
    assert short.n_iterations * 3 == FAST.n_iterations and short.lr == 2 * FAST.lr
    known = fit_expressions(idm, de, Z_ID, obs, short, torch.Generator().manual_seed(0), progress=False)
    err_joint = surface_error_mm(idm, de, joint.z_id, joint.z_ex, obs)
    err_known = surface_error_mm(idm, de, known.z_id, known.z_ex, obs)
    err_truth = surface_error_mm(idm, de, Z_ID, Z_EX, obs)
    print(f"\nsurface error: joint {err_joint:.4f} mm in {len(joint.history)} steps ({joint.seconds:.2f} s), "
          f"known identity {err_known:.4f} mm in {len(known.history)} steps ({known.seconds:.2f} s), "
          f"truth {err_truth:.4f} mm")
    assert len(known.history) * 3 <= len(joint.history)
    assert err_known <= 1.1 * err_joint
    torch.testing.assert_close(known.z_ex, Z_EX, atol=0.01, rtol=0)
    assert torch.equal(known.z_id, Z_ID) and known.poses is None
    # only the expression terms: no identity regularisers
    assert set(known.history[-1]) & {"surface", "reg_expr", "reg_global", "reg_loc"} == {"surface", "reg_expr"}
    with pytest.raises(ValueError, match="z_id"):
        fit_expressions(idm, de, Z_ID[:3], obs, FAST, progress=False)


def test_sequence_chain_and_smoothness():
    idm, de = AnalyticHeadIdentity(), AnalyticExpression()
    T = 6
    truth = torch.stack([torch.tensor([0.1 + 0.01 * t, 0.05 + 0.005 * t * (-1) ** t]) for t in range(T)])
    frames = [f[f[:, 2] > 0.0] for f in scans(truth, n=800, noise=0.004, frontal_from=T)]  # sparse, noisy
    first = FittingSettings(step_scale=0.05, points_per_observation=200, observations_per_step=1)
    fits = {lam: fit_sequence(idm, de, Z_ID, frames, first.replace(step_scale=0.03), lambda_smooth=lam,
                              first_settings=first, generator=torch.Generator().manual_seed(0), progress=False)
            for lam in (0.0, 0.1, 1.0)}
    step = {lam: float((f.z_ex[1:] - f.z_ex[:-1]).norm(dim=-1).mean()) for lam, f in fits.items()}
    error = {lam: float((f.z_ex - truth).norm(dim=-1).mean()) for lam, f in fits.items()}
    print(f"\nmean |z_t - z_(t-1)| by smoothness weight {step} (truth "
          f"{float((truth[1:] - truth[:-1]).norm(dim=-1).mean()):.4f}); mean error {error}")
    assert step[1.0] < 0.5 * step[0.0] and step[0.1] < step[0.0]
    assert error[0.0] < 0.01 and error[0.1] < 1.2 * error[0.0]
    f = fits[0.1]
    assert f.z_ex.shape == (T, 2) and [h["frame"] for h in f.history][::30] == [0, 0, 1, 2, 3, 4, 5]
    assert "smooth" in f.history[-1] and "smooth" not in f.history[0]
    # a warm-start chain: with no steps after the first frame, every frame keeps the first one's latent
    chain = fit_sequence(idm, de, Z_ID, frames[:3], FittingSettings(steps=0), first_settings=first,
                         generator=torch.Generator().manual_seed(0), progress=False)
    assert torch.equal(chain.z_ex[1], chain.z_ex[0]) and torch.equal(chain.z_ex[2], chain.z_ex[0])
    assert torch.equal(chain.z_ex[0], fits[0.0].z_ex[0])
    # with pose refinement every frame refines its own pose, started at the previous frame's
    T = Similarity(1.0, np.eye(3), np.array([0.0, 0.0, 0.004]))
    posed = [T.invert(f) for f in frames[:2]]
    with_pose = first.replace(pose=PoseSettings(enabled=True))
    chain = fit_sequence(idm, de, Z_ID, posed, with_pose.replace(steps=0), first_settings=with_pose, pose=T,
                         generator=torch.Generator().manual_seed(0), progress=False)
    assert len(chain.poses) == 2 and np.allclose(chain.poses[1].matrix(), chain.poses[0].matrix(), atol=1e-12)
    assert not np.allclose(chain.poses[0].matrix(), T.matrix()) and "pose" in chain.history[0]
