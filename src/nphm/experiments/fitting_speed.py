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

The timed step is a step during a fit: the first ``warm_steps`` steps of a fit with ours are run
first from the given latents (random weights: the latents that made the
observations; trained models: zero latents), and all implementations are then timed at the
latents reached, on the same draws, alternating, best of ``repeats``. The warm
timing always starts from a copy of the cache as the previous steps left it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

from nphm.analytic import head_sdf
from nphm.experiments.speed import SpeedSettings, load_or_fit
from nphm.experiments.timing import time_call
from nphm.fitting.implicit import RootCache
from nphm.fitting.joint import ObservationSet, fit_joint, frozen, joint_loss
from nphm.reference.fitting import reference_joint_loss
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
    loss: Dict[str, float] = field(default_factory=dict)
    grad_rel_diff: Dict[str, float] = field(default_factory=dict)
    converged: Dict[str, float] = field(default_factory=dict)
    ours_stats: Dict[str, Dict[str, float]] = field(default_factory=dict)
    mean_offset: float = float("nan")


def release_size_deformation(device: torch.device, offset_size: float, probe: torch.Tensor, z_id: torch.Tensor,
                             anchors: torch.Tensor, z_ex: torch.Tensor) -> NPHMDeformation:
    """Release-size compress-mode deformation network, last layer scaled to ``offset_size``."""
    model = NPHMDeformation().to(device).eval()
    with torch.no_grad():
        mag = model(probe[None], z_id, z_ex[:1], anchors).norm(dim=-1).mean()
        model.defDeepSDF.lin6.weight.mul_(offset_size / float(mag))
        model.defDeepSDF.lin6.bias.mul_(offset_size / float(mag))
    return model


def run_step_benchmark(settings: StepBenchmarkSettings, device: torch.device, cache: Optional[Path] = None,
                       progress: bool = True) -> StepBenchmarkResults:
    """Time one fitting step both ways (see the module docstring)."""
    res = StepBenchmarkResults(settings=asdict(settings), device=str(device))
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
                res.mean_offset = float(off.norm(dim=-1).mean())
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

    caches = [cache.copy() for _ in range(repeats + 1)]

    def ours(warm: bool):
        name = "ours_warm" if warm else "ours"
        root_cache = caches.pop() if warm else None
        with frozen(identity, deformation, eval_mode=(False, True)):
            step_loss = joint_loss(identity, deformation, zi, ze, obs, obs_idx, point_idx, clamp, lambdas,
                                   fs.broyden, fs.unobserved_local_latents, root_cache=root_cache)
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
    best = {"ours": float("inf"), "ours_warm": float("inf"), "baseline": float("inf")}
    ours(False)  # warm-up (lazy imports, allocator)
    for _ in range(repeats):
        best["baseline"] = min(best["baseline"], time_call(baseline, device, repeats=1, warmup=0))
        best["ours"] = min(best["ours"], time_call(lambda: ours(False), device, repeats=1, warmup=0))
        best["ours_warm"] = min(best["ours_warm"], time_call(lambda: ours(True), device, repeats=1, warmup=0))
    res.seconds = best
    res.ratio = best["baseline"] / best["ours_warm"]
    res.ratio_cold = best["baseline"] / best["ours"]
    total_b, grads_b, conv_b = out["baseline"]
    res.loss = {"baseline": total_b}
    den = sum(float(b.norm()) for b in grads_b)
    res.grad_rel_diff = {}
    for name in ("ours", "ours_warm"):
        total_o, grads_o, stats = out[name]
        res.loss[name] = total_o
        res.grad_rel_diff[name] = sum(float((a - b).norm()) for a, b in zip(grads_o, grads_b)) / max(den, 1e-30)
        res.converged[name] = stats.converged_fraction
        res.ours_stats[name] = {"distinct_points": stats.n_distinct, "drawn_points": stats.n_drawn,
                                "broyden_iterations": stats.broyden_iterations,
                                "broyden_evaluations": stats.broyden_evaluations,
                                "warm_fraction": stats.warm_fraction, "in_clamp": stats.in_clamp_fraction}
    res.converged["baseline"] = conv_b
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
    cold, warm = r.ours_stats["ours"], r.ours_stats["ours_warm"]
    rows = [["straightforward (release-style)", f"{r.seconds['baseline']:.2f}", "1.0x", "all points every iteration",
             f"{r.converged['baseline']:.3f}"],
            ["ours, cold start (release protocol)", f"{r.seconds['ours']:.2f}", f"{r.ratio_cold:.1f}x",
             f"{cold['broyden_iterations']} ({cold['broyden_evaluations']:.1f} per point)",
             f"{r.converged['ours']:.3f}"],
            ["ours, warm start (default)", f"{r.seconds['ours_warm']:.2f}", f"{r.ratio:.1f}x",
             f"{warm['broyden_iterations']} ({warm['broyden_evaluations']:.1f} per point)",
             f"{r.converged['ours_warm']:.3f}"]]
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
        f"warm {r.grad_rel_diff['ours_warm']:.1e}. Warm-started points: {100 * warm['warm_fraction']:.1f}%; "
        f"points within the SDF clamp: {100 * warm['in_clamp']:.1f}%.",
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
