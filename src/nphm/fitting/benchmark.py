"""Speed of one joint fitting step: the straightforward release-style step vs ours.

Setting (release sizes, random weights): the NPHM identity network of the query benchmark
(:func:`nphm.benchmarks.speed.load_or_fit`: 40 members of 4 x 200, briefly fitted to an analytic
head so that its zero level set is head-like) and a release-size deformation network (compress
mode, 6 x 512, 200-dim expression latents) with random weights, its last layer scaled so that the
offsets on the head have the size of real expressions. Observations: surface points of the
analytic head posed by the deformation with random expression latents (2500 points each, like
the single-view observations). One step = draw 5 observations x 1000 points (release sampling),
root finding, implicit correction, loss, backward.

* baseline: :func:`nphm.fitting.reference.reference_joint_loss` (per-point condition copies,
  Broyden over all points every iteration, Jacobians by backward passes, every ensemble member on
  every point, parameters requiring grad as in the release);
* ours: :func:`nphm.fitting.joint.joint_loss` (distinct points only, active-set Broyden,
  Jacobians sharing the primal pass, one SDF pass, sparse ensemble queries, latent parts of the
  MLPs precomputed, implicit pass only for points that can enter the loss, frozen parameters).

Both are timed in one process on the same draws, alternating, best of ``repeats``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

from nphm.analytic import head_sdf
from nphm.benchmarks.speed import SpeedSettings, load_or_fit
from nphm.benchmarks.timing import markdown_table, time_call
from nphm.fitting.joint import ObservationSet, frozen, joint_loss
from nphm.fitting.reference import reference_joint_loss
from nphm.fitting.schedule import FittingSettings
from nphm.mesh import extract_mesh
from nphm.models import NPHMDeformation
from nphm.reconstruction import FITTING_BOUNDS


@dataclass
class StepBenchmarkSettings:
    n_observations: int = 8  # observations of the person (expressions)
    points_per_observation: int = 2500  # size of each observation
    offset_size: float = 0.04  # mean |offset| of the deformation on the head (nphm units; 10 mm)
    expr_std: float = 0.05
    clamp_step: int = 0  # release step whose SDF clamp / weights the step uses
    repeats: int = 3
    seed: int = 0


@dataclass
class StepBenchmarkResults:
    settings: Dict = field(default_factory=dict)
    device: str = "cpu"
    seconds: Dict[str, float] = field(default_factory=dict)
    ratio: float = float("nan")
    loss: Dict[str, float] = field(default_factory=dict)
    grad_rel_diff: float = float("nan")
    converged: Dict[str, float] = field(default_factory=dict)
    ours_stats: Dict[str, float] = field(default_factory=dict)
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
    return compare_step(identity, deformation, observations, z_id, z_ex, FittingSettings(), settings.clamp_step,
                        settings.repeats, settings.seed, res)


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
) -> StepBenchmarkResults:
    """Time one step of both implementations at the latents ``z_id`` (D_id,), ``z_ex`` (E, D_ex)
    on the same draws from ``observations`` (E point clouds), with the settings of release step
    ``step`` (SDF clamp, weights)."""
    res = res or StepBenchmarkResults(device=str(z_id.device))
    g = torch.Generator().manual_seed(seed)
    obs = ObservationSet(observations, device=z_id.device)
    obs_idx, point_idx = obs.draw(fs.observations_per_step, fs.points_per_observation, g)
    clamp, lambdas = fs.clamp_at(step), fs.lambdas_at(step)
    zi = z_id.detach().clone().requires_grad_(True)
    ze = z_ex.detach().clone().requires_grad_(True)
    out: Dict[str, object] = {}
    params = list(identity.parameters()) + list(deformation.parameters())
    flags = [p.requires_grad for p in params]

    def ours():
        with frozen(identity, deformation, eval_mode=(False, True)):
            step_loss = joint_loss(identity, deformation, zi, ze, obs, obs_idx, point_idx, clamp, lambdas,
                                   fs.broyden, fs.unobserved_local_latents)
            step_loss.backward()
        out["ours"] = (float(step_loss.total.detach()), (zi.grad.clone(), ze.grad.clone()), step_loss.stats)
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
    best = {"ours": float("inf"), "baseline": float("inf")}
    ours()  # warm-up (lazy imports, allocator)
    for _ in range(repeats):
        best["baseline"] = min(best["baseline"], time_call(baseline, device, repeats=1, warmup=0))
        best["ours"] = min(best["ours"], time_call(ours, device, repeats=1, warmup=0))
    res.seconds = best
    res.ratio = best["baseline"] / best["ours"]
    total_o, grads_o, stats = out["ours"]
    total_b, grads_b, conv_b = out["baseline"]
    res.loss = {"ours": total_o, "baseline": total_b}
    num = sum(float((a - b).norm()) for a, b in zip(grads_o, grads_b))
    den = sum(float(b.norm()) for b in grads_b)
    res.grad_rel_diff = num / max(den, 1e-30)
    res.converged = {"ours": stats.converged_fraction, "baseline": conv_b}
    res.ours_stats = {"distinct_points": stats.n_distinct, "drawn_points": stats.n_drawn,
                      "broyden_iterations": stats.broyden_iterations, "in_clamp": stats.in_clamp_fraction}
    return res


def compare_step_on_subject(cfg_path: Path, subject: Optional[int], device: torch.device, warm_steps: int = 30,
                            step: int = 300, repeats: int = 2, data_dir=None, single_view_dir=None,
                            experiment_dir=None) -> StepBenchmarkResults:
    """One step of both implementations with the trained models of a fitting config on a test
    subject's observations, at the latents reached after ``warm_steps`` of fitting (a state in
    the middle of a fit, not the trivial zero start) and with the settings of release ``step``."""
    from nphm.data import DataManager
    from nphm.fitting import io as fio
    from nphm.fitting.joint import fit_joint
    from nphm.fitting.pipeline import subject_observations

    cfg = fio.load_fitting_config(cfg_path)
    settings = fio.fitting_settings(cfg)
    models = fio.load_models(cfg, device, experiment_dir)
    if models.deformation is None:
        raise ValueError(f"{cfg_path} names no expression model: nothing to compare")
    manager = DataManager(data_dir, None, single_view_dir)
    if subject is None:
        subject = manager.subjects("test")[0]
    _, observations = subject_observations(manager, subject)
    warm = fit_joint(models.identity, models.deformation, observations,
                     settings.replace(steps=warm_steps, step_scale=1.0), torch.Generator().manual_seed(0),
                     progress=False)
    obs = [torch.as_tensor(o, dtype=torch.float32, device=device) for o in observations]
    res = StepBenchmarkResults(settings={"config": str(cfg_path), "subject": subject, "warm_steps": warm_steps,
                                         "step": step}, device=str(device))
    return compare_step(models.identity, models.deformation, obs, warm.z_id, warm.z_ex, settings, step, repeats,
                        res=res)


def format_step_results(r: StepBenchmarkResults) -> str:
    rows = [["straightforward (release-style)", f"{r.seconds['baseline']:.2f}", "1.0x",
             f"{r.converged['baseline']:.3f}"],
            ["ours", f"{r.seconds['ours']:.2f}", f"{r.ratio:.1f}x", f"{r.converged['ours']:.3f}"]]
    if np.isfinite(r.mean_offset):
        head = (f"Device: {r.device}. One joint fitting step at release sizes ({r.ours_stats['drawn_points']} drawn "
                f"points, {r.ours_stats['distinct_points']} distinct), random weights, deformation offsets "
                f"{r.mean_offset:.3f} nphm ({r.mean_offset * 250:.1f} mm) on average.")
    else:
        head = (f"Device: {r.device}. One joint fitting step with {r.settings.get('config')} on subject "
                f"{r.settings.get('subject')} after {r.settings.get('warm_steps')} fitting steps "
                f"({r.ours_stats['drawn_points']} drawn points, {r.ours_stats['distinct_points']} distinct).")
    return "\n".join([
        head,
        "",
        markdown_table(["implementation", "seconds / step", "speed-up", "converged fraction"], rows),
        "",
        f"Loss: ours {r.loss['ours']:.6f}, baseline {r.loss['baseline']:.6f}; relative difference of the latent "
        f"gradients {r.grad_rel_diff:.1e}. Broyden iterations (ours, most any point needed): "
        f"{r.ours_stats['broyden_iterations']}; points within the SDF clamp: {100 * r.ours_stats['in_clamp']:.1f}%.",
    ])


def time_subject_fit(cfg_path: Path, subject: Optional[int], device: torch.device, out_dir: Path,
                     data_dir=None, single_view_dir=None, experiment_dir=None, steps: Optional[int] = None,
                     resolution: int = 256) -> Dict[str, object]:
    """Fit one test subject with a fitting config (the first test subject by default) and
    return its timings; raises when the models or the data are missing."""
    from nphm.data import DataManager
    from nphm.fitting import io as fio
    from nphm.fitting.pipeline import fit_subject

    cfg = fio.load_fitting_config(cfg_path)
    if steps is not None:
        cfg["fitting"] = dict(cfg.get("fitting") or {}, steps=int(steps))
    settings = fio.fitting_settings(cfg)
    models = fio.load_models(cfg, device, experiment_dir)
    manager = DataManager(data_dir, None, single_view_dir)
    if subject is None:
        subject = manager.subjects("test")[0]
    outcome = fit_subject(manager, models, subject, settings, out_dir, resolution=resolution, figure=False)
    return {"config": str(cfg_path), "subject": subject, "expressions": len(outcome.expressions),
            "steps": settings.n_iterations, "minutes_fit": outcome.seconds_fit / 60,
            "minutes_total": outcome.seconds_total / 60,
            "seconds_per_step": outcome.seconds_fit / max(1, settings.n_iterations)}
