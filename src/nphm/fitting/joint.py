"""Fitting NPHM / NPM latents to point clouds of one person.

Joint fitting (:func:`fit_joint`): one identity latent for the person and one expression latent
per observation (a point cloud of one expression), all starting at zero, optimised with Adam.
Every step (release protocol, see :mod:`nphm.fitting.schedule` for the knobs):

1. anchors from the identity latent;
2. draw ``observations_per_step`` observations and ``points_per_observation`` points of each,
   both with replacement;
3. canonical correspondences of the drawn points by Broyden root finding
   (:func:`nphm.fitting.implicit.find_canonical`); a point drawn again starts from its last
   root (:class:`nphm.fitting.implicit.RootCache`, ``broyden.warm_start``);
4. the implicit-gradient correction (:func:`nphm.fitting.implicit.implicit_canonical`);
5. loss = surface term on the converged points within the SDF clamp + latent regularisers
   (:mod:`nphm.fitting.losses`), weighted by the scheduled lambdas.

Identity-only fitting (:func:`fit_identity`, neutral scans): the SDF is evaluated at the observed
points directly, same losses without ``reg_expr``.

Beyond the release (all off by default; the release's fit is unchanged, bit for bit):

* ``pose=`` / ``settings.pose``: the observations' similarity refined with the latents
  (:mod:`nphm.fitting.pose`); the roots then solve for the corrected points and the implicit
  gradient reaches the pose through ``dx_c/dx_obs = (I + dD/dx)^-1``;
* ``settings.surface_loss``: the robust Geman-McClure surface loss (:mod:`nphm.fitting.losses`);
* a known identity: :func:`fit_expressions` fits only expression latents (fixed ``z_id``, no
  identity regularisers), :func:`fit_sequence` ordered frames one after the other, each started
  at the previous frame's latent and optionally held near it.

Work is done once per *distinct* drawn point (draws with replacement repeat points; the loss
counts them with their multiplicity, so it is the release's loss); the SDF is evaluated once, on
the converged points, and the implicit correction only for the points within the clamp (the
others get no gradient in the release either), see :func:`joint_loss`. Model parameters are
frozen and the deformation network runs in eval mode (the release calls ``decoder_expr.eval()``;
NPHM's identity network has no train/eval difference here).
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from nphm.data.frames import Similarity
from nphm.fitting.adam import Adam
from nphm.fitting.implicit import (
    ForwardDeformation,
    RootCache,
    RootFindingResult,
    find_canonical,
    implicit_canonical,
)
from nphm.fitting.losses import (
    expression_regulariser,
    identity_regularisers,
    surface_loss,
    weighted_total_skipping_unweighted,
)
from nphm.fitting.pose import ScanPose, StartLike, prepare_pose
from nphm.fitting.schedule import BroydenSettings, FittingSettings

ArrayLike = Union[np.ndarray, torch.Tensor]
Penalty = Callable[[torch.Tensor], torch.Tensor]


class ObservationSet:
    """The observed point clouds of one person, concatenated.

    Args:
        observations: E arrays (N_i, 3) in the nphm frame (one per expression; the first may
            include the back view).
    Attributes:
        points: (T, 3); offsets, counts: (E,); owner: (T,) observation of every point.
    """

    def __init__(self, observations: Sequence[ArrayLike], device=None, dtype=torch.float32) -> None:
        if len(observations) == 0:
            raise ValueError("no observations to fit")
        tensors = []
        for i, obs in enumerate(observations):
            t = torch.as_tensor(np.asarray(obs) if not isinstance(obs, torch.Tensor) else obs)
            if t.dim() != 2 or t.shape[1] != 3:
                raise ValueError(f"observation {i}: expected (N, 3) points, got shape {tuple(t.shape)}")
            if t.shape[0] == 0:
                raise ValueError(f"observation {i}: no points")
            if not torch.isfinite(t).all():
                raise ValueError(f"observation {i}: contains NaN or infinite coordinates")
            tensors.append(t.to(device=device, dtype=dtype))
        self.points = torch.cat(tensors)
        self.counts = torch.tensor([t.shape[0] for t in tensors], device=self.points.device)
        self.offsets = torch.cumsum(self.counts, 0) - self.counts
        self.owner = torch.repeat_interleave(torch.arange(len(tensors), device=self.points.device), self.counts)

    def __len__(self) -> int:
        return int(self.counts.numel())

    def draw(
        self, n_obs: int, n_points: int, generator: Optional[torch.Generator] = None
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Draw observations and points, both with replacement (the release's sampling).

        Returns:
            ``(obs_idx (n_obs,), point_idx (n_obs, n_points))``; ``point_idx`` indexes
            :attr:`points`.
        """
        dev = self.points.device
        obs_idx = torch.randint(0, len(self), (n_obs,), generator=generator).to(dev)
        u = torch.rand(n_obs, n_points, generator=generator, dtype=torch.float64).to(dev)
        local = (u * self.counts[obs_idx, None]).long().clamp_max(self.counts[obs_idx, None] - 1)
        return obs_idx, self.offsets[obs_idx, None] + local


@contextlib.contextmanager
def frozen(*models: Optional[nn.Module], eval_mode: Sequence[bool] = ()) -> Iterator[None]:
    """Parameters do not require grad inside the block; ``eval_mode[i]`` puts model i in eval
    mode. Both are restored afterwards."""
    saved = []
    for i, m in enumerate(models):
        if m is None:
            continue
        flags = [p.requires_grad for p in m.parameters()]
        saved.append((m, flags, m.training))
        for p in m.parameters():
            p.requires_grad_(False)
        if i < len(eval_mode) and eval_mode[i]:
            m.eval()
    try:
        yield
    finally:
        for m, flags, training in saved:
            for p, f in zip(m.parameters(), flags):
                p.requires_grad_(f)
            m.train(training)


@dataclass
class StepStats:
    """Diagnostics of one loss evaluation."""

    n_drawn: int = 0
    n_distinct: int = 0
    converged_fraction: float = 1.0
    in_clamp_fraction: float = 0.0
    broyden_iterations: int = 0
    #: deformation evaluations per distinct point in the Broyden loop (the start included)
    broyden_evaluations: float = 0.0
    #: fraction of the distinct points that started from their last root (warm start)
    warm_fraction: float = 0.0


def _sdf(identity: nn.Module, points: torch.Tensor, z_id: torch.Tensor, anchors, mode: Optional[str]) -> torch.Tensor:
    """SDF (n,) of canonical points (n, 3) for one identity latent (D,)."""
    if points.shape[0] == 0:
        return points.new_zeros(0) + z_id.sum() * 0.0
    return identity(points[None], z_id[None], mode=mode, anchors=anchors)[0][0, :, 0]


def _distinct(point_idx: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Sorted distinct point indices and the multiplicity of each."""
    uniq, counts = torch.unique(point_idx.reshape(-1), sorted=True, return_counts=True)
    return uniq, counts


@dataclass
class StepLoss:
    """Loss of one fitting step.

    ``total`` is differentiable w.r.t. the latents; for joint fitting the dependence of the
    canonical points on the latents is added by :meth:`backward` in a second pass (see
    :func:`joint_loss`), so call :meth:`backward` rather than ``total.backward()``.
    """

    total: torch.Tensor
    terms: Dict[str, torch.Tensor]
    stats: StepStats
    latents: List[torch.Tensor]
    _points: Optional[torch.Tensor] = None
    _finish: Optional[Callable[[torch.Tensor], None]] = None

    def backward(self) -> None:
        """Accumulate the gradient of :attr:`total` into ``.grad`` of the latents."""
        inputs = list(self.latents) + ([self._points] if self._points is not None else [])
        # the second pass reuses the anchors' graph (shared by the SDF and the deformation)
        self.total.backward(inputs=inputs, retain_graph=self._finish is not None)
        if self._finish is not None and self._points.grad is not None:
            self._finish(self._points.grad)


def _observed(
    observations: ObservationSet, uniq: torch.Tensor, owner: torch.Tensor, pose: Optional[ScanPose]
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The observed points ``uniq`` (no graph) and, with a pose, the same corrected by it with
    the graph to the pose parameters (else None)."""
    points = observations.points[uniq]
    if pose is None:
        return points, None
    posed = pose.correct(points, owner)
    return posed.detach(), posed


def _with_pose(
    terms: Dict[str, torch.Tensor], lambdas: Dict[str, float], latents: List[torch.Tensor], pose: Optional[ScanPose]
) -> Tuple[Dict[str, torch.Tensor], Dict[str, float], List[torch.Tensor]]:
    """Terms, weights and optimised tensors with the pose prior and parameters added."""
    if pose is None:
        return terms, lambdas, latents
    return {**terms, "pose": pose.prior()}, {**lambdas, "pose": pose.settings.lambda_pose}, latents + pose.trainable()


def joint_loss(
    identity: nn.Module,
    deformation: nn.Module,
    z_id: torch.Tensor,
    z_ex: torch.Tensor,
    observations: ObservationSet,
    obs_idx: torch.Tensor,
    point_idx: torch.Tensor,
    clamp: float,
    lambdas: Dict[str, float],
    broyden_settings: BroydenSettings = BroydenSettings(),
    unobserved: Sequence[int] = (30, 31, 39),
    query_mode: Optional[str] = None,
    root_cache: Optional[RootCache] = None,
    pose: Optional[ScanPose] = None,
    penalty: Penalty = torch.abs,
) -> StepLoss:
    """Loss of one joint fitting step for given draws.

    The SDF is evaluated once, at the canonical correspondences ``x_c`` of the converged points
    taken as leaves. :meth:`StepLoss.backward` first backpropagates the loss to the latents and
    to those leaves, then sends the leaves' gradient ``g`` through the implicit correction of the
    points that enter the loss (within the clamp): ``d/dz (g . x_c'(z))`` with
    ``x_c' = x_c - J^{-1} (x_p - stopgrad(x_p))`` (:func:`implicit_canonical`). By the chain rule
    this is exactly the gradient of the release's loss ``|SDF(x_c'(z), z)|``, while the
    deformation's Jacobian and graph are only built for the points that have a gradient.

    Args:
        z_id: (D_id,) identity latent; z_ex: (E, D_ex) expression latents (requiring grad). A
            ``z_id`` that does not require grad is a known identity (:func:`fit_expressions`):
            no identity regularisers and no gradient to it.
        obs_idx: (O,) drawn observations; point_idx: (O, P) drawn points (indices into
            ``observations.points``).
        clamp: SDF threshold of the surface loss; lambdas: loss weights.
        root_cache: warm starts of the root finding (:class:`RootCache` over
            ``observations.points``); updated with this step's roots and, for the points of the
            implicit pass, the exact inverse Jacobians there (with
            ``broyden_settings.implicit_jacobian="broyden"`` the implicit pass uses Broyden's
            estimates instead, and the cache keeps them).
        pose: the pose correction of the observations (:mod:`nphm.fitting.pose`; None: the
            points as they are). The roots solve for the corrected points, the implicit pass
            adds ``dx_c/dx_obs = J^{-1}`` and the term ``pose`` (its prior, weight
            ``pose.settings.lambda_pose``) joins the loss.
        penalty: per-point surface loss (:func:`nphm.fitting.losses.surface_penalty`; default
            ``|SDF|``, the release).
    """
    anchors = identity.anchors(z_id[None])  # (1, K, 3) or None
    uniq, mult = _distinct(point_idx)
    obs_of_point = observations.owner[uniq]  # ascending, since points are stored per observation
    groups, group = torch.unique(obs_of_point, sorted=True, return_inverse=True)
    G = groups.numel()
    forward = ForwardDeformation(
        deformation,
        z_id[None].expand(G, -1),
        z_ex[groups],
        None if anchors is None else anchors.expand(G, -1, -1),
        jacobian=broyden_settings.jacobian,
    )
    start = None if root_cache is None else root_cache.starts(uniq)
    observed, posed_obs = _observed(observations, uniq, obs_of_point, pose)
    roots: RootFindingResult = find_canonical(forward, observed, group, broyden_settings, start)
    if root_cache is not None:
        root_cache.store(uniq, roots.canonical, roots.J_inv, roots.converged)
    conv = torch.nonzero(roots.converged, as_tuple=True)[0]
    weight = mult[conv]
    x_c = roots.canonical[conv].detach().requires_grad_(True)
    sdf = _sdf(identity, x_c, z_id, anchors, query_mode)
    terms = {"surface": surface_loss(sdf, weight, clamp, penalty), "reg_expr": expression_regulariser(z_ex[obs_idx])}
    if z_id.requires_grad:
        terms.update(identity_regularisers(identity, z_id, unobserved))
    terms, lambdas, latents = _with_pose(terms, lambdas, [t for t in (z_id, z_ex) if t.requires_grad], pose)
    in_clamp = sdf.detach().abs() < clamp
    conv_group = group[conv]

    def finish(grad_points: torch.Tensor) -> None:
        sel = torch.nonzero(in_clamp, as_tuple=True)[0]
        if sel.numel() == 0:
            return
        observed_sel = None if posed_obs is None else posed_obs[conv[sel]]
        estimate = roots.J_inv[conv[sel]] if broyden_settings.implicit_jacobian == "broyden" else None
        moved, J_inv = implicit_canonical(forward, x_c[sel].detach(), conv_group[sel], return_inverse=True,
                                          observed=observed_sel, J_inv=estimate)
        (grad_points[sel] * moved).sum().backward(inputs=latents)
        if root_cache is not None and estimate is None:
            index = uniq[conv[sel]]
            root_cache.store(index, x_c[sel].detach(), J_inv, torch.ones_like(index, dtype=torch.bool))

    n_drawn = point_idx.numel()
    stats = StepStats(
        n_drawn=n_drawn,
        n_distinct=int(uniq.numel()),
        converged_fraction=float(weight.sum()) / n_drawn,
        in_clamp_fraction=float(weight[in_clamp].sum()) / n_drawn,
        broyden_iterations=roots.iterations,
        broyden_evaluations=roots.evaluations / max(1, int(uniq.numel())),
        warm_fraction=roots.warm / max(1, int(uniq.numel())),
    )
    return StepLoss(weighted_total_skipping_unweighted(terms, lambdas), terms, stats, latents, x_c, finish)


def identity_loss(
    identity: nn.Module,
    z_id: torch.Tensor,
    observations: ObservationSet,
    point_idx: torch.Tensor,
    clamp: float,
    lambdas: Dict[str, float],
    unobserved: Sequence[int] = (30, 31, 39),
    query_mode: Optional[str] = None,
    pose: Optional[ScanPose] = None,
    penalty: Penalty = torch.abs,
) -> StepLoss:
    """Loss of one identity-only step: the SDF at the observed points themselves (corrected by
    ``pose`` when given; ``penalty`` as in :func:`joint_loss`)."""
    anchors = identity.anchors(z_id[None])
    uniq, mult = _distinct(point_idx)
    observed, posed_obs = _observed(observations, uniq, observations.owner[uniq], pose)
    sdf = _sdf(identity, observed if posed_obs is None else posed_obs, z_id, anchors, query_mode)
    terms = {"surface": surface_loss(sdf, mult, clamp, penalty)}
    terms.update(identity_regularisers(identity, z_id, unobserved))
    terms, lambdas, latents = _with_pose(terms, lambdas, [z_id], pose)
    n = point_idx.numel()
    in_clamp = float(mult[sdf.detach().abs() < clamp].sum()) / n
    stats = StepStats(n_drawn=n, n_distinct=int(uniq.numel()), converged_fraction=1.0, in_clamp_fraction=in_clamp)
    return StepLoss(weighted_total_skipping_unweighted(terms, lambdas), terms, stats, latents)


@dataclass
class FitResult:
    """Fitted latents of one person.

    Attributes:
        z_id: (D_id,) identity latent (the given one for :func:`fit_expressions`).
        z_ex: (E, D_ex) expression latents in the order of the observations (None for
            identity-only fitting).
        anchors: (K, 3) anchors of ``z_id`` (None for NPM).
        history: one dict per step: ``loss``, every term, ``converged`` and ``in_clamp`` (fractions of
            the drawn points), ``lr``, ``broyden_iterations`` (most any point needed) and
            ``broyden_evaluations`` (per point, on average), ``warm`` (fraction of the distinct
            points started from their last root); with pose refinement also ``pose`` (the
            prior), ``pose_rotation_deg``, ``pose_translation`` (nphm units) and
            ``pose_scale`` of the correction of pose 0; :func:`fit_sequence` adds ``frame``.
        seconds: wall time of the optimisation.
        poses: with a start pose or pose refinement, the final similarity input -> nphm of every
            observation (:mod:`nphm.fitting.pose`); None for the release's fit.
    """

    z_id: torch.Tensor
    z_ex: Optional[torch.Tensor]
    anchors: Optional[torch.Tensor]
    history: List[Dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    poses: Optional[List[Similarity]] = None


def _postfix(terms: Dict[str, torch.Tensor], stats: StepStats, joint: bool) -> Dict[str, str]:
    short = {"surface": "surf", "reg_expr": "ex", "reg_global": "glob", "reg_loc": "loc",
             "reg_unobserved": "unobs", "symm_dist": "symm"}
    out = {short.get(k, k): f"{float(v.detach()):.2e}" for k, v in terms.items()}
    if joint:
        out["conv"] = f"{stats.converged_fraction:.3f}"
    return out


def _pose_record(pose: ScanPose) -> Dict[str, float]:
    with torch.no_grad():
        return {"pose_rotation_deg": float(pose.rotvec[0].norm()) * 180.0 / np.pi,
                "pose_translation": float(pose.translation[0].norm()),
                "pose_scale": float(torch.exp(pose.log_scale[0]))}


def _optimise(
    loss_fn: Callable[[int, FittingSettings], StepLoss],
    params: List[torch.Tensor],
    settings: FittingSettings,
    progress: bool,
    desc: str,
    joint: bool,
    pose: Optional[ScanPose] = None,
) -> Tuple[List[Dict[str, float]], float]:
    """Adam over ``params`` with the scheduled lr; a pose's parameters form a second group with
    lr ``pose.settings.lr`` decayed alike, frozen before release step ``pose.settings.start_step``."""
    opt = Adam(params, lr=settings.lr)
    pose_groups = [] if pose is None else pose.param_groups()
    for group in pose_groups:
        opt.add_param_group(dict(group, base_lr=group["lr"]))
    history: List[Dict[str, float]] = []
    start = time.perf_counter()
    bar = tqdm(range(settings.n_iterations), desc=desc, disable=not progress, dynamic_ncols=True)
    for it in bar:
        step = settings.schedule_step(it)
        lr = settings.lr_at(step)
        opt.param_groups[0]["lr"] = lr
        for group in opt.param_groups[1:]:
            group["lr"] = group["base_lr"] * settings.lr_decay_at(step)
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(step, settings)
        loss.backward()
        if pose_groups and step < pose.settings.start_step:
            for p in pose.parameters():
                p.grad = None  # Adam skips them
        opt.step()
        record = {"loss": float(loss.total.detach()), **{k: float(v.detach()) for k, v in loss.terms.items()},
                  "converged": loss.stats.converged_fraction, "in_clamp": loss.stats.in_clamp_fraction, "lr": lr,
                  "broyden_iterations": loss.stats.broyden_iterations,
                  "broyden_evaluations": loss.stats.broyden_evaluations, "warm": loss.stats.warm_fraction}
        if pose is not None:
            record.update(_pose_record(pose))
        history.append(record)
        if progress:
            bar.set_postfix(_postfix(loss.terms, loss.stats, joint), refresh=False)
    return history, time.perf_counter() - start


def _check_finite(result_tensors: Sequence[Optional[torch.Tensor]]) -> None:
    for t in result_tensors:
        if t is not None and not torch.isfinite(t).all():
            raise FloatingPointError("fitting produced non-finite latents (diverged)")


def _final_poses(start: StartLike, starts: List[Similarity], pose: Optional[ScanPose]) -> Optional[List[Similarity]]:
    if pose is not None:
        _check_finite(list(pose.parameters()))
        return pose.similarities()
    return None if start is None else starts


def _latent(value: torch.Tensor, shape: Tuple[int, ...], what: str, device, requires_grad: bool = True) -> torch.Tensor:
    z = value.detach().to(device=device, dtype=torch.float32).clone().requires_grad_(requires_grad)
    if tuple(z.shape) != tuple(shape):
        raise ValueError(f"{what} must be {tuple(shape)}, got {tuple(z.shape)}")
    return z


def fit_joint(
    identity: nn.Module,
    deformation: nn.Module,
    observations: Sequence[ArrayLike],
    settings: FittingSettings = FittingSettings(),
    generator: Optional[torch.Generator] = None,
    progress: bool = True,
    query_mode: Optional[str] = None,
    desc: str = "fitting",
    init: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
    root_cache: Optional[RootCache] = None,
    pose: StartLike = None,
) -> FitResult:
    """Fit one identity latent and one expression latent per observation.

    Args:
        identity, deformation: trained models on the device the fitting runs on.
        observations: E point clouds (N_i, 3) in the nphm frame, one per expression (with
            ``pose``: in the frame the start poses map from).
        settings: release defaults unless configured otherwise.
        generator: CPU random generator of the draws (seed it for reproducible fits).
        query_mode: NPHM ensemble query mode (default: the model's, "sparse").
        init: start latents ``(z_id (D_id,), z_ex (E, D_ex))`` (default: zeros, the release's).
        root_cache: the warm-start cache to use and fill (over the concatenated observations);
            by default a new one when ``settings.broyden.warm_start``.
        pose: start alignment input -> nphm (a :class:`Similarity`, shared, or one per
            observation); refined with the latents when ``settings.pose.enabled`` (from the
            identity when None), else applied as it is. None with refinement off: the release.
    """
    device = next(identity.parameters()).device
    observations, starts, scan_pose = prepare_pose(observations, pose, settings.pose, device=device)
    obs = ObservationSet(observations, device=device)
    if init is None:
        init = (torch.zeros(identity.lat_dim), torch.zeros(len(obs), deformation.lat_dim_expr))
    z_id = init[0].detach().to(device=device, dtype=torch.float32).clone().requires_grad_(True)
    z_ex = init[1].detach().to(device=device, dtype=torch.float32).clone().requires_grad_(True)
    if z_id.shape != (identity.lat_dim,) or z_ex.shape != (len(obs), deformation.lat_dim_expr):
        raise ValueError(f"init latents must be ({identity.lat_dim},) and ({len(obs)}, {deformation.lat_dim_expr}), "
                         f"got {tuple(z_id.shape)} and {tuple(z_ex.shape)}")
    fit = _fit_deformed(identity, deformation, obs, z_id, z_ex, settings, generator, progress, query_mode, desc,
                        root_cache, scan_pose)
    fit.poses = _final_poses(pose, starts, scan_pose)
    return fit


def _fit_deformed(
    identity: nn.Module,
    deformation: nn.Module,
    obs: ObservationSet,
    z_id: torch.Tensor,
    z_ex: torch.Tensor,
    settings: FittingSettings,
    generator: Optional[torch.Generator],
    progress: bool,
    query_mode: Optional[str],
    desc: str,
    root_cache: Optional[RootCache],
    scan_pose: Optional[ScanPose],
    smooth: Optional[Tuple[float, torch.Tensor]] = None,
) -> FitResult:
    """The optimisation of :func:`fit_joint` / :func:`fit_expressions`: the latents that require
    grad (``z_id`` too, or only ``z_ex``), with ``smooth = (weight, target)`` the term
    ``smooth = mean_e |z_ex[e] - target[e]|^2``."""
    lambdas_cache: Dict[int, Dict[str, float]] = {}
    cache = root_cache
    if cache is None and settings.broyden.warm_start:
        cache = RootCache(len(obs.points), device=obs.points.device, dtype=obs.points.dtype)

    def loss_fn(step: int, s: FittingSettings):
        lambdas = lambdas_cache.setdefault(step, s.lambdas_at(step))
        obs_idx, point_idx = obs.draw(s.observations_per_step, s.points_per_observation, generator)
        loss = joint_loss(identity, deformation, z_id, z_ex, obs, obs_idx, point_idx, s.clamp_at(step), lambdas,
                          s.broyden, s.unobserved_local_latents, query_mode, cache, scan_pose, s.penalty_at(step))
        if smooth is not None:
            loss.terms["smooth"] = (z_ex - smooth[1]).square().sum(-1).mean()
            loss.total = loss.total + float(smooth[0]) * loss.terms["smooth"]
        return loss

    params = [t for t in (z_id, z_ex) if t.requires_grad]
    with frozen(identity, deformation, eval_mode=(False, True)):
        history, seconds = _optimise(loss_fn, params, settings, progress, desc, joint=True, pose=scan_pose)
        with torch.no_grad():
            anchors = identity.anchors(z_id[None])
    _check_finite(params)
    return FitResult(
        z_id=z_id.detach(),
        z_ex=z_ex.detach(),
        anchors=None if anchors is None else anchors[0].detach(),
        history=history,
        seconds=seconds,
    )


def fit_identity(
    identity: nn.Module,
    observations: Sequence[ArrayLike],
    settings: FittingSettings = FittingSettings(),
    generator: Optional[torch.Generator] = None,
    progress: bool = True,
    query_mode: Optional[str] = None,
    desc: str = "fitting identity",
    pose: StartLike = None,
) -> FitResult:
    """Fit only an identity latent to point clouds of neutral scans (no deformation); ``pose``
    as in :func:`fit_joint` (the SDF is evaluated at the corrected points)."""
    device = next(identity.parameters()).device
    observations, starts, scan_pose = prepare_pose(observations, pose, settings.pose, device=device)
    obs = ObservationSet(observations, device=device)
    z_id = torch.zeros(identity.lat_dim, device=device, requires_grad=True)

    def loss_fn(step: int, s: FittingSettings):
        _, point_idx = obs.draw(s.observations_per_step, s.points_per_observation, generator)
        return identity_loss(identity, z_id, obs, point_idx, s.clamp_at(step), s.lambdas_at(step),
                             s.unobserved_local_latents, query_mode, scan_pose, s.penalty_at(step))

    with frozen(identity):
        history, seconds = _optimise(loss_fn, [z_id], settings, progress, desc, joint=False, pose=scan_pose)
        with torch.no_grad():
            anchors = identity.anchors(z_id[None])
    _check_finite([z_id])
    return FitResult(
        z_id=z_id.detach(),
        z_ex=None,
        anchors=None if anchors is None else anchors[0].detach(),
        history=history,
        seconds=seconds,
        poses=_final_poses(pose, starts, scan_pose),
    )


def fit_expressions(
    identity: nn.Module,
    deformation: nn.Module,
    z_id: torch.Tensor,
    observations: Sequence[ArrayLike],
    settings: Optional[FittingSettings] = None,
    generator: Optional[torch.Generator] = None,
    progress: bool = True,
    query_mode: Optional[str] = None,
    desc: str = "fitting expressions",
    init: Optional[torch.Tensor] = None,
    root_cache: Optional[RootCache] = None,
    pose: StartLike = None,
    smooth_to: Optional[torch.Tensor] = None,
    lambda_smooth: float = 0.0,
) -> FitResult:
    """Fit only the expression latents of new scans of a person whose identity is known.

    The identity latent ``z_id`` (from an earlier :func:`fit_joint` / :func:`fit_identity`)
    stays fixed: the loss is the surface term and ``reg_expr`` (no identity regularisers), and
    nothing is backpropagated to ``z_id`` (the SDF's latent gradient is not needed). With the
    identity settled, a third of the steps reaches the joint fit's surface error
    (:meth:`FittingSettings.for_known_identity`: the schedule compressed to a third at twice the
    learning rate).

    Args:
        z_id: (D_id,) the known identity latent.
        observations: E point clouds (N_i, 3), one per expression (nphm frame, or see ``pose``).
        settings: as for :func:`fit_joint` (its identity-regulariser weights are not used);
            default ``FittingSettings().for_known_identity()`` (333 steps).
        init: (E, D_ex) start expression latents (default zeros).
        pose: start alignment / pose refinement as in :func:`fit_joint`.
        smooth_to: (E, D_ex) or (D_ex,) latents to stay near (:func:`fit_sequence`: the previous
            frame's) with the term ``smooth = mean_e |z_ex[e] - smooth_to[e]|^2`` of weight
            ``lambda_smooth``.
    Returns:
        :class:`FitResult` with ``z_id`` the given identity.
    """
    settings = FittingSettings().for_known_identity() if settings is None else settings
    device = next(identity.parameters()).device
    observations, starts, scan_pose = prepare_pose(observations, pose, settings.pose, device=device)
    obs = ObservationSet(observations, device=device)
    z_known = _latent(z_id, (identity.lat_dim,), "z_id", device, requires_grad=False)
    shape = (len(obs), deformation.lat_dim_expr)
    z_ex = _latent(torch.zeros(shape) if init is None else init, shape, "init (expression latents)", device)
    smooth = None
    if lambda_smooth and smooth_to is not None:
        smooth = (lambda_smooth, smooth_to.detach().to(device=device, dtype=torch.float32).expand(shape))
    fit = _fit_deformed(identity, deformation, obs, z_known, z_ex, settings, generator, progress, query_mode, desc,
                        root_cache, scan_pose, smooth)
    fit.poses = _final_poses(pose, starts, scan_pose)
    return fit


def fit_sequence(
    identity: nn.Module,
    deformation: nn.Module,
    z_id: torch.Tensor,
    frames: Sequence[ArrayLike],
    settings: Optional[FittingSettings] = None,
    lambda_smooth: float = 0.0,
    first_settings: Optional[FittingSettings] = None,
    generator: Optional[torch.Generator] = None,
    progress: bool = True,
    query_mode: Optional[str] = None,
    init: Optional[torch.Tensor] = None,
    pose: StartLike = None,
) -> FitResult:
    """Fit the expression latents of ordered frames of a known identity, one frame after the other.

    A warm-start chain: frame ``t`` is fitted alone (:func:`fit_expressions`), starting from
    the expression latent of frame ``t - 1`` and, with ``lambda_smooth > 0``, held near it by
    ``lambda_smooth * |z_t - z_{t-1}|^2`` (``z_{t-1}`` fixed: a causal smoothness, so frames can
    be fitted as they arrive and the cost grows linearly with their number; every step of a
    frame draws that frame's points only). Neighbouring frames differ little, so every frame
    after the first needs a short schedule (``settings``, default
    ``FittingSettings().for_known_identity()``; the first: ``first_settings``, default ``settings``).

    Args:
        z_id: (D_id,) the known identity latent.
        frames: T point clouds (N_t, 3), in temporal order.
        init: (D_ex,) start latent of the first frame (default zeros).
        pose: start alignment: one :class:`Similarity` (every frame) or one per frame. With
            ``settings.pose.enabled`` every frame refines its own pose, started from the previous
            frame's result (the given start for the first frame, or for every frame when one
            per frame is given).
    Returns:
        :class:`FitResult`: ``z_ex`` (T, D_ex) in frame order, ``history`` all frames' steps
        (with ``frame``), ``seconds`` their sum, ``poses`` one per frame (or None).
    """
    if len(frames) == 0:
        raise ValueError("no frames to fit")
    settings = FittingSettings().for_known_identity() if settings is None else settings
    per_frame = pose is not None and not isinstance(pose, Similarity)
    if per_frame and len(pose) != len(frames):
        raise ValueError(f"give one start pose or one per frame ({len(frames)}), got {len(pose)}")
    z_prev = None if init is None else init.detach().reshape(1, -1)
    start = pose
    latents, history, poses, seconds, fit = [], [], [], 0.0, None
    for t, frame in enumerate(frames):
        s = (first_settings or settings) if t == 0 else settings
        if per_frame:
            start = pose[t]
        elif fit is not None and fit.poses is not None:
            start = fit.poses[0]
        fit = fit_expressions(identity, deformation, z_id, [frame], s, generator, progress, query_mode,
                              f"frame {t}", init=z_prev, pose=start,
                              smooth_to=z_prev if t > 0 else None, lambda_smooth=lambda_smooth)
        z_prev = fit.z_ex
        latents.append(fit.z_ex[0])
        history.extend({**h, "frame": t} for h in fit.history)
        seconds += fit.seconds
        if fit.poses is not None:
            poses.append(fit.poses[0])
    return FitResult(
        z_id=fit.z_id,
        z_ex=torch.stack(latents),
        anchors=fit.anchors,
        history=history,
        seconds=seconds,
        poses=poses or None,
    )
