"""Speed of one joint fitting step: the straightforward release-style step vs ours.

Setting (release sizes, random weights): the NPHM identity network of the query benchmark
(:func:`nphm.experiments.speed.load_or_fit`: 40 members of 4 x 200, briefly fitted to an analytic
head so that its zero level set is head-like) and a release-size deformation network (compress
mode, 6 x 512, 200-dim expression latents) with random weights, its last layer scaled so that the
offsets on the head have the size of real expressions. Observations: surface points of the
analytic head posed by the deformation with random expression latents (2500 points each, like
the single-view observations). One step = draw 5 observations x 1000 points (release sampling),
root finding, implicit correction, loss, backward.

* baseline: :func:`nphm.reference.fitting.reference_joint_loss` (per-point condition copies,
  Broyden over all points every iteration, Jacobians by backward passes, every ensemble member on
  every point, parameters requiring grad as in the release);
* ours: :func:`nphm.fitting.joint.joint_loss` (distinct points only, active-set Broyden,
  Jacobians sharing the primal pass, one SDF pass, sparse ensemble queries, latent parts of the
  MLPs precomputed, implicit pass only for points that can enter the loss, frozen parameters),
  timed twice: with the release's cold start of the root finding (every point starts at the
  observation) and with warm starts (:class:`nphm.fitting.implicit.RootCache`, the default
  during a fit), whose cache holds the roots of the ``warm_steps`` fitting steps run before.

A third timing of ours, "ours_fast", uses the approximate Jacobians
(:meth:`BroydenSettings.approximate`: Broyden's last inverse-Jacobian estimate in the implicit step instead of
the exact one at the roots, bfloat16 tangents for the Jacobian at the observations); its roots
and loss are the same, its latent gradients differ by what the benchmark prints.

The whole fit (:func:`run_whole_fit`) fits the same person from zero latents with the release's
schedule (``steps`` < 1000 compresses it), once per variant on the same draws: the straightforward
loop of :func:`nphm.reference.fitting.reference_joint_loss`, ours and ours_fast, and meshes every
expression (canonical mesh at the resolution, posed by each expression latent) for ours.

The timed step is a step during a fit: the first ``warm_steps`` steps of a fit with ours are run
first from the given latents (random weights: the latents that made the
observations; trained models: zero latents), and all implementations are then timed at the
latents reached, on the same draws, alternating, best of ``repeats``. The warm
timing always starts from a copy of the cache as the previous steps left it.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from nphm.analytic import head_sdf
from nphm.experiments.speed import SpeedSettings, load_or_fit
from nphm.experiments.timing import peak_memory_mb, synchronize, time_call
from nphm.fitting.implicit import ForwardDeformation, RootCache, find_canonical
from nphm.fitting.joint import ObservationSet, fit_joint, frozen, joint_loss
from nphm.reference.fitting import reference_joint_loss
from nphm.fitting.meshing import mesh_fit
from nphm.fitting.schedule import FittingSettings
from nphm.mesh import extract_mesh
from nphm.models import NPHMDeformation
from nphm.reconstruction import FITTING_BOUNDS
from nphm.utils.tables import markdown_table


@dataclass
class StepBenchmarkSettings:
    n_observations: int = 8  # observations of the person (expressions)
    points_per_observation: int = 2500  # size of each observation
    offset_size: float = 0.04  # mean |offset| of the deformation on the head (nphm units; 10 mm)
    expr_std: float = 0.05
    clamp_step: int = 0  # release step whose SDF clamp / weights the step uses
    warm_steps: int = 20  # fitting steps run before the timed one (from the true latents)
    repeats: int = 3
    seed: int = 0


@dataclass
class StepBenchmarkResults:
    settings: Dict = field(default_factory=dict)
    device: str = "cpu"
    seconds: Dict[str, float] = field(default_factory=dict)
    ratio: float = float("nan")  # straightforward / ours with warm starts (a step during a fit)
    ratio_cold: float = float("nan")  # straightforward / ours with the release's cold start
    ratio_fast: float = float("nan")  # straightforward / ours warm with the approximate Jacobians
    loss: Dict[str, float] = field(default_factory=dict)
    grad_rel_diff: Dict[str, float] = field(default_factory=dict)
    converged: Dict[str, float] = field(default_factory=dict)
    ours_stats: Dict[str, Dict[str, float]] = field(default_factory=dict)
    mean_offset: float = float("nan")
    peak_memory_mb: float = float("nan")  # process peak (RSS on CPU) after the timed steps


def release_size_deformation(device: torch.device, offset_size: float, probe: torch.Tensor, z_id: torch.Tensor,
                             anchors: torch.Tensor, z_ex: torch.Tensor) -> NPHMDeformation:
    """Release-size compress-mode deformation network, last layer scaled to ``offset_size``."""
    model = NPHMDeformation().to(device).eval()
    with torch.no_grad():
        mag = model(probe[None], z_id, z_ex[:1], anchors).norm(dim=-1).mean()
        model.defDeepSDF.lin6.weight.mul_(offset_size / float(mag))
        model.defDeepSDF.lin6.bias.mul_(offset_size / float(mag))
    return model


@dataclass
class ReleaseSizeSetup:
    """Release-size networks with random weights and the observations of one person."""

    identity: torch.nn.Module
    deformation: torch.nn.Module
    observations: List[torch.Tensor]  # E x (N, 3), nphm frame
    z_id: torch.Tensor  # (D_id,) the latent of the head
    z_ex: torch.Tensor  # (E, D_ex) the expression latents that made the observations
    mean_offset: float  # mean |offset| of the first observation (nphm units)


def release_size_setup(settings: StepBenchmarkSettings, device: torch.device, cache: Optional[Path] = None,
                       progress: bool = True) -> ReleaseSizeSetup:
    """The networks and observations of the step benchmark and the whole fit (module docstring)."""
    identity, z_id, _ = load_or_fit(SpeedSettings(), device, cache, refit=False, progress=progress)
    z_id = z_id[0]
    g = torch.Generator().manual_seed(settings.seed)
    head = extract_mesh(head_sdf, *FITTING_BOUNDS, resolution=96, device="cpu")
    verts = torch.as_tensor(np.asarray(head.vertices), dtype=torch.float32)
    front = verts[verts[:, 2] > -0.1]
    with torch.no_grad():
        anchors = identity.anchors(z_id[None])
    z_ex = (torch.randn(settings.n_observations, 200, generator=g) * settings.expr_std).to(device)
    deformation = release_size_deformation(device, settings.offset_size, front.to(device), z_id[None], anchors, z_ex)
    observations = []
    with torch.no_grad():
        for i in range(settings.n_observations):
            x = front[torch.randint(0, len(front), (settings.points_per_observation,), generator=g)].to(device)
            off = deformation(x[None], z_id[None], z_ex[i:i + 1], anchors)[0]
            observations.append(x + off)
            if i == 0:
                mean_offset = float(off.norm(dim=-1).mean())
    return ReleaseSizeSetup(identity, deformation, observations, z_id, z_ex, mean_offset)


def run_step_benchmark(settings: StepBenchmarkSettings, device: torch.device, cache: Optional[Path] = None,
                       progress: bool = True) -> StepBenchmarkResults:
    """Time one fitting step both ways (see the module docstring)."""
    res = StepBenchmarkResults(settings=asdict(settings), device=str(device))
    setup = release_size_setup(settings, device, cache, progress)
    identity, deformation, observations = setup.identity, setup.deformation, setup.observations
    z_id, z_ex, res.mean_offset = setup.z_id, setup.z_ex, setup.mean_offset
    # the warm-up steps start at the latents that made the observations: the timed step is one
    # late in a fit, with expression offsets of full size (from zero latents the offsets, and
    # with them the root finding, would still be trivially small after a few steps)
    return compare_step(identity, deformation, observations, z_id, z_ex, FittingSettings(), settings.clamp_step,
                        settings.repeats, settings.seed, res, warm_steps=settings.warm_steps)


def warm_up(
    identity: torch.nn.Module,
    deformation: torch.nn.Module,
    observations: List[torch.Tensor],
    z_id: torch.Tensor,
    z_ex: torch.Tensor,
    fs: FittingSettings,
    steps: int,
    generator: torch.Generator,
):
    """Run the first ``steps`` steps of a fit (:func:`nphm.fitting.joint.fit_joint`) from the
    latents ``z_id`` (D_id,), ``z_ex`` (E, D_ex); returns the latents reached and the root cache
    the steps filled (over the concatenated ``observations``)."""
    cache = RootCache(sum(len(o) for o in observations), device=z_id.device)
    fit = fit_joint(identity, deformation, observations, fs.replace(steps=steps, step_scale=1.0), generator,
                    progress=False, init=(z_id, z_ex), root_cache=cache)
    return fit.z_id, fit.z_ex, cache


def compare_step(
    identity: torch.nn.Module,
    deformation: torch.nn.Module,
    observations: List[torch.Tensor],
    z_id: torch.Tensor,
    z_ex: torch.Tensor,
    fs: FittingSettings,
    step: int = 0,
    repeats: int = 3,
    seed: int = 0,
    res: Optional[StepBenchmarkResults] = None,
    warm_steps: int = 20,
) -> StepBenchmarkResults:
    """Time one step of the implementations on the same draws from ``observations`` (E point
    clouds), with the settings of release step ``step`` (SDF clamp, weights), after
    ``warm_steps`` fitting steps from the latents ``z_id`` (D_id,), ``z_ex`` (E, D_ex)."""
    res = res or StepBenchmarkResults(device=str(z_id.device))
    g = torch.Generator().manual_seed(seed)
    z_id, z_ex, cache = warm_up(identity, deformation, observations, z_id, z_ex, fs, warm_steps, g)
    obs = ObservationSet(observations, device=z_id.device)
    obs_idx, point_idx = obs.draw(fs.observations_per_step, fs.points_per_observation, g)
    clamp, lambdas = fs.clamp_at(step), fs.lambdas_at(step)
    zi = z_id.detach().clone().requires_grad_(True)
    ze = z_ex.detach().clone().requires_grad_(True)
    out: Dict[str, object] = {}
    params = list(identity.parameters()) + list(deformation.parameters())
    flags = [p.requires_grad for p in params]

    caches = [cache.copy() for _ in range(2 * repeats + 1)]
    fast = fs.broyden.approximate()

    def ours(warm: bool, approximate: bool = False):
        name = "ours_fast" if approximate else "ours_warm" if warm else "ours"
        root_cache = caches.pop() if warm else None
        with frozen(identity, deformation, eval_mode=(False, True)):
            step_loss = joint_loss(identity, deformation, zi, ze, obs, obs_idx, point_idx, clamp, lambdas,
                                   fast if approximate else fs.broyden, fs.unobserved_local_latents,
                                   root_cache=root_cache)
            step_loss.backward()
        out[name] = (float(step_loss.total.detach()), (zi.grad.clone(), ze.grad.clone()), step_loss.stats)
        zi.grad = None
        ze.grad = None

    def baseline():
        for p in params:
            p.requires_grad_(True)  # the release never freezes the networks
        deformation.eval()
        total, terms, converged = reference_joint_loss(identity, deformation, zi, ze, obs.points[point_idx], obs_idx,
                                                       clamp, lambdas, fs.broyden, fs.unobserved_local_latents)
        total.backward(inputs=[zi, ze] + params)
        out["baseline"] = (float(total.detach()), (zi.grad.clone(), ze.grad.clone()), float(converged.float().mean()))
        zi.grad = None
        ze.grad = None
        for p, f in zip(params, flags):
            p.grad = None
            p.requires_grad_(f)

    device = z_id.device
    best = {"ours": float("inf"), "ours_warm": float("inf"), "ours_fast": float("inf"), "baseline": float("inf")}
    ours(False)  # warm-up (lazy imports, allocator)
    for _ in range(repeats):
        best["baseline"] = min(best["baseline"], time_call(baseline, device, repeats=1, warmup=0))
        best["ours"] = min(best["ours"], time_call(lambda: ours(False), device, repeats=1, warmup=0))
        best["ours_warm"] = min(best["ours_warm"], time_call(lambda: ours(True), device, repeats=1, warmup=0))
        best["ours_fast"] = min(best["ours_fast"], time_call(lambda: ours(True, True), device, repeats=1, warmup=0))
    res.seconds = best
    res.ratio = best["baseline"] / best["ours_warm"]
    res.ratio_cold = best["baseline"] / best["ours"]
    res.ratio_fast = best["baseline"] / best["ours_fast"]
    total_b, grads_b, conv_b = out["baseline"]
    res.loss = {"baseline": total_b}
    den = sum(float(b.norm()) for b in grads_b)
    res.grad_rel_diff = {}
    for name in ("ours", "ours_warm", "ours_fast"):
        total_o, grads_o, stats = out[name]
        res.loss[name] = total_o
        res.grad_rel_diff[name] = sum(float((a - b).norm()) for a, b in zip(grads_o, grads_b)) / max(den, 1e-30)
        res.converged[name] = stats.converged_fraction
        res.ours_stats[name] = {"distinct_points": stats.n_distinct, "drawn_points": stats.n_drawn,
                                "broyden_iterations": stats.broyden_iterations,
                                "broyden_evaluations": stats.broyden_evaluations,
                                "warm_fraction": stats.warm_fraction, "in_clamp": stats.in_clamp_fraction}
    res.converged["baseline"] = conv_b
    res.peak_memory_mb = peak_memory_mb(device)
    return res


def compare_step_on_subject(cfg_path: Path, subject: Optional[int], device: torch.device, warm_steps: int = 100,
                            step: int = 300, repeats: int = 2, data_dir=None, single_view_dir=None,
                            experiment_dir=None) -> StepBenchmarkResults:
    """One step of both implementations with the trained models of a fitting config on a test
    subject's observations, at the latents reached after ``warm_steps`` of fitting (a state in
    the middle of a fit, not the trivial zero start) and with the settings of release ``step``."""
    from nphm.data import DataManager
    from nphm.experiments.stages import load_fitting_run
    from nphm.layout import subject_observations

    cfg, models, device = load_fitting_run(cfg_path, experiment_dir, device, seed=None)
    settings = cfg.settings
    if models.deformation is None:
        raise ValueError(f"{cfg_path} names no expression model: nothing to compare")
    manager = DataManager(data_dir, None, single_view_dir)
    if subject is None:
        subject = manager.subjects("test")[0]
    _, observations = subject_observations(manager, subject)
    obs = [torch.as_tensor(o, dtype=torch.float32, device=device) for o in observations]
    res = StepBenchmarkResults(settings={"config": str(cfg_path), "subject": subject, "warm_steps": warm_steps,
                                         "step": step}, device=str(device))
    z_id = torch.zeros(models.identity.lat_dim, device=device)
    z_ex = torch.zeros(len(obs), models.deformation.lat_dim_expr, device=device)
    return compare_step(models.identity, models.deformation, obs, z_id, z_ex, settings, step, repeats, res=res,
                        warm_steps=warm_steps)


def format_step_results(r: StepBenchmarkResults) -> str:
    cold, warm, fast = r.ours_stats["ours"], r.ours_stats["ours_warm"], r.ours_stats["ours_fast"]
    rows = [["straightforward (release-style)", f"{r.seconds['baseline']:.2f}", "1.0x", "all points every iteration",
             f"{r.converged['baseline']:.3f}"],
            ["ours, cold start (release protocol)", f"{r.seconds['ours']:.2f}", f"{r.ratio_cold:.1f}x",
             f"{cold['broyden_iterations']} ({cold['broyden_evaluations']:.1f} per point)",
             f"{r.converged['ours']:.3f}"],
            ["ours, warm start (default)", f"{r.seconds['ours_warm']:.2f}", f"{r.ratio:.1f}x",
             f"{warm['broyden_iterations']} ({warm['broyden_evaluations']:.1f} per point)",
             f"{r.converged['ours_warm']:.3f}"],
            ["ours, warm, Broyden's J^-1 in the implicit step, bf16 tangents", f"{r.seconds['ours_fast']:.2f}",
             f"{r.ratio_fast:.1f}x", f"{fast['broyden_iterations']} ({fast['broyden_evaluations']:.1f} per point)",
             f"{r.converged['ours_fast']:.3f}"]]
    if np.isfinite(r.mean_offset):
        head = (f"Device: {r.device}. One joint fitting step at release sizes ({cold['drawn_points']} drawn "
                f"points, {cold['distinct_points']} distinct) after {r.settings.get('warm_steps')} fitting steps, "
                f"random weights, deformation offsets {r.mean_offset:.3f} nphm ({r.mean_offset * 250:.1f} mm) "
                f"on average.")
    else:
        head = (f"Device: {r.device}. One joint fitting step with {r.settings.get('config')} on subject "
                f"{r.settings.get('subject')} after {r.settings.get('warm_steps')} fitting steps "
                f"({cold['drawn_points']} drawn points, {cold['distinct_points']} distinct).")
    return "\n".join([
        head,
        "",
        markdown_table(["implementation", "seconds / step", "speed-up", "Broyden iterations (evaluations)",
                        "converged fraction"], rows, cell=str),
        "",
        f"Loss: baseline {r.loss['baseline']:.6f}, ours cold {r.loss['ours']:.6f}, warm {r.loss['ours_warm']:.6f}; "
        f"relative difference of the latent gradients to the baseline: cold {r.grad_rel_diff['ours']:.1e}, "
        f"warm {r.grad_rel_diff['ours_warm']:.1e}, approximate Jacobians {r.grad_rel_diff['ours_fast']:.1e} "
        f"(loss {r.loss['ours_fast']:.6f}). Warm-started points: {100 * warm['warm_fraction']:.1f}%; "
        f"points within the SDF clamp: {100 * warm['in_clamp']:.1f}%. Peak memory of the process so far: "
        f"{r.peak_memory_mb:,.0f} MB.",
    ])


def time_subject_fit(cfg_path: Path, subject: Optional[int], device: torch.device, out_dir: Path,
                     data_dir=None, single_view_dir=None, experiment_dir=None, steps: Optional[int] = None,
                     resolution: int = 256) -> Dict[str, object]:
    """Fit one test subject with a fitting config (the first test subject by default) and
    return its timings; raises when the models or the data are missing."""
    from nphm.data import DataManager
    from nphm.experiments.stages import load_fitting_run
    from nphm.fitting.pipeline import fit_subject

    cfg, models, device = load_fitting_run(cfg_path, experiment_dir, device, seed=None, steps=steps)
    settings = cfg.settings
    manager = DataManager(data_dir, None, single_view_dir)
    if subject is None:
        subject = manager.subjects("test")[0]
    outcome = fit_subject(manager, models, subject, settings, out_dir, resolution=resolution, figure=False)
    return {"config": str(cfg_path), "subject": subject, "expressions": len(outcome.expressions),
            "steps": settings.n_iterations, "minutes_fit": outcome.seconds_fit / 60,
            "minutes_total": outcome.seconds / 60,
            "seconds_per_step": outcome.seconds_fit / max(1, settings.n_iterations)}


# ------------------------------------------------------------------------------------ a whole fit
@dataclass
class WholeFitSettings:
    """A whole fit of the person of the step benchmark (8 expressions), from zero latents."""

    steps: int = 1000  # optimisation steps; fewer than the release's 1000 compress its schedule
    resolution: int = 256  # marching cubes of the canonical mesh (then posed to every expression)
    variants: Tuple[str, ...] = ("straightforward", "ours", "ours_fast")
    eval_points: int = 1000  # points per observation of the final-loss evaluation
    seed: int = 0


def _straightforward_fit(setup: ReleaseSizeSetup, fs: FittingSettings, generator: torch.Generator):
    """The release's loop with :func:`nphm.reference.fitting.reference_joint_loss` (same draws
    and schedule as :func:`nphm.fitting.joint.fit_joint`); returns ``(z_id, z_ex)``."""
    identity, deformation = setup.identity, setup.deformation
    obs = ObservationSet(setup.observations, device=setup.z_id.device)
    zi = torch.zeros_like(setup.z_id).requires_grad_(True)
    ze = torch.zeros_like(setup.z_ex).requires_grad_(True)
    opt = torch.optim.Adam([zi, ze], lr=fs.lr)
    params = list(identity.parameters()) + list(deformation.parameters())
    flags = [p.requires_grad for p in params]
    training = deformation.training
    deformation.eval()
    try:
        for p in params:
            p.requires_grad_(True)  # the release never freezes the networks
        for it in range(fs.n_iterations):
            step = fs.schedule_step(it)
            opt.param_groups[0]["lr"] = fs.lr_at(step)
            opt.zero_grad(set_to_none=True)
            obs_idx, point_idx = obs.draw(fs.observations_per_step, fs.points_per_observation, generator)
            total, _, _ = reference_joint_loss(identity, deformation, zi, ze, obs.points[point_idx], obs_idx,
                                               fs.clamp_at(step), fs.lambdas_at(step), fs.broyden,
                                               fs.unobserved_local_latents)
            total.backward(inputs=[zi, ze] + params)
            opt.step()
            for p in params:
                p.grad = None
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)
        deformation.train(training)
    return zi.detach(), ze.detach()


def final_loss(setup: ReleaseSizeSetup, z_id: torch.Tensor, z_ex: torch.Tensor, fs: FittingSettings,
               n_points: int, seed: int) -> Tuple[float, float, torch.Tensor, torch.Tensor]:
    """The loss at the end of the schedule on one fixed draw of every observation, computed the
    exact way (cold start, exact Jacobians, every ensemble member); returns ``(loss,
    converged fraction, roots (n, 3), converged (n,))`` of the draw's distinct points."""
    obs = ObservationSet(setup.observations, device=z_id.device)
    g = torch.Generator().manual_seed(seed + 17)
    obs_idx = torch.arange(len(obs), device=z_id.device)
    u = torch.rand(len(obs), n_points, generator=g, dtype=torch.float64).to(z_id.device)
    local = (u * obs.counts[:, None]).long().clamp_max(obs.counts[:, None] - 1)
    point_idx = obs.offsets[:, None] + local  # every observation once
    last = fs.schedule_step(max(0, fs.n_iterations - 1))
    exact = dataclasses.replace(fs.broyden, jacobian="backward", implicit_jacobian="exact", warm_start=False)
    with frozen(setup.identity, setup.deformation, eval_mode=(False, True)), torch.no_grad():
        uniq = torch.unique(point_idx)
        own = obs.owner[uniq]
        groups, group = torch.unique(own, sorted=True, return_inverse=True)
        anchors = setup.identity.anchors(z_id[None])
        forward = ForwardDeformation(setup.deformation, z_id[None].expand(len(groups), -1), z_ex[groups],
                                     None if anchors is None else anchors.expand(len(groups), -1, -1), "backward")
        roots = find_canonical(forward, obs.points[uniq], group, exact)
    zi, ze = z_id.clone().requires_grad_(True), z_ex.clone().requires_grad_(True)
    with frozen(setup.identity, setup.deformation, eval_mode=(False, True)):
        loss = joint_loss(setup.identity, setup.deformation, zi, ze, obs, obs_idx, point_idx, fs.clamp_at(last),
                          fs.lambdas_at(last), exact, fs.unobserved_local_latents, query_mode="exact")
    return float(loss.total.detach()), loss.stats.converged_fraction, roots.canonical, roots.converged


def run_whole_fit(settings: WholeFitSettings, setup: ReleaseSizeSetup, device: torch.device,
                  progress: bool = True, fitting_overrides: Optional[Dict[str, object]] = None) -> Dict[str, object]:
    """Fit the person of ``setup`` from zero latents with every variant on the same draws and mesh
    every expression at ``settings.resolution`` (not the straightforward variant: its dense
    naive meshing would take hours, the query benchmark measures it); returns the timings,
    final losses and root agreement (to the first variant). ``fitting_overrides``: other
    :class:`FittingSettings` fields than the release's (small tests)."""
    fs = FittingSettings(step_scale=settings.steps / FittingSettings().steps, **(fitting_overrides or {}))
    rows: List[Dict[str, object]] = []
    roots0 = None
    for variant in settings.variants:
        g = torch.Generator().manual_seed(settings.seed)
        run = fs if variant != "ours_fast" else fs.replace(broyden=fs.broyden.approximate())
        synchronize(device)
        start = time.perf_counter()
        if variant == "straightforward":
            z_id, z_ex = _straightforward_fit(setup, run, g)
        else:
            fit = fit_joint(setup.identity, setup.deformation, setup.observations, run, g, progress=progress,
                            desc=f"whole fit ({variant})")
            z_id, z_ex = fit.z_id, fit.z_ex
        synchronize(device)
        fit_s = time.perf_counter() - start
        row: Dict[str, object] = {"variant": variant, "steps": run.n_iterations, "seconds_fit": fit_s}
        if variant != "straightforward":
            start = time.perf_counter()
            canonical, posed = mesh_fit(setup.identity, setup.deformation, z_id, z_ex, settings.resolution,
                                        FITTING_BOUNDS, mode="traced")
            synchronize(device)
            row["seconds_meshing"] = time.perf_counter() - start
            row["vertices"] = len(canonical.vertices)
            row["meshes"] = len(posed)
        row["loss"], row["converged"], roots, conv = final_loss(setup, z_id, z_ex, run, settings.eval_points,
                                                                settings.seed)
        if roots0 is None:
            roots0 = (roots, conv)
        else:
            both = conv & roots0[1]
            dist = (roots - roots0[0]).norm(dim=-1)[both]
            row["root_distance_max"] = float(dist.max()) if dist.numel() else float("nan")
            row["root_distance_mean"] = float(dist.mean()) if dist.numel() else float("nan")
            row["loss_rel_diff"] = abs(row["loss"] - rows[0]["loss"]) / abs(rows[0]["loss"])
        row["peak_memory_mb"] = peak_memory_mb(device)
        rows.append(row)
        if progress:
            print(f"whole fit {variant}: {row}", flush=True)
    return {"settings": asdict(settings), "device": str(device), "rows": rows}


def format_whole_fit(r: Dict[str, object]) -> str:
    """Markdown table of :func:`run_whole_fit`."""
    rows = r["rows"]
    ref = rows[0]
    table = []
    for row in rows:
        mesh = row.get("seconds_meshing")
        total = row["seconds_fit"] + (mesh or 0.0)
        table.append([
            row["variant"], row["steps"], f"{row['seconds_fit']:.0f}", f"{ref['seconds_fit'] / row['seconds_fit']:.1f}x",
            "-" if mesh is None else f"{mesh:.0f}", "-" if mesh is None else f"{total / 60:.1f}",
            f"{row['loss']:.5f}", f"{100 * row.get('loss_rel_diff', 0.0):.2f}%",
            f"{row['converged']:.3f}", f"{row.get('root_distance_mean', 0.0):.1e} / {row.get('root_distance_max', 0.0):.1e}",
            f"{row['peak_memory_mb']:,.0f}",
        ])
    s = r["settings"]
    return "\n".join([
        f"Device: {r['device']}. Whole fit of one person (8 expressions x 2500 points) from zero latents, "
        f"{ref['steps']} steps (the release's schedule{'' if ref['steps'] == 1000 else ', compressed'}), "
        f"5 x 1000 drawn points per step; meshing: the canonical mesh at {s['resolution']}^3 posed to every expression.",
        "",
        markdown_table(["fit", "steps", "fit s", "fit speed-up", "meshing s", "total min", "final loss",
                        f"vs {ref['variant']}", "converged", "root distance mean / max", "peak MB"], table, cell=str),
        "",
        "Final loss: the loss at the end of the schedule on one fixed draw of 1000 points per observation, computed "
        "the exact way for every fit; root distance: between the canonical correspondences of those points "
        f"under each fit's latents and under the {ref['variant']} fit's.",
    ])
