"""Joint identity / expression fitting: schedules, losses, recovery, outputs."""
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from nphm.analytic import head_anchor_layout
from nphm.checkpoints import save_checkpoint, save_config
from nphm.preprocessing.observations import ObservationProtocol
from nphm.fitting import io as fio
from nphm.fitting.joint import ObservationSet, fit_identity, frozen, identity_loss, joint_loss
from nphm import layout
from nphm.layout import ItemResult
from nphm.fitting.pipeline import fit_subjects, latent_statistics, sample_latents
from support.recovery import recovery_experiment, render_observations
from nphm.reference.fitting import reference_joint_loss
from nphm.fitting.schedule import FittingSettings
from support.toy_models import AnalyticExpression, AnalyticHeadIdentity, toy_head_sdf
from nphm.models import NPHMDeformation, NPHMIdentity, NPMDeformation, NPMIdentity
from nphm.reference.models import naive_nphm_sdf


pytestmark = pytest.mark.usefixtures("single_thread")

ROOT = Path(__file__).resolve().parents[1]
LAMBDAS = FittingSettings().lambdas_at(0)


# ---------------------------------------------------------------------------------- schedules
def release_schedule(step):
    """The release's schedule, replayed step by step with its divisions."""
    lr = 0.01
    lam = {"surface": 2.0, "reg_expr": 0.01, "reg_global": 0.25, "reg_unobserved": 10, "reg_loc": 0.05,
           "symm_dist": 5.0}
    sched = {"lr": {200: 2, 400: 2, 600: 2, 800: 2}, "symm_dist": {200: 10, 500: 9999},
             "reg_global": {200: 3, 600: 10}, "reg_loc": {500: 3, 600: 10}, "reg_expr": {600: 10}}
    for j in range(step + 1):
        if j in sched["lr"]:
            lr /= sched["lr"][j]
        for k in ("symm_dist", "reg_global", "reg_loc", "reg_expr"):
            if j in sched[k]:
                lam[k] /= sched[k][j]
    clamp = 0.1
    if step > 250:
        clamp = 0.05
    if step > 500:
        clamp = 0.0075
    return lr, lam, clamp


@pytest.mark.parametrize("cfg", ["fitting_nphm.yaml", "fitting_npm.yaml"])
def test_config_schedule_is_the_release_schedule(cfg):
    settings = fio.load_fitting_config(ROOT / "configs" / cfg).settings
    assert settings.n_iterations == 1000
    assert (settings.observations_per_step, settings.points_per_observation) == (5, 1000)
    assert (settings.broyden.max_iters, settings.broyden.converge_threshold, settings.broyden.diverge_threshold) == (
        15, 1e-6, 0.2)
    for step in (0, 199, 200, 250, 251, 399, 400, 500, 501, 599, 600, 800, 999):
        lr, lam, clamp = release_schedule(step)
        assert settings.lr_at(step) == pytest.approx(lr)
        assert settings.clamp_at(step) == pytest.approx(clamp)
        ours = settings.lambdas_at(step)
        for k, v in lam.items():
            assert ours[k] == pytest.approx(v, rel=1e-6), (step, k)


def test_step_scale_and_bad_config():
    s = FittingSettings(step_scale=0.25)
    assert s.n_iterations == 250
    assert s.schedule_step(50) == 200 and s.lr_at(s.schedule_step(50)) == pytest.approx(0.005)
    with pytest.raises(ValueError, match="unknown keys"):
        FittingSettings.from_config({"stepz": 3})
    with pytest.raises(ValueError, match="unknown loss terms"):
        FittingSettings.from_config({"lambdas": {"surfce": 1.0}})
    assert FittingSettings.from_config(FittingSettings().to_config()) == FittingSettings()


# ---------------------------------------------------------------------------------- losses
def tiny_nphm(dtype=torch.float64):
    torch.manual_seed(1)
    idm = NPHMIdentity(lat_dim_glob=8, lat_dim_loc=4, hidden_dim=24, n_layers=4, pos_mlp_dim=16,
                       anchors_mean=head_anchor_layout()).to(dtype)
    de = NPHMDeformation(lat_dim_expr=6, lat_dim_id_compressed=5, lat_dim_glob_shape=8, lat_dim_loc_shape=4,
                         hidden_dim=32, n_layers=4).to(dtype).eval()
    return idm, de


def tiny_npm(dtype=torch.float64):
    torch.manual_seed(1)
    return NPMIdentity(lat_dim=6, hidden_dim=32, n_layers=4).to(dtype), \
        NPMDeformation(lat_dim_id=6, lat_dim_expr=5, hidden_dim=32, n_layers=4).to(dtype).eval()


@pytest.mark.parametrize("kind", ["nphm", "npm"])
def test_joint_loss_equals_straightforward_step(kind):
    idm, de = tiny_nphm() if kind == "nphm" else tiny_npm()
    g = torch.Generator().manual_seed(1)
    obs = ObservationSet([torch.randn(n, 3, generator=g, dtype=torch.float64) * 0.3 for n in (60, 40, 50)],
                         dtype=torch.float64)
    z_id = (torch.randn(idm.lat_dim, generator=g, dtype=torch.float64) * 0.1).requires_grad_(True)
    z_ex = (torch.randn(3, de.lat_dim_expr, generator=g, dtype=torch.float64) * 0.1).requires_grad_(True)
    obs_idx, point_idx = obs.draw(5, 40, g)  # with replacement: repeated observations and points
    assert torch.unique(point_idx).numel() < point_idx.numel()
    for clamp in (0.1, 0.02):
        with frozen(idm, de):
            step = joint_loss(idm, de, z_id, z_ex, obs, obs_idx, point_idx, clamp, LAMBDAS,
                              query_mode="exact" if kind == "nphm" else None)
            z_id.grad = z_ex.grad = None
            step.backward()
            grads = (z_id.grad.clone(), z_ex.grad.clone())
        terms, stats = step.terms, step.stats
        ref_total, ref_terms, converged = reference_joint_loss(idm, de, z_id, z_ex, obs.points[point_idx], obs_idx,
                                                               clamp, LAMBDAS)
        ref_grads = torch.autograd.grad(ref_total, [z_id, z_ex])
        assert stats.converged_fraction == pytest.approx(float(converged.double().mean()))
        for k in ref_terms:
            assert float(terms[k].detach()) == pytest.approx(float(ref_terms[k].detach()), rel=1e-9, abs=1e-12), k
        for a, b in zip(grads, ref_grads):
            torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-10)
        assert grads[1].abs().sum() > 0  # the expression latents get a gradient


def test_warm_started_steps_match_cold_steps_and_cache_exact_jacobians():
    from nphm.fitting.implicit import RootCache
    from nphm.reference.fitting import backward_jacobian

    idm, de = tiny_nphm()
    g = torch.Generator().manual_seed(4)
    obs = ObservationSet([torch.randn(n, 3, generator=g, dtype=torch.float64) * 0.3 for n in (60, 40, 50)],
                         dtype=torch.float64)
    z_id = (torch.randn(idm.lat_dim, generator=g, dtype=torch.float64) * 0.1).requires_grad_(True)
    z_ex = (torch.randn(3, de.lat_dim_expr, generator=g, dtype=torch.float64) * 0.1).requires_grad_(True)
    tight = FittingSettings().broyden.__class__(max_iters=40, converge_threshold=1e-11)
    cache = RootCache(len(obs.points), dtype=torch.float64)
    opt = torch.optim.Adam([z_id, z_ex], lr=0.01)
    with frozen(idm, de):
        for step in range(4):  # a few steps of a fit fill the cache
            opt.zero_grad()
            loss = joint_loss(idm, de, z_id, z_ex, obs, *obs.draw(3, 60, g), 0.1, LAMBDAS, tight,
                              query_mode="exact", root_cache=cache)
            loss.backward()
            opt.step()
        assert cache.valid.any()
        obs_idx, point_idx = obs.draw(3, 60, g)
        results = []
        for use_cache in (False, True):
            z_id.grad = z_ex.grad = None
            step = joint_loss(idm, de, z_id, z_ex, obs, obs_idx, point_idx, 10.0, LAMBDAS, tight,
                              query_mode="exact", root_cache=cache if use_cache else None)
            step.backward()
            results.append((float(step.total.detach()), z_id.grad.clone(), z_ex.grad.clone(), step.stats))
    (loss_c, gid_c, gex_c, st_c), (loss_w, gid_w, gex_w, st_w) = results
    assert st_w.warm_fraction > 0.3 and st_c.warm_fraction == 0.0
    assert st_w.broyden_evaluations < st_c.broyden_evaluations
    assert loss_w == pytest.approx(loss_c, rel=1e-8)
    torch.testing.assert_close(gid_w, gid_c, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(gex_w, gex_c, rtol=1e-6, atol=1e-9)

    # every point of the last (all within the clamp) step is cached with the exact inverse
    # Jacobian of x + D(x) at its root, computed here independently by backward passes
    drawn = torch.unique(point_idx)
    drawn = drawn[cache.valid[drawn]]
    assert drawn.numel() > 0.9 * torch.unique(point_idx).numel()
    anchors = idm.anchors(z_id.detach()[None])
    for o in range(len(obs)):
        ids = drawn[obs.owner[drawn] == o]
        J = backward_jacobian(lambda x: x + de(x, z_id.detach()[None], z_ex.detach()[o:o + 1], anchors),
                              cache.canonical[ids][None])[0]
        torch.testing.assert_close(cache.J_inv[ids], torch.linalg.inv(J), rtol=1e-8, atol=1e-10)


def test_step_benchmark_compares_equal_steps():
    """The fitting-speed comparison times steps that compute the same loss and gradients (no
    timing is checked here), and its warm timing really starts from the cache of the fit."""
    from nphm.experiments.fitting_speed import compare_step

    idm, de = tiny_nphm(torch.float32)
    g = torch.Generator().manual_seed(5)
    observations = [torch.randn(n, 3, generator=g) * 0.3 for n in (80, 60)]
    z_id = torch.randn(idm.lat_dim, generator=g) * 0.1
    z_ex = torch.randn(2, de.lat_dim_expr, generator=g) * 0.1
    settings = FittingSettings(observations_per_step=3, points_per_observation=50)
    res = compare_step(idm, de, observations, z_id, z_ex, settings, step=0, repeats=1, warm_steps=5)
    for name in ("ours", "ours_warm"):
        assert res.loss[name] == pytest.approx(res.loss["baseline"], rel=1e-5)
        assert res.grad_rel_diff[name] < 1e-4
    assert res.ours_stats["ours_warm"]["warm_fraction"] > 0.5 and res.ours_stats["ours"]["warm_fraction"] == 0
    assert res.ours_stats["ours_warm"]["broyden_evaluations"] < res.ours_stats["ours"]["broyden_evaluations"]


def test_identity_loss_matches_direct_evaluation():
    idm, _ = tiny_nphm()
    g = torch.Generator().manual_seed(2)
    obs = ObservationSet([torch.randn(80, 3, generator=g, dtype=torch.float64) * 0.3], dtype=torch.float64)
    z_id = (torch.randn(idm.lat_dim, generator=g, dtype=torch.float64) * 0.1).requires_grad_(True)
    _, point_idx = obs.draw(5, 30, g)
    clamp = 0.05
    terms = identity_loss(idm, z_id, obs, point_idx, clamp, LAMBDAS, query_mode="exact").terms
    sdf = naive_nphm_sdf(idm, obs.points[point_idx.reshape(1, -1)], z_id[None]).abs().reshape(-1)
    expected = sdf[sdf < clamp].mean()
    assert float(terms["surface"].detach()) == pytest.approx(float(expected.detach()), rel=1e-10)
    assert "reg_expr" not in terms


def test_observation_set_checks_and_draws():
    with pytest.raises(ValueError, match="no observations"):
        ObservationSet([])
    with pytest.raises(ValueError, match="observation 1: no points"):
        ObservationSet([np.zeros((3, 3)), np.zeros((0, 3))])
    with pytest.raises(ValueError, match="NaN"):
        ObservationSet([np.array([[0.0, np.nan, 0.0]])])
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        ObservationSet([np.zeros((4, 2))])
    obs = ObservationSet([np.zeros((5, 3)), np.ones((7, 3))])
    obs_idx, point_idx = obs.draw(200, 50, torch.Generator().manual_seed(0))
    assert torch.equal(obs.owner[point_idx], obs_idx[:, None].expand_as(point_idx))
    assert set(obs_idx.tolist()) == {0, 1}
    assert point_idx.min() >= 0 and point_idx.max() < 12


# ---------------------------------------------------------------------------------- recovery
Z_ID = torch.tensor([0.12, -0.08, 0.1, 0.06])
Z_EX = torch.tensor([[0.0, 0.0], [0.16, 0.06], [0.06, 0.18]])
FAST = FittingSettings(step_scale=0.15, points_per_observation=300)


def test_joint_fit_recovers_analytic_head_and_expressions():
    result = recovery_experiment(AnalyticHeadIdentity(), AnalyticExpression(), Z_ID, Z_EX, FAST, resolution=48,
                                 protocol=ObservationProtocol(resolution=150), seed=0)
    # observations follow the release protocol: frontal views, the first with the back view too
    assert len(result.observations[0]) == 5000 and all(len(o) == 2500 for o in result.observations[1:])
    fit, mean = np.array(result.chamfer_fit), np.array(result.chamfer_mean)
    assert (fit < 0.002).all()  # 0.5 mm
    assert (fit < mean / 20).all()
    torch.testing.assert_close(result.fit.z_ex, Z_EX, atol=0.02, rtol=0)
    assert result.fit.history[-1]["converged"] > 0.99


def test_identity_fit_recovers_neutral_head():
    from nphm.mesh import extract_mesh
    from nphm.reconstruction import FITTING_BOUNDS

    idm = AnalyticHeadIdentity()
    truth = extract_mesh(lambda p: toy_head_sdf(p, idm.params(Z_ID)), *FITTING_BOUNDS, resolution=48, device="cpu")
    obs = render_observations([truth], seed=1, protocol=ObservationProtocol(resolution=150))
    fit = fit_identity(idm, obs, FAST, torch.Generator().manual_seed(0), progress=False)
    assert fit.z_ex is None
    torch.testing.assert_close(fit.z_id[:3], Z_ID[:3], atol=0.01, rtol=0)


# ---------------------------------------------------------------------------------- outputs
class FakeManager:
    """The part of the DataManager the fitting uses, over observations in memory."""

    def __init__(self, tmp, observations):
        self.tmp = Path(tmp)
        self.obs = observations  # {subject: {expression: (front, back or None)}}

    def test_expressions(self, subject):
        if subject not in self.obs:
            raise FileNotFoundError(f"subject folder not found: {subject}")
        return sorted(self.obs[subject])

    def observation_path(self, subject, expression, back=False, full=False):
        front, back_pts = self.obs[subject][expression]
        name = "obs_back.npy" if back else "obs.npy"
        path = self.tmp / "sv" / str(subject) / str(expression) / name
        present = back_pts is not None if back else True
        return path if present else self.tmp / "missing.npy"

    def load_observation(self, subject, expression, back=False, full=False):
        front, back_pts = self.obs[subject][expression]
        return back_pts if back else front


def test_fit_subjects_writes_release_layout_and_continues_after_failure(tmp_path):
    from nphm.layout import find_prediction
    from nphm.fitting.meshing import mesh_fit

    idm, de = AnalyticHeadIdentity(), AnalyticExpression()
    _, truth = mesh_fit(idm, de, Z_ID, Z_EX[:2], 48, (FAST.grid_min, FAST.grid_max))
    obs = render_observations(truth, seed=0, protocol=ObservationProtocol(resolution=120), back_first=False)
    back = render_observations(truth[:1], seed=1, protocol=ObservationProtocol(resolution=120))[0][2500:]
    (tmp_path / "sv" / "7" / "3").mkdir(parents=True)
    (tmp_path / "sv" / "7" / "3" / "obs_back.npy").write_bytes(b"")  # marks the back view as present
    manager = FakeManager(tmp_path, {7: {3: (obs[0], back), 5: (obs[1], None)}, 9: {1: (np.zeros((0, 3)), None)}})
    models = fio.FittingModels(idm, de, torch.randn(10, 4) * 0.1, {"shape": 0, "expr": 0})
    settings = FAST.replace(step_scale=0.05)
    out = tmp_path / "out"
    outcomes = list(fit_subjects(manager, models, [9, 7, 11], settings, out, resolution=40, progress=False))
    status = {o.subject: o.status for o in outcomes}
    assert status == {9: "failed", 7: "done", 11: "failed"}
    assert "no finite points" in next(o for o in outcomes if o.subject == 9).message
    for e in (3, 5):
        assert find_prediction(out, 7, e) == out / f"7_{e}.ply"
        assert np.load(out / f"7_{e}_lat_shape.npy").shape == (1, 1, 4)
        assert np.load(out / f"7_{e}_lat_expr.npy").shape == (1, 1, 2)
    assert (out / "7_canonical.ply").is_file() and (out / "7.png").is_file()
    summary = __import__("json").loads((out / "7_fitting.json").read_text())
    assert summary["expressions"] == [3, 5] and summary["n_points"][0] == len(obs[0]) + len(back)
    # finished subjects are skipped
    again = list(fit_subjects(manager, models, [7], settings, out, resolution=40, progress=False))
    assert again == [ItemResult(7, -1, "skipped", "already fitted")]


def test_load_models_from_experiment_layout(tmp_path):
    idm, de = tiny_nphm(torch.float32)
    id_cfg = {"decoder": {"decoder_lat_dim_glob": 8, "decoder_lat_dim_loc": 4, "decoder_nloc": 39,
                          "decoder_nsymm_pairs": 16, "decoder_hidden_dim": 24, "decoder_nlayers": 4}}
    ex_cfg = {"id_decoder": id_cfg["decoder"],
              "ex_decoder": {"decoder_lat_dim_expr": 6, "decoder_lat_dim_id": 5, "decoder_hidden_dim": 32,
                             "decoder_nlayers": 4, "mode": "compress"}}
    # the anchor MLP of the tiny model is 16 wide: the loader reads the width from the weights
    lat = torch.nn.Embedding(3, idm.lat_dim)
    save_config(tmp_path / "id_exp", id_cfg)
    save_checkpoint(tmp_path / "id_exp", 10, idm, lat)
    save_checkpoint(tmp_path / "id_exp", 20, idm, lat)
    save_config(tmp_path / "ex_exp", ex_cfg)
    save_checkpoint(tmp_path / "ex_exp", 5, de, torch.nn.Embedding(4, 6))
    cfg = {"exp_name_shape": "id_exp", "checkpoint_shape": None, "exp_name_expr": "ex_exp", "checkpoint_expr": 5}
    models = fio.load_models(fio.FittingConfig.from_config(cfg), "cpu", tmp_path)
    assert models.epochs == {"shape": 20, "expr": 5}
    torch.testing.assert_close(models.latents_train, lat.weight.detach())
    x = torch.rand(1, 10, 3)
    z = torch.randn(1, idm.lat_dim) * 0.1
    torch.testing.assert_close(models.identity(x, z)[0], idm(x, z)[0])
    with pytest.raises(FileNotFoundError, match="expression experiment not found"):
        fio.load_models(fio.FittingConfig.from_config(dict(cfg, exp_name_expr="nope")), "cpu", tmp_path)
    cfg_path = tmp_path / "fit.yaml"
    cfg_path.write_text(yaml.safe_dump(dict(cfg, fitting={"steps": 10, "bogus": 1})))
    with pytest.raises(ValueError, match="bogus"):
        fio.load_fitting_config(cfg_path)


def test_random_samples_follow_training_statistics():
    g = torch.Generator().manual_seed(0)
    train = torch.randn(500, 6, generator=g) * torch.tensor([0.1, 0.2, 0.3, 0.1, 0.1, 0.5]) + 1.0
    mean, std = latent_statistics(train)
    samples = sample_latents(mean, std, 20000, 0.85, torch.Generator().manual_seed(1))
    torch.testing.assert_close(samples.mean(0), train.mean(0), atol=0.02, rtol=0)
    torch.testing.assert_close(samples.std(0), 0.85 * train.std(0), atol=0.0, rtol=0.03)
    with pytest.raises(ValueError):
        latent_statistics(train[:1])


# ---------------------------------------------------------------------------------- slow: trained models
def cpu_experiments(cfg) -> Path:
    """The folder with the experiments a CPU fitting config names: EXPERIMENT_DIR if it has them,
    else the shipped ones (PRETRAINED); skips the test when neither has them."""
    from nphm import paths

    names = (cfg.exp_name_shape, cfg.exp_name_expr)
    for experiment_dir in (paths.EXPERIMENT_DIR, paths.PRETRAINED):
        if all((experiment_dir / name / "checkpoints").is_dir() for name in names):
            return experiment_dir
    pytest.skip(f"experiments {names} neither in {paths.EXPERIMENT_DIR} nor in {paths.PRETRAINED}")


@pytest.mark.slow
def test_recovery_with_trained_toy_networks():
    """Networks trained (as auto-decoders) on analytic heads and expressions: fit renderings of
    their own meshes from zero latents."""
    from support.toy_training import train_toy_models

    toy = train_toy_models()
    settings = FittingSettings(step_scale=0.3, points_per_observation=500)
    result = recovery_experiment(toy.identity, toy.deformation, toy.z_id[1], toy.z_ex[1], settings, resolution=64,
                                 protocol=ObservationProtocol(resolution=200), seed=0)
    fit, mean = np.array(result.chamfer_fit), np.array(result.chamfer_mean)
    print(f"\ntoy networks: Chamfer-L1 fit {fit * 250} mm, mean head {mean * 250} mm")
    assert (fit < 0.002).all() and (fit < mean / 10).all()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["nphm", "npm"])
def test_recovery_with_cpu_checkpoints(kind):
    """The CPU-trained experiments (configs/fitting_*_cpu.yaml; those in EXPERIMENT_DIR, else the
    shipped ones in PRETRAINED): latents of training items, meshes rendered with the release's
    camera protocol, fit with the CPU settings."""
    cfg = fio.load_fitting_config(ROOT / "configs" / f"fitting_{kind}_cpu.yaml")
    experiment_dir = cpu_experiments(cfg)
    models = fio.load_models(cfg, "cpu", experiment_dir)
    from nphm.checkpoints import load_expression

    _, ex_latents = load_expression(experiment_dir / cfg.exp_name_expr, models.epochs["expr"])
    g = torch.Generator().manual_seed(0)
    z_id = models.latents_train[int(torch.randint(len(models.latents_train), (1,), generator=g))]
    z_ex = ex_latents["train"][torch.randperm(len(ex_latents["train"]), generator=g)[:4]]
    result = recovery_experiment(models.identity, models.deformation, z_id, z_ex, cfg.settings,
                                 resolution=128, seed=0)
    fit, mean = np.array(result.chamfer_fit), np.array(result.chamfer_mean)
    print(f"\n{kind} CPU models: Chamfer-L1 fit {np.round(fit * 250, 3)} mm, mean head {np.round(mean * 250, 3)} mm, "
          f"fit {result.fit.seconds:.0f} s")
    assert (fit < mean / 3).all()


@pytest.mark.slow
def test_fitting_script_on_synthetic_test_subject(tmp_path):
    """scripts/fitting/fitting_pointclouds.py (:mod:`nphm.cli.fitting_pointclouds`) with the CPU
    config on one test subject of the dataset in ``nphm.paths.DATA`` (needs the single-view
    observations); its outputs must load in the evaluation."""
    from nphm.data import DataManager
    from nphm.evaluation import EvalSettings, evaluate_results_dir

    cfg = fio.load_fitting_config(ROOT / "configs" / "fitting_nphm_cpu.yaml")
    experiment_dir = cpu_experiments(cfg)
    try:
        manager = DataManager()
        subject = manager.subjects("test")[0]
        manager.load_observation(subject, manager.test_expressions(subject)[0])
    except (FileNotFoundError, ValueError, IndexError) as e:
        pytest.skip(f"no dataset / observations: {e}")
    from nphm.cli import fitting_pointclouds

    code = fitting_pointclouds.main(["-cfg_file", str(ROOT / "configs" / "fitting_nphm_cpu.yaml"), "-exp_name", "t",
                                     "-exp_tag", "t", "-resolution", "96", "--subjects", str(subject), "--steps", "60",
                                     "--fitting_dir", str(tmp_path), "--device", "cpu",
                                     "--experiment_dir", str(experiment_dir)])
    assert code == 0
    out = layout.fitting_results_dir("t", "t", tmp_path)
    summary = evaluate_results_dir(out, manager, EvalSettings(n_samples=5000, resolution_scale=0.25),
                                   subjects=[subject], figures=False, progress=False)
    assert not summary.failed and len(summary.evaluated) == len(manager.test_expressions(subject))
