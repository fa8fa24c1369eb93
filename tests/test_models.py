"""Networks: release parameter layout, fast paths against independent straightforward code."""
import math

import pytest
import torch
from torch.nn import functional as F

from nphm.models import NPHMDeformation, NPHMIdentity, NPMDeformation, NPMIdentity
from nphm.models.identity import blend_weights, members_to_keep
from nphm.query import sdf_function
from nphm.reference.models import naive_deepsdf, naive_nphm_sdf

# REFERENCE.md section 6, written out independently of the model code.
OFFICIAL_SHAPES = {
    "nphm_identity": {
        **{f"ensembled_deep_sdf.lin{i}.weight": s for i, s in enumerate(
            [(24, 200, 99), (24, 101, 200), (24, 200, 200), (24, 200, 200), (24, 1, 200)])},
        **{f"ensembled_deep_sdf.lin{i}.bias": (24, o) for i, o in enumerate([200, 101, 200, 200, 1])},
        "mlp_pos.0.weight": (256, 64), "mlp_pos.0.bias": (256,),
        "mlp_pos.2.weight": (256, 256), "mlp_pos.2.bias": (256,),
        "mlp_pos.4.weight": (117, 256), "mlp_pos.4.bias": (117,),
    },
    "npm_identity": {
        **{f"lin{i}.weight": s for i, s in enumerate(
            [(1024, 515), (1024, 1024), (1024, 1024), (509, 1024)] + [(1024, 1024)] * 4 + [(1, 1024)])},
        **{f"lin{i}.bias": (o,) for i, o in enumerate([1024, 1024, 1024, 509, 1024, 1024, 1024, 1024, 1])},
    },
    "nphm_expression": {
        "compressor.0.weight": (32, 1461), "compressor.0.bias": (32,),
        **{f"defDeepSDF.lin{i}.weight": s for i, s in enumerate(
            [(512, 235), (512, 512), (277, 512)] + [(512, 512)] * 3 + [(3, 512)])},
        **{f"defDeepSDF.lin{i}.bias": (o,) for i, o in enumerate([512, 512, 277, 512, 512, 512, 3])},
    },
    "npm_expression": {
        **{f"lin{i}.weight": s for i, s in enumerate(
            [(1024, 715), (1024, 1024), (1024, 1024), (309, 1024)] + [(1024, 1024)] * 4 + [(3, 1024)])},
        **{f"lin{i}.bias": (o,) for i, o in enumerate([1024, 1024, 1024, 309, 1024, 1024, 1024, 1024, 3])},
    },
}

MODELS = {
    "nphm_identity": NPHMIdentity,
    "npm_identity": NPMIdentity,
    "nphm_expression": NPHMDeformation,
    "npm_expression": NPMDeformation,
}


def random_state(shapes):
    return {k: torch.randn(*s) * 0.05 for k, s in shapes.items()}


@pytest.mark.parametrize("name", list(OFFICIAL_SHAPES))
def test_official_state_dict_loads_strictly(name):
    model = MODELS[name]()
    state = random_state(OFFICIAL_SHAPES[name])
    model.load_state_dict(state, strict=True)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key])


def face_like_anchors(n=39, n_pairs=16, generator=None):
    """Symmetric anchor layout spread like facial keypoints (pairs mirrored in x, then midline)."""
    g = generator or torch.Generator().manual_seed(1)
    left = torch.rand(n_pairs, 3, generator=g) * torch.tensor([0.3, 0.7, 0.35]) + torch.tensor([0.03, -0.35, 0.05])
    right = left * torch.tensor([-1.0, 1.0, 1.0])
    pairs = torch.stack([left, right], dim=1).reshape(-1, 3)
    mid = torch.rand(n - 2 * n_pairs, 3, generator=g) * torch.tensor([0.0, 0.7, 0.3]) + torch.tensor([0.0, -0.35, 0.15])
    return torch.cat([pairs, mid])


@pytest.fixture(scope="module")
def nphm_small():
    torch.manual_seed(3)
    model = NPHMIdentity(hidden_dim=128, anchors_mean=face_like_anchors()).eval()
    return model


def brute_force_member(model, member, local, cond):
    """One member's MLP evaluated with plain F.linear calls, input concatenated explicitly."""
    ens = model.ensembled_deep_sdf
    wset = member // 2 if member < 2 * model.n_symm_pairs else member - model.n_symm_pairs
    inp = torch.cat([local, cond.expand(local.shape[0], -1)], dim=-1)
    h = inp
    for layer in range(ens.nlayers + 1):
        lin = getattr(ens, f"lin{layer}")
        if layer == ens.nlayers // 2:
            h = torch.cat([h, inp], dim=-1) / math.sqrt(2)
        h = F.linear(h, lin.weight[wset], lin.bias[wset])
        if layer < ens.nlayers:
            h = F.softplus(h, beta=100)
    return h[:, 0]


def test_blend_equals_brute_force_member_loop(nphm_small):
    model = nphm_small
    z = torch.randn(2, model.lat_dim) * 0.1
    pts = torch.rand(2, 300, 3) * 1.2 - 0.6
    with torch.no_grad():
        sdf, anchors = model(pts, z, mode="exact")
        for b in range(2):
            z_glob, z_loc = z[b, :64], z[b, 64:].reshape(40, 32)
            num = torch.zeros(300, dtype=torch.float64)
            den = torch.zeros(300, dtype=torch.float64)
            for k in range(40):
                if k < 39:
                    local = pts[b] - anchors[b, k]
                    if k < 32 and k % 2 == 1:
                        local = local * torch.tensor([-1.0, 1.0, 1.0])
                    w = torch.exp(-((torch.linalg.norm(pts[b] - anchors[b, k], dim=-1) + 1e-5) ** 2) / 0.01)
                else:
                    local = pts[b]
                    w = torch.full((300,), math.exp(-20.0))
                s = brute_force_member(model, k, local, torch.cat([z_glob, z_loc[k]])[None])
                num += (w * s).double()
                den += w.double()
            expected = num / (den + 1e-6)
            assert torch.allclose(sdf[b, :, 0].double(), expected, atol=1e-6, rtol=1e-5)


def test_exact_equals_release_style_naive(nphm_small):
    z = torch.randn(3, nphm_small.lat_dim) * 0.1
    pts = torch.rand(3, 500, 3) - 0.5
    with torch.no_grad():
        ours = nphm_small(pts, z, mode="exact")[0]
        ref = naive_nphm_sdf(nphm_small, pts, z)
    assert torch.allclose(ours, ref, atol=1e-6)


def _member_values(model, pts, z):
    anchors = model.anchors(z)
    return model.ensembled_deep_sdf.forward_dense(model._local_frames(pts, anchors), model.member_conditions(z))[..., 0]


def test_sparse_without_bounds_drops_at_most_tol_weight(nphm_small):
    model = nphm_small
    z = torch.randn(2, model.lat_dim) * 0.1
    pts = torch.rand(2, 4000, 3) * torch.tensor([1.1, 1.25, 1.35]) + torch.tensor([-0.55, -0.5, -0.95])
    with torch.no_grad():
        exact = model(pts, z, mode="exact")[0]
        sparse = model(pts, z, mode="sparse")[0]
        w, w_bg = blend_weights(pts, model.anchors(z))
        w_all = torch.cat([w, w_bg[..., None]], -1)
        keep = members_to_keep(w_all, model.sparse_tol)
        dropped = (w_all * (~keep)).sum(-1)
        max_member = _member_values(model, pts, z).abs().amax(0)  # (B, N)
    assert (dropped <= model.sparse_tol * (1 + 1e-4)).all()
    assert ((sparse - exact)[..., 0].abs() <= dropped * max_member + 1e-6).all()
    # the sparse path must actually skip work: far fewer (point, member) pairs than all
    assert keep.float().mean() < 0.6


def test_member_bounds_hold_and_sparse_error_within_tol(nphm_small):
    model = nphm_small
    box = ((-0.55, -0.5, -0.95), (0.55, 0.75, 0.4))
    z = torch.randn(2, model.lat_dim) * 0.1
    inside = torch.rand(2, 3000, 3) * torch.tensor([1.1, 1.25, 1.35]) + torch.tensor(box[0])
    outside = (torch.rand(2, 1000, 3) - 0.5) * 4.0  # mostly outside the probe box
    pts = torch.cat([inside, outside], dim=1)
    with torch.no_grad():
        bounds = model.member_bounds(z, *box)
        members = _member_values(model, pts, z).permute(1, 2, 0).abs()  # (B, N, M)
        # the estimate must cover the true member magnitudes at points it never probed
        assert (members <= bounds.at(pts)).all()
        exact = model(pts, z, mode="exact")[0]
        sparse = model(pts, z, mode="sparse", member_bounds=bounds)[0]
        w, w_bg = blend_weights(pts, model.anchors(z))
        w_all = torch.cat([w, w_bg[..., None]], -1)
        keep = members_to_keep(w_all, model.sparse_tol, bounds.at(pts))
    dropped_contribution = (w_all * members * (~keep)).sum(-1)
    assert (dropped_contribution <= model.sparse_tol * (1 + 1e-4)).all()
    assert ((sparse - exact)[..., 0].abs() <= dropped_contribution + 1e-6).all()
    assert (sparse - exact).abs().max() <= model.sparse_tol + 1e-6
    assert keep.float().mean() < 0.6


def test_sdf_function_sparse_within_tol_of_exact(nphm_small):
    model = nphm_small
    z = torch.randn(model.lat_dim) * 0.1
    pts = torch.rand(5000, 3) * 2.0 - 1.0
    sparse = sdf_function(model, z, mode="sparse", chunk=1024)(pts)
    exact = sdf_function(model, z, mode="exact", chunk=1024)(pts)
    assert (sparse - exact).abs().max() <= model.sparse_tol + 1e-6


def test_exact_mode_chunks_bound_its_rows(nphm_small, monkeypatch):
    """The exact mode's calls see at most EXACT_MODE_ROWS (member, point) rows; the values are
    those of one unchunked call."""
    import nphm.query as query

    model = nphm_small
    z = torch.randn(model.lat_dim) * 0.1
    pts = torch.rand(3000, 3) * 2.0 - 1.0
    whole = model(pts[None], z[None], mode="exact")[0][0, :, 0]
    monkeypatch.setattr(query, "EXACT_MODE_ROWS", 20 * model.n_members)
    sizes = []
    forward = model.forward

    def counting(points, *args, **kwargs):
        sizes.append(points.shape[1])
        return forward(points, *args, **kwargs)

    monkeypatch.setattr(model, "forward", counting)
    chunked = query.sdf_function(model, z, mode="exact")(pts)
    assert max(sizes) == 20 and sum(sizes) == len(pts)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-6)
    sizes.clear()
    query.sdf_function(model, z, mode="sparse", chunk=1000)(pts)
    assert max(sizes) == 1000  # the sparse mode keeps the chunk it is given


def test_sparse_gradients_match_exact(nphm_small):
    model = nphm_small
    z = (torch.randn(1, model.lat_dim) * 0.1).requires_grad_(True)
    pts = (torch.rand(1, 400, 3) - 0.5).requires_grad_(True)
    grads = []
    for mode in ("exact", "sparse"):
        sdf = model(pts, z, mode=mode)[0]
        gp, gz = torch.autograd.grad(sdf.sum(), [pts, z])
        grads.append((gp, gz))
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-3)
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-3)


def test_sdf_gradient_matches_finite_differences(nphm_small):
    model = nphm_small.double()
    tol = model.sparse_tol
    model.sparse_tol = 1e-9  # the sparse path's autograd against finite differences of the exact blend
    try:
        z = torch.randn(1, model.lat_dim, dtype=torch.float64) * 0.1
        pts = (torch.rand(1, 20, 3, dtype=torch.float64) - 0.5).requires_grad_(True)
        sdf = model(pts, z, mode="sparse")[0]
        (g,) = torch.autograd.grad(sdf.sum(), pts)
        eps = 1e-6
        for axis in range(3):
            d = torch.zeros(3, dtype=torch.float64)
            d[axis] = eps
            with torch.no_grad():
                fd = (model(pts + d, z, mode="exact")[0] - model(pts - d, z, mode="exact")[0]) / (2 * eps)
            assert torch.allclose(g[..., axis], fd[..., 0], atol=1e-5)
    finally:
        model.float()
        model.sparse_tol = tol


def test_mirrored_pair_members_give_mirrored_sdfs(nphm_small):
    """Member 2i+1 at the mirrored point with the same code equals member 2i at the point."""
    model = nphm_small
    anchors = face_like_anchors()[None]
    z = torch.randn(1, model.lat_dim) * 0.1
    z_loc = z[:, 64:].reshape(1, 40, 32).clone()
    z_loc[:, 1:32:2] = z_loc[:, 0:32:2]  # right code := left code
    z = torch.cat([z[:, :64], z_loc.reshape(1, -1)], dim=1)
    pts = torch.rand(1, 200, 3) - 0.5
    mirrored = pts * torch.tensor([-1.0, 1.0, 1.0])
    cond = model.member_conditions(z)
    with torch.no_grad():
        s = model.ensembled_deep_sdf.forward_dense(model._local_frames(pts, anchors), cond)[..., 0]
        s_m = model.ensembled_deep_sdf.forward_dense(model._local_frames(mirrored, anchors), cond)[..., 0]
    assert torch.allclose(s[0:32:2], s_m[1:32:2], atol=1e-6)
    assert torch.allclose(s[1:32:2], s_m[0:32:2], atol=1e-6)
    # and the blend weights of the pair swap exactly
    from nphm.models.identity import blend_weights
    w, _ = blend_weights(pts, anchors)
    w_m, _ = blend_weights(mirrored, anchors)
    assert torch.allclose(w[..., 0:32:2], w_m[..., 1:32:2], atol=1e-6)


def test_weight_sharing_between_pair_members(nphm_small):
    model = NPHMIdentity(hidden_dim=112, anchors_mean=face_like_anchors())
    n_params = sum(p.numel() for p in model.ensembled_deep_sdf.parameters())
    per_member = sum(p[0].numel() for p in model.ensembled_deep_sdf.parameters())
    assert n_params == 24 * per_member
    pts = torch.rand(1, 50, 3) - 0.5
    z = torch.randn(1, model.lat_dim) * 0.1
    anchors = model.anchors(z)
    local = model._local_frames(pts, anchors)
    cond = model.member_conditions(z)
    with torch.no_grad():
        before = model.ensembled_deep_sdf.forward_dense(local, cond)[..., 0]
        model.ensembled_deep_sdf.lin3.weight[5] += 0.5  # weight set 5 = members 10 and 11
        after = model.ensembled_deep_sdf.forward_dense(local, cond)[..., 0]
    changed = (before - after).abs().amax(dim=(1, 2)) > 1e-7
    assert changed.nonzero().flatten().tolist() == [10, 11]


def test_anchor_mlp_offsets_mean(nphm_small):
    z = torch.randn(2, nphm_small.lat_dim)
    with torch.no_grad():
        a = nphm_small.anchors(z)
        ref = nphm_small.mlp_pos(z[:, :64]).reshape(2, 39, 3) + nphm_small.anchors_mean
    assert a.shape == (2, 39, 3)
    assert torch.allclose(a, ref)


@pytest.mark.parametrize("cls,kwargs", [
    (NPMIdentity, dict(lat_dim=16, hidden_dim=48, n_layers=8)),
    (NPMDeformation, dict(lat_dim_id=16, lat_dim_expr=8, hidden_dim=48, n_layers=8)),
])
def test_global_mlps_match_naive(cls, kwargs):
    model = cls(**kwargs)
    pts = torch.rand(2, 100, 3) - 0.5
    if cls is NPMIdentity:
        z = torch.randn(2, 16)
        ours = model(pts, z)[0]
        ref = naive_deepsdf(model, pts, z)
    else:
        z_id, z_ex = torch.randn(2, 16), torch.randn(2, 8)
        ours = model(pts, z_id, z_ex)
        ref = naive_deepsdf(model, pts, torch.cat([z_id, z_ex], -1))
    assert torch.allclose(ours, ref, atol=1e-6)


@pytest.mark.parametrize("mode", ["compress", "glob_only", "expr_only"])
def test_nphm_deformation_modes(mode):
    model = NPHMDeformation(mode=mode, hidden_dim=300).eval()
    pts = torch.rand(2, 80, 3) - 0.5
    z_id, z_ex, anchors = torch.randn(2, 1344) * 0.1, torch.randn(2, 200) * 0.1, torch.randn(2, 39, 3) * 0.2
    with torch.no_grad():
        off = model(pts, z_id, z_ex, anchors)
        if mode == "compress":
            cond = torch.cat([model.compressor(torch.cat([z_id, anchors.reshape(2, -1)], -1)), z_ex], -1)
        elif mode == "glob_only":
            cond = torch.cat([z_id[:, :64], z_ex], -1)
        else:
            cond = z_ex
        ref = naive_deepsdf(model.defDeepSDF, pts, cond)
    assert off.shape == (2, 80, 3)
    assert torch.allclose(off, ref, atol=1e-6)


def test_compress_noise_only_in_training():
    model = NPHMDeformation(hidden_dim=256)
    pts = torch.rand(1, 10, 3)
    args = (torch.randn(1, 1344), torch.randn(1, 200), torch.randn(1, 39, 3))
    model.eval()
    assert torch.equal(model(pts, *args), model(pts, *args))
    model.train()
    assert not torch.equal(model(pts, *args), model(pts, *args))


def test_bad_shapes_raise(nphm_small):
    with pytest.raises(ValueError, match="z_id"):
        nphm_small(torch.rand(1, 10, 3), torch.rand(1, 100))
    with pytest.raises(ValueError, match="points"):
        nphm_small(torch.rand(10, 3), torch.rand(1, nphm_small.lat_dim))
