"""Root finding through the forward deformation and the implicit gradient."""
import math

import pytest
import torch

from nphm.analytic import head_anchor_layout
from nphm.fitting.broyden import broyden
from nphm.fitting.implicit import (
    ForwardDeformation,
    Packing,
    batch_groups,
    batched_inverse,
    RootCache,
    find_canonical,
    implicit_canonical,
)
from nphm.reference.fitting import backward_jacobian, broyden_all_points
from nphm.fitting.schedule import BroydenSettings
from nphm.models import NPHMDeformation, NPHMIdentity, NPMDeformation


pytestmark = pytest.mark.usefixtures("single_thread")

TIGHT = BroydenSettings(max_iters=60, converge_threshold=1e-12, diverge_threshold=0.5)


def tiny_identity(dtype=torch.float64):
    torch.manual_seed(1)
    return NPHMIdentity(lat_dim_glob=8, lat_dim_loc=4, hidden_dim=24, n_layers=4, pos_mlp_dim=16,
                        anchors_mean=head_anchor_layout()).to(dtype)


def tiny_deformation(kind="nphm", dtype=torch.float64, strength=1.0):
    """Small random deformation net with trained-like offsets (a few cm in nphm units)."""
    torch.manual_seed(2)
    if kind == "nphm":
        m = NPHMDeformation(lat_dim_expr=6, lat_dim_id_compressed=5, lat_dim_glob_shape=8, lat_dim_loc_shape=4,
                            hidden_dim=32, n_layers=4)
        last = m.defDeepSDF.lin4
    else:
        m = NPMDeformation(lat_dim_id=8 + 40 * 4, lat_dim_expr=6, hidden_dim=200, n_layers=4)
        last = m.lin4
    with torch.no_grad():
        last.weight.mul_(strength)
    for p in m.parameters():
        p.requires_grad_(False)
    return m.to(dtype).eval()


def latents(B, dtype=torch.float64, scale=0.3):
    g = torch.Generator().manual_seed(3)
    z_id = torch.randn(B, 8 + 40 * 4, generator=g, dtype=dtype) * 0.1
    z_ex = torch.randn(B, 6, generator=g, dtype=dtype) * scale
    return z_id, z_ex


def test_broyden_solves_smooth_system_and_tracks_best():
    # g(x) = A x + 0.2 sin(x) - b: a smooth, well-conditioned system per point.
    g = torch.Generator().manual_seed(0)
    N = 500
    A = torch.eye(3, dtype=torch.float64) + 0.2 * torch.randn(N, 3, 3, generator=g, dtype=torch.float64)
    b = torch.randn(N, 3, generator=g, dtype=torch.float64) * 0.3

    def residual(x, idx):
        return (A[idx] @ x[..., None])[..., 0] + 0.2 * torch.sin(x) - b[idx]

    x0 = torch.zeros(N, 3, dtype=torch.float64)
    J0 = A + 0.2 * torch.eye(3, dtype=torch.float64)  # true Jacobian at 0 (cos 0 = 1)
    res = broyden(residual, x0, torch.linalg.inv(J0), BroydenSettings(max_iters=40, converge_threshold=1e-10,
                                                                       diverge_threshold=10.0))
    assert res.converged.float().mean() > 0.98
    check = residual(res.x, torch.arange(N)).norm(dim=-1)
    torch.testing.assert_close(check, res.residual)
    assert check[res.converged].max() < 1e-10
    # points stop being evaluated once converged: fewer evaluations than N * (iterations + 1)
    assert res.evaluations < N * (res.iterations + 1)


def test_broyden_drops_diverging_points_and_keeps_best_iterate():
    # g(x) = x^2 + 1 has no real root: every point ends above the convergence threshold,
    # and the returned residual is the smallest one seen (|g| >= 1 everywhere).
    N = 50
    x0 = torch.linspace(0.5, 2.0, N, dtype=torch.float64)[:, None].expand(N, 3).clone()

    def residual(x, idx):
        return x ** 2 + 1.0

    J_inv = torch.diag_embed(1.0 / (2 * x0))
    res = broyden(residual, x0, J_inv, BroydenSettings(max_iters=10, converge_threshold=1e-6, diverge_threshold=5.0))
    assert not res.converged.any()
    assert (res.residual >= math.sqrt(3.0) - 1e-9).all()
    assert (res.residual <= residual(x0, None).norm(dim=-1) + 1e-12).all()


def test_packing_round_trip():
    group = torch.tensor([0, 0, 0, 2, 2, 3, 3, 3, 3, 3, 3, 3])
    pack = Packing(group, 5)
    values = torch.arange(12.0)[:, None].expand(12, 3)
    packed = pack.pack(values)
    assert packed.shape[1] == pack.row_len
    torch.testing.assert_close(pack.unpack(packed), values)
    assert set(pack.row_group.tolist()) == {0, 2, 3}
    # every row holds points of its own group only
    assert torch.equal(pack.row_group[pack.row], group)


@pytest.mark.parametrize("kind", ["nphm", "npm"])
def test_jacobian_matches_backward_mode(kind):
    de = tiny_deformation(kind)
    B, N = 3, 40
    z_id, z_ex = latents(B)
    anchors = head_anchor_layout().double()[None].expand(B, -1, -1) if kind == "nphm" else None
    fwd = ForwardDeformation(de, z_id, z_ex, anchors)
    x = torch.randn(B, N, 3, dtype=torch.float64) * 0.3
    posed, J = fwd.posed_and_jacobian(x.reshape(-1, 3), batch_groups(B, N))
    ref = backward_jacobian(lambda p: p + de(p, z_id, z_ex, anchors), x)
    torch.testing.assert_close(J.reshape(B, N, 3, 3), ref)
    torch.testing.assert_close(posed.reshape(B, N, 3), x + de(x, z_id, z_ex, anchors))


@pytest.mark.parametrize("kind,dtype,tol", [("nphm", torch.float64, 1e-12), ("nphm", torch.float32, 1e-5),
                                            ("npm", torch.float32, 1e-5)])
def test_roots_satisfy_forward_deformation(kind, dtype, tol):
    de = tiny_deformation(kind, dtype)
    B, N = 4, 300
    z_id, z_ex = latents(B, dtype)
    anchors = head_anchor_layout().to(dtype)[None].expand(B, -1, -1) if kind == "nphm" else None
    g = torch.Generator().manual_seed(5)
    x_obs = (torch.rand(B, N, 3, generator=g) - 0.5).to(dtype) * 0.8
    with torch.no_grad():
        mean_offset = de(x_obs, z_id, z_ex, anchors).norm(dim=-1).mean()
    assert 0.01 < mean_offset < 0.2  # a deformation of realistic size, not the identity map
    settings = BroydenSettings(converge_threshold=tol / 10) if dtype == torch.float64 else BroydenSettings()
    res = find_canonical(ForwardDeformation(de, z_id, z_ex, anchors), x_obs.reshape(-1, 3), batch_groups(B, N),
                         settings)
    assert res.converged_fraction > 0.95
    with torch.no_grad():
        x_c = res.canonical.reshape(B, N, 3)
        err = (x_c + de(x_c, z_id, z_ex, anchors) - x_obs).norm(dim=-1).reshape(-1)
    assert err[res.converged].max() < tol
    assert (x_c - x_obs).norm(dim=-1).mean() > 0.5 * mean_offset  # it really moved


def test_same_roots_as_all_points_reference():
    de = tiny_deformation("nphm")
    B, N = 3, 100
    z_id, z_ex = latents(B)
    anchors = head_anchor_layout().double()[None].expand(B, -1, -1)
    x_obs = torch.randn(B, N, 3, dtype=torch.float64) * 0.25
    fwd = ForwardDeformation(de, z_id, z_ex, anchors)
    ours = find_canonical(fwd, x_obs.reshape(-1, 3), batch_groups(B, N), TIGHT)

    def posed(x):
        return x + de(x, z_id, z_ex, anchors)

    J_inv = torch.linalg.inv(backward_jacobian(posed, x_obs)).reshape(-1, 3, 3)
    x_ref, _, conv_ref = broyden_all_points(lambda x: (posed(x.reshape(B, N, 3)) - x_obs).reshape(-1, 3),
                                            x_obs.reshape(-1, 3), J_inv, TIGHT)
    both = ours.converged & conv_ref
    assert both.float().mean() > 0.95
    torch.testing.assert_close(ours.canonical[both], x_ref[both], atol=1e-10, rtol=0)


@pytest.mark.parametrize("threshold", [1e-11, 1e-6])
def test_warm_start_finds_the_same_roots_with_fewer_evaluations(threshold):
    de = tiny_deformation("nphm")
    B, N = 3, 200
    z_id, z_ex = latents(B)
    anchors = head_anchor_layout().double()[None].expand(B, -1, -1)
    g = torch.Generator().manual_seed(11)
    x_obs = ((torch.rand(B * N, 3, generator=g, dtype=torch.float64) - 0.5) * 0.6)
    group = batch_groups(B, N)
    settings = BroydenSettings(max_iters=40, converge_threshold=threshold)
    first = find_canonical(ForwardDeformation(de, z_id, z_ex, anchors), x_obs, group, settings)
    cache = RootCache(B * N, dtype=torch.float64)
    order = torch.randperm(B * N, generator=g)  # the cache is indexed by point, not by position
    cache.store(order, first.canonical[order], first.J_inv[order], first.converged[order])
    assert torch.equal(cache.valid, first.converged)

    # the latents move a little, as between two fitting steps
    moved = ForwardDeformation(de, z_id, z_ex + 0.01 * torch.randn(z_ex.shape, generator=g, dtype=z_ex.dtype), anchors)
    cold = find_canonical(moved, x_obs, group, settings)
    warm = find_canonical(moved, x_obs, group, settings, start=cache.starts(torch.arange(B * N)))
    assert warm.warm == int(first.converged.sum()) and cold.warm == 0
    both = cold.converged & warm.converged
    assert both.float().mean() > 0.95
    with torch.no_grad():
        err = (moved.posed(warm.canonical, group) - x_obs).norm(dim=-1)
    assert err[warm.converged].max() < threshold
    # the root is unique here: both starts find it (to within what the threshold allows)
    torch.testing.assert_close(warm.canonical[both], cold.canonical[both], atol=100 * threshold, rtol=0)
    # fewer evaluations, and the warm points skip the Jacobian at the observation altogether
    assert warm.evaluations < 0.85 * cold.evaluations
    assert warm.iterations <= cold.iterations


def test_root_cache_forgets_failed_points():
    cache = RootCache(4)
    idx = torch.tensor([0, 1, 2, 3])
    J = torch.eye(3).expand(4, 3, 3).clone()
    J[2, 0, 0] = float("nan")
    cache.store(idx, torch.ones(4, 3), J, torch.tensor([True, False, True, True]))
    assert cache.valid.tolist() == [True, False, False, True]
    cache.store(torch.tensor([3]), torch.zeros(1, 3), J[:1], torch.tensor([False]))
    assert cache.valid.tolist() == [True, False, False, False]
    x0, J0, warm = cache.starts(torch.tensor([0, 3]))
    assert warm.tolist() == [True, False] and torch.equal(x0[0], torch.ones(3))


def test_batched_inverse_handles_singular_matrices():
    J = torch.stack([torch.eye(3) * 2, torch.zeros(3, 3)])
    inv = batched_inverse(J)
    torch.testing.assert_close(inv[0], torch.eye(3) / 2)
    torch.testing.assert_close(inv[1], torch.eye(3))


def _pipeline_loss(identity, de, z_id, z_ex, x_obs, group, anchors_fn, settings=TIGHT):
    """sum of SDF values at the canonical correspondences, with the implicit gradient."""
    G = z_ex.shape[0]
    anchors = anchors_fn(z_id)
    fwd = ForwardDeformation(de, z_id[None].expand(G, -1), z_ex, anchors.expand(G, -1, -1))
    res = find_canonical(fwd, x_obs, group, settings)
    assert res.converged.all()
    x_c = implicit_canonical(fwd, res.canonical, group)
    sdf = identity(x_c[None], z_id[None], mode="exact", anchors=anchors)[0][0, :, 0]
    return (sdf * torch.linspace(0.5, 1.5, sdf.numel(), dtype=sdf.dtype)).sum()


def test_implicit_gradient_matches_finite_differences():
    identity = tiny_identity()
    for p in identity.parameters():
        p.requires_grad_(False)
    de = tiny_deformation("nphm")
    G, N = 2, 60
    z_id0, z_ex0 = latents(G)
    z_id0 = z_id0[0]
    g = torch.Generator().manual_seed(7)
    x_obs = (torch.rand(G * N, 3, generator=g, dtype=torch.float64) - 0.5) * 0.6
    group = batch_groups(G, N)

    def loss(z_id, z_ex):
        return _pipeline_loss(identity, de, z_id, z_ex, x_obs, group, lambda z: identity.anchors(z[None]))

    z_id = z_id0.clone().requires_grad_(True)
    z_ex = z_ex0.clone().requires_grad_(True)
    grad_id, grad_ex = torch.autograd.grad(loss(z_id, z_ex), [z_id, z_ex])
    # The canonical points must matter: the gradient differs from the one that ignores the
    # dependence of x_c on the latents.
    eps = 1e-6
    for trial in range(3):
        v_id = torch.randn(z_id0.shape, generator=g, dtype=torch.float64)
        v_ex = torch.randn(z_ex0.shape, generator=g, dtype=torch.float64)
        for which in ("id", "ex"):
            vi = v_id if which == "id" else torch.zeros_like(v_id)
            ve = v_ex if which == "ex" else torch.zeros_like(v_ex)
            with torch.no_grad():
                fd = (loss(z_id0 + eps * vi, z_ex0 + eps * ve) - loss(z_id0 - eps * vi, z_ex0 - eps * ve)) / (2 * eps)
            analytic = (grad_id * vi).sum() + (grad_ex * ve).sum()
            assert abs(float(analytic) - float(fd)) <= 1e-6 * max(1.0, abs(float(fd))), (which, trial, analytic, fd)


def test_implicit_correction_is_needed():
    # Without the correction, the gradient w.r.t. the expression latent would be zero: the
    # implicit one is not, and it points the right way (finite differences agree in sign and size).
    identity = tiny_identity()
    de = tiny_deformation("nphm")
    for p in identity.parameters():
        p.requires_grad_(False)
    G, N = 1, 50
    z_id0, z_ex0 = latents(G)
    x_obs = torch.randn(N, 3, dtype=torch.float64) * 0.2
    group = torch.zeros(N, dtype=torch.long)
    z_ex = z_ex0.clone().requires_grad_(True)
    value = _pipeline_loss(identity, de, z_id0[0], z_ex, x_obs, group, lambda z: identity.anchors(z[None]))
    (grad_ex,) = torch.autograd.grad(value, [z_ex])
    assert grad_ex.abs().max() > 1e-3
