"""Training: schedules, datasets, losses against independent computations, tiny runs of both
stages and both model kinds (losses go down, checkpoints load, resuming is exact), errors."""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from nphm.checkpoints import CHECKPOINT_KEYS, available_epochs, load_expression, load_identity, read_checkpoint
from nphm.data import DataManager
from nphm.models import NPHMIdentity, NPMIdentity
from nphm.preprocessing import SupervisionError
from nphm.preprocessing import storage
from nphm.training import stage1, stage2
from nphm.training.config import ExpressionTrainingSettings, IdentityTrainingSettings, lr_at
from nphm.training.data import IdentityDataset, epoch_batches, iterate_epoch, shard, uniform_ball
from nphm.training.latents import LatentTable
from nphm.training.distributed import DistInfo
from nphm.training.losses import deformation_losses, identity_losses
from nphm.training.tracking import read_loss_csv
from support.training_fixtures import expression_config, identity_config, state_arrays

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- settings and schedules
def test_release_settings_and_derived_counts():
    cfg = yaml.safe_load((REPO / "configs" / "nphm.yaml").read_text())
    s = IdentityTrainingSettings.from_config(cfg)
    assert s.npoints_decoder == 750 and s.npoints_non_face == 50 and s.npoints_far == 93
    assert s.nepochs == 30001 and s.lr_decay_start_lat == 1000
    assert math.isclose(s.far_radius ** 3, 0.5)
    s2 = ExpressionTrainingSettings.from_config(yaml.safe_load((REPO / "configs" / "nphm_def.yaml").read_text()))
    assert s2.nepochs == 8000 and s2.npoints_decoder == 1000 and s2.lat_init_std == 0.01
    with pytest.raises(KeyError, match="lambdas"):
        IdentityTrainingSettings.from_config({"training": {"lr": 1, "lr_lat": 1, "weight_decay": 0}})


def test_step_schedules_follow_the_release():
    # network: halved at every multiple of 5000, starting with epoch 0 = base
    assert lr_at(0, 5e-4, 0.5, 5000) == 5e-4
    assert lr_at(4999, 5e-4, 0.5, 5000) == 5e-4
    assert lr_at(5000, 5e-4, 0.5, 5000) == 2.5e-4
    assert lr_at(12000, 5e-4, 0.5, 5000) == 1.25e-4
    # stage-1 latents: decays only at multiples beyond epoch 1000
    assert lr_at(600, 1e-3, 0.5, 300, start=1000) == 1e-3
    assert lr_at(1199, 1e-3, 0.5, 300, start=1000) == 1e-3
    assert lr_at(1200, 1e-3, 0.5, 300, start=1000) == 1e-3 * 0.5**4
    assert lr_at(10, 1.0, 0.5, None) == 1.0


# ----------------------------------------------------------------------------- batches and seeding
def test_epoch_batches_and_shards():
    b0 = epoch_batches(7, 3, seed=1, epoch=0)
    assert [len(b) for b in b0] == [3, 3, 1]
    assert sorted(np.concatenate(b0).tolist()) == list(range(7))
    assert all(np.array_equal(x, y) for x, y in zip(b0, epoch_batches(7, 3, seed=1, epoch=0)))
    assert not np.array_equal(np.concatenate(b0), np.concatenate(epoch_batches(7, 3, seed=1, epoch=1)))
    parts = [shard(np.arange(5), r, 2) for r in range(2)]
    assert parts[0].tolist() == [0, 1, 2] and parts[1].tolist() == [3, 4]
    assert len(shard(np.arange(1), 1, 2)) == 0


def test_uniform_ball_radius_distribution():
    p = uniform_ball(100_000, 0.5, np.random.default_rng(0))
    r = np.linalg.norm(p, axis=1)
    assert r.max() <= 0.5
    # uniform in volume: P(r < 0.5 * q) = q^3
    assert abs(np.mean(r < 0.25) - 0.125) < 0.005


class _WorkerSeeds(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return np.random.randint(0, 2**31)

    def set_epoch(self, epoch):
        pass


def test_loader_worker_seeds_differ_per_worker_and_epoch():
    draws = {}
    for epoch in (0, 1):
        values = []
        for _, _, batch in iterate_epoch(_WorkerSeeds(), 1, epoch, seed=0, num_workers=2, shuffle=False):
            values.append(int(batch[0]))
        draws[epoch] = values
    # batches alternate between the two workers; their first draws differ, and differ between epochs
    assert draws[0][0] != draws[0][1]
    assert set(draws[0]).isdisjoint(draws[1])


def test_identity_items_are_keyed_by_epoch_and_index(tiny):
    manager = DataManager(tiny["data"])
    ds = IdentityDataset(manager, tiny["identity"], "train", n_face=20, n_non_face=5, n_far=7)
    a = ds[1]
    assert a["points_face"].shape == (20, 3) and a["points_near"].shape == (25, 3) and a["gt_anchors"].shape == (39, 3)
    assert np.array_equal(a["points_face"], ds[1]["points_face"])
    assert not np.array_equal(a["points_face"], ds[0]["points_face"])
    ds.set_epoch(1)
    assert not np.array_equal(a["points_face"], ds[1]["points_face"])
    ds.set_epoch(0)
    # same batches with and without loader workers
    plain = [b for _, _, b in iterate_epoch(ds, 2, 3, seed=5, num_workers=0)]
    workers = [b for _, _, b in iterate_epoch(ds, 2, 3, seed=5, num_workers=2)]
    for x, y in zip(plain, workers):
        assert all(torch.equal(x[k], y[k]) for k in x)
    # near points: the surface points jittered by N(0, 0.01)
    jitter = a["points_near"] - np.concatenate([a["points_face"], a["points_non_face"]])
    assert 0.003 < jitter.std() < 0.03


def test_missing_and_broken_files_are_named(tiny, tmp_path):
    manager = DataManager(tiny["data"])
    sup = tmp_path / "identity"
    shutil.copytree(tiny["identity"], sup)
    s0, s1 = manager.subjects("train")[:2]
    face0 = storage.identity_paths(sup, s0, manager.neutral_expression(s0))[0]
    face0.unlink()
    non1 = storage.identity_paths(sup, s1, manager.neutral_expression(s1))[1]
    non1.write_bytes(b"not a numpy file")
    with pytest.raises(SupervisionError) as err:
        IdentityDataset(manager, sup, "train")
    assert str(face0) in str(err.value) and str(non1) in str(err.value) and "2 broken or missing" in str(err.value)


def test_training_stops_on_a_broken_file_naming_it(tiny, tmp_path):
    manager = DataManager(tiny["data"])
    sup = tmp_path / "identity"
    shutil.copytree(tiny["identity"], sup)
    s0 = manager.subjects("train")[0]
    face0 = storage.identity_paths(sup, s0, manager.neutral_expression(s0))[0]
    rows = np.load(face0)
    rows[:, 0] = np.nan  # readable, but every row broken: fails when the item is read
    np.save(face0, rows)
    with pytest.raises(SupervisionError, match=str(face0)):
        stage1.train(identity_config("npm", nepochs=1), tmp_path / "exp", data_dir=tiny["data"], supervision_dir=sup,
                     device="cpu", wandb_mode="disabled", progress=False)


# ----------------------------------------------------------------------------- losses
class _SphereSDF(nn.Module):
    """SDF ||x|| - r with r taken from the latent's first entry (no network)."""

    def forward(self, points, z, mode=None):
        return (torch.linalg.vector_norm(points, dim=-1, keepdim=True) - z[:, None, :1]), None


def test_identity_losses_on_an_analytic_sphere():
    torch.manual_seed(0)
    B, r = 2, 0.3
    z = torch.full((B, 4), r)
    dirs = torch.nn.functional.normalize(torch.randn(B, 50, 3), dim=-1)
    far = torch.randn(B, 9, 3) * 0.3
    batch = {"points_face": r * dirs[:, :40], "normals_face": dirs[:, :40], "points_non_face": r * dirs[:, 40:],
             "normals_non_face": -dirs[:, 40:], "points_far": far, "points_near": 1.1 * r * dirs}
    losses = identity_losses(_SphereSDF(), batch, z)
    assert torch.allclose(losses["surf_sdf"], torch.zeros(B), atol=1e-6)
    assert torch.allclose(losses["grad"], torch.zeros(B), atol=1e-6)
    # face normals correct (0), non-face normals flipped: |grad - n| = 2, capped at 0.75 and halved
    assert torch.allclose(losses["normals"], torch.full((B,), 10 * 0.375 / 50), atol=1e-6)
    expected_space = torch.exp(-10 * (far.norm(dim=-1) - r).abs()).mean(dim=1)
    assert torch.allclose(losses["space_sdf"], expected_space, atol=1e-6)
    assert torch.allclose(losses["lat_reg"], torch.full((B,), 4 * r**2))


def _release_style_losses(model, batch, z):
    """The release's loss formulas written out independently: four model calls, gradients per set,
    means over the whole batch."""
    def sdf_grad(p):
        p = p.clone().requires_grad_()
        sdf, anchors = model(p, z, mode="exact")
        g = torch.autograd.grad(sdf.sum(), p)[0]
        return sdf, g, anchors

    s_f, g_f, anchors = sdf_grad(batch["points_face"])
    s_n, g_n, _ = sdf_grad(batch["points_non_face"])
    s_r, g_r, _ = sdf_grad(batch["points_far"])
    s_z, g_z, _ = sdf_grad(batch["points_near"])
    out = {
        "surf_sdf": torch.cat([s_f.abs().flatten(), s_n.abs().flatten()]).mean(),
        "normals": torch.cat([(g_f - batch["normals_face"]).norm(dim=-1).flatten(),
                              torch.clamp((g_n - batch["normals_non_face"]).norm(dim=-1), max=0.75).flatten() / 2]).mean(),
        "space_sdf": torch.exp(-10 * s_r.abs()).mean(),
        "grad": torch.cat([(g.norm(dim=-1) - 1).abs().flatten() for g in (g_f, g_n, g_r, g_z)]).mean(),
        "lat_reg": (z.norm(dim=-1) ** 2).mean(),
    }
    if anchors is not None:
        out["anchors"] = ((anchors - batch["gt_anchors"]) ** 2).mean()
        loc = z[:, model.lat_dim_glob:].reshape(z.shape[0], model.n_loc + 1, model.lat_dim_loc)
        pairs = loc[:, :2 * model.n_symm_pairs]
        out["symm_dist"] = (pairs[:, ::2] - pairs[:, 1::2]).norm(dim=-1).mean()
    return out


@pytest.mark.parametrize("kind", ["nphm", "npm"])
def test_identity_losses_match_the_release_formulas(kind):
    torch.manual_seed(1)
    B = 3
    if kind == "nphm":
        model = NPHMIdentity(lat_dim_glob=6, lat_dim_loc=4, hidden_dim=24, n_layers=2, pos_mlp_dim=16,
                             anchors_mean=torch.randn(39, 3) * 0.15)
    else:
        model = NPMIdentity(lat_dim=8, hidden_dim=32, n_layers=4)
    z = torch.randn(B, model.lat_dim) * 0.1
    batch = {k: torch.randn(B, n, 3) * 0.3 for k, n in (("points_face", 30), ("normals_face", 30),
                                                          ("points_non_face", 8), ("normals_non_face", 8),
                                                          ("points_far", 11), ("points_near", 38))}
    batch["gt_anchors"] = torch.randn(B, 39, 3) * 0.2
    ours = identity_losses(model, batch, z, mode="exact")
    ref = _release_style_losses(model, batch, z)
    for k, v in ref.items():
        assert torch.allclose(ours[k].mean(), v, rtol=1e-5, atol=1e-7), k
    # the sparse query mode gives the same losses (within its documented tolerance)
    if kind == "nphm":
        sparse = identity_losses(model, batch, z, mode="sparse")
        for k in ref:
            assert torch.allclose(sparse[k], ours[k], rtol=1e-4, atol=1e-5), k


class _ConstantOffset(nn.Module):
    def __init__(self, offset):
        super().__init__()
        self.offset = torch.as_tensor(offset, dtype=torch.float32)

    def forward(self, points, z_id, z_ex, anchors=None):
        return self.offset.expand_as(points) * z_ex[:, None, :1]


def test_deformation_losses_by_hand():
    torch.manual_seed(2)
    neutral, posed, zero = torch.randn(2, 10, 3), torch.randn(2, 10, 3), torch.randn(2, 4, 3)
    z_ex = torch.tensor([[1.0, 0.5], [2.0, 0.0]])
    c = torch.tensor([0.1, -0.2, 0.3])
    losses = deformation_losses(_ConstantOffset(c), {"points_neutral": neutral, "points_posed": posed,
                                                     "points_zero": zero}, z_ex, torch.zeros(2, 3), None)
    for b in range(2):
        off = c * z_ex[b, 0]
        assert torch.isclose(losses["corresp"][b], ((neutral[b] + off - posed[b]) ** 2).mean())
        assert torch.isclose(losses["loss_reg_zero"][b], (off**2).mean())
        assert torch.isclose(losses["lat_reg"][b], (z_ex[b] ** 2).sum())


def test_latent_table_clipping_and_renorm():
    table = LatentTable(5, 3, init_std=2.0, lr=0.1, device=torch.device("cpu"))
    rows = torch.tensor([1, 3])
    z = table.lookup(rows, rows)
    assert torch.all(z.norm(dim=-1) <= 1.0 + 1e-6)  # max_norm renormalisation
    (z.sum() * 100).backward()
    table.reduce_gradient(rows, DistInfo())
    before = table.clip_gradient(0.1)
    assert before == pytest.approx(100 * math.sqrt(6), rel=1e-5)
    assert torch.linalg.vector_norm(table.weight.grad.coalesce().values()).item() == pytest.approx(0.1, rel=1e-4)
    w = table.weight.detach().clone()
    table.step()
    changed = (table.weight.detach() != w).any(dim=1)
    assert changed.tolist() == [False, True, False, True, False]


# ----------------------------------------------------------------------------- tiny runs
def _stage1(tiny, exp_dir, cfg, **kw):
    return stage1.train(cfg, exp_dir, data_dir=tiny["data"], supervision_dir=tiny["identity"], device="cpu",
                        wandb_mode="disabled", progress=False, **kw)


def _stage2(tiny, exp_dir, cfg, mode, **kw):
    return stage2.train(cfg, exp_dir, mode, data_dir=tiny["data"], supervision_dir=tiny["deformation"], device="cpu",
                        wandb_mode="disabled", progress=False, **kw)


def _assert_same_state(dir_a, dir_b, epoch, rtol=1e-6, atol=1e-7):
    a, b = state_arrays(read_checkpoint(dir_a, epoch)), state_arrays(read_checkpoint(dir_b, epoch))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=rtol, atol=atol, err_msg=k)


@pytest.fixture(scope="module")
def identity_runs(tiny, tmp_path_factory):
    """Stage-1 runs of both kinds: 6 epochs straight, and 3 + 3 with an interruption."""
    root = tmp_path_factory.mktemp("stage1")
    out = {"root": root}
    for kind in ("nphm", "npm"):
        cfg = identity_config(kind, nepochs=6, lr_decay_interval=2, lr_decay_interval_lat=2)
        straight = _stage1(tiny, root / f"{kind}_straight", cfg, local=kind == "nphm")
        first = _stage1(tiny, root / f"{kind}_resumed", cfg, stop_after=3)
        second = _stage1(tiny, root / f"{kind}_resumed", cfg)
        out[kind] = {"straight": straight, "first": first, "second": second}
    return out


@pytest.mark.parametrize("kind", ["nphm", "npm"])
def test_stage1_lowers_losses_and_writes_the_release_layout(identity_runs, tiny, kind):
    run = identity_runs[kind]["straight"]
    losses = [row["loss"] for row in run["history"]]
    assert losses[-1] < 0.8 * losses[0]
    assert run["history"][-1]["surf_sdf"] < run["history"][0]["surf_sdf"]
    exp = identity_runs["root"] / f"{kind}_straight"
    assert available_epochs(exp) == [0, 5]
    ckpt = read_checkpoint(exp, 5)
    assert set(CHECKPOINT_KEYS) <= set(ckpt) and ckpt["epoch"] == 5
    manager = DataManager(tiny["data"])
    assert ckpt["subjects_train"] == manager.subjects("train")
    model, latents = load_identity(exp, 5)
    assert isinstance(model, NPHMIdentity if kind == "nphm" else NPMIdentity)
    assert latents["train"].shape == (3, model.lat_dim) and latents["val"].shape == (1, model.lat_dim)
    if kind == "nphm":
        assert torch.allclose(model.anchors_mean, torch.from_numpy(manager.anchors_mean).float())
    rows = read_loss_csv(exp / "losses.csv")
    assert [int(r["epoch"]) for r in rows] == list(range(6)) and "val_loss" in rows[0]
    cfg = yaml.safe_load((exp / "configs.yaml").read_text())
    assert cfg["training"]["nepochs"] == 6


@pytest.mark.parametrize("kind", ["nphm", "npm"])
def test_stage1_resume_is_exact(identity_runs, kind):
    runs = identity_runs[kind]
    assert runs["first"]["last_epoch"] == 2 and runs["second"]["start_epoch"] == 3
    root = identity_runs["root"]
    _assert_same_state(root / f"{kind}_straight", root / f"{kind}_resumed", 5)
    rows = read_loss_csv(root / f"{kind}_resumed" / "losses.csv")
    assert [int(r["epoch"]) for r in rows] == list(range(6))


def test_stage1_kind_flag_must_match_the_config(tiny, tmp_path):
    with pytest.raises(ValueError, match="without -local"):
        _stage1(tiny, tmp_path / "x", identity_config("nphm", nepochs=1), local=False)


@pytest.fixture(scope="module")
def expression_runs(identity_runs, tiny):
    """Stage-2 runs on the stage-1 runs: 4 epochs straight, and 2 + 2 with an interruption."""
    root = identity_runs["root"]
    out = {}
    for kind, mode in (("nphm", "compress"), ("npm", "npm")):
        cfg = expression_config(kind, f"{kind}_straight", nepochs=4)
        straight = _stage2(tiny, root / f"{kind}_def", cfg, mode)
        _stage2(tiny, root / f"{kind}_def_resumed", cfg, mode, stop_after=2)
        again = _stage2(tiny, root / f"{kind}_def_resumed", cfg, mode)
        out[kind] = {"straight": straight, "again": again, "cfg": cfg}
    return out


@pytest.mark.parametrize("kind,mode", [("nphm", "compress"), ("npm", "npm")])
def test_stage2_trains_loads_and_resumes_exactly(identity_runs, expression_runs, tiny, kind, mode):
    root = identity_runs["root"]
    run = expression_runs[kind]
    losses = [row["corresp"] for row in run["straight"]["history"]]
    assert losses[-1] < 0.7 * losses[0]
    assert run["again"]["start_epoch"] == 2
    _assert_same_state(root / f"{kind}_def", root / f"{kind}_def_resumed", 3)
    saved = yaml.safe_load((root / f"{kind}_def" / "configs.yaml").read_text())
    assert saved["ex_decoder"]["mode"] == mode and saved["training"]["shape_ckpt"] == 5
    assert saved["id_decoder"] == identity_config(kind)["decoder"]
    model, latents = load_expression(root / f"{kind}_def", 3)
    manager = DataManager(tiny["data"])
    n_items = sum(len(manager.expressions(s)) for s in manager.subjects("train"))
    assert latents["train"].shape == (n_items, model.lat_dim_expr)
    with pytest.raises(ValueError, match="trained with -mode"):
        _stage2(tiny, root / f"{kind}_def", run["cfg"], "glob_only" if kind == "nphm" else "compress")


def test_previews_are_written(identity_runs, tiny, tmp_path):
    cfg = identity_config("nphm", nepochs=1, n_preview=1, preview_resolution=24)
    _stage1(tiny, tmp_path / "preview", cfg)
    folder = tmp_path / "preview" / "recs" / "epoch_0"
    assert (folder / "preview.png").stat().st_size > 1000
    assert {p.suffix for p in folder.iterdir()} == {".png", ".ply"}


def test_fit_inspection_of_trained_experiments(identity_runs, expression_runs, tiny, tmp_path):
    from nphm.evaluation.pipeline import EvalSettings
    from nphm.training.inspect import expression_fit, identity_fit, summarize

    manager = DataManager(tiny["data"])
    settings = EvalSettings(n_samples=3000, resolution_scale=0.1)
    root = identity_runs["root"]
    s = manager.subjects("train")[0]
    rows = identity_fit(root / "nphm_straight", manager, subjects=[s], resolution=48, settings=settings)
    assert rows[0]["subject"] == s and rows[0]["expression"] == manager.neutral_expression(s)
    assert np.isfinite(rows[0]["chamfer_l1"]) and rows[0]["chamfer_l1"] > 0
    rows = expression_fit(root / "nphm_def", manager, items=[(s, 2)], resolution=48, settings=settings,
                          out_dir=tmp_path)
    assert np.isfinite(summarize(rows)["chamfer_l1"])
    assert (tmp_path / f"expression_{s}_2.png").is_file() and (tmp_path / f"expression_{s}_2.ply").is_file()
