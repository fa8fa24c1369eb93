"""Automatic pose of a head scan without landmarks, from any orientation, with a confidence.

:func:`auto_pose` finds the similarity ``x_nphm = s * x_in @ R^T + t`` (the convention of
:mod:`nphm.data.frames`) that puts a scan in any frame, orientation and unit onto the model's
mean head:

1. **Starts.** Rotations: the 24 that map the scan's principal axes onto the mean head's (every
   permutation and sign, :func:`~nphm.fitting.alignment.candidate_rotations`) and the 60
   rotations of the icosahedral group (every rotation lies within 44 degrees of one of them:
   upright, lying, upside down, facing any side). Scale: the unit's when it is given, the ratio
   of the RMS radii of the mean head and the scan when not (any unit, any size) or when the two
   disagree by more than 25 % (:func:`start_scales`). Centroids matched.
2. **ICP** from every start (trimmed point-to-plane with scale,
   :func:`~nphm.fitting.alignment.icp`) on a subsample, ranked by the capped mean distance to
   the mean head's surface. The best ``n_refine`` *distinct* poses (rotations at least
   ``distinct_degrees`` apart) are refined by a longer ICP on more points; the best
   ``n_candidates`` distinct ones of those go on.
3. **The model decides.** With an identity model, each candidate is refined by a few Adam steps
   of its pose and of an identity latent (all candidates in one batch) on the robust SDF
   residual ``mean(min(|sdf(T x)|, cap))`` plus ``latent_weight * ||z||^2``; the candidates
   are ranked by that residual (the model's, not the mean head's: a head that is not the mean
   head still finds its pose), and the best is refined the same way for longer
   (``final_steps``), at the unit's scale on the part of the scan above the nose base
   (``final_min_y``: what the expression does not move; the reported residual is that part's).
   Without a model, by the ICP score.
4. **Confidence.** ``margin = 1 - best / second`` of the ranking losses of the best and of the
   best pose distinct from it (0: two different poses explain the scan equally well, e.g. a
   featureless blob; near 1: one pose stands out), and the residual in mm (median ``|sdf|`` of
   the points, or their median distance to the mean head without a model).
   :attr:`AutoPose.confident` is ``margin >= min_margin``, ``residual_mm <= max_residual_mm`` and
   at least ``min_inliers`` of the points within the cap.

The scale is estimated (scans in any unit, heads of any size); the unit whose scale lies
closest to it is reported (:attr:`AutoPose.unit`, with :attr:`AutoPose.size_factor`, the
estimated scale over the unit's). An estimated scale brings every head to about the mean head's
size: the points alone do not tell a large head from a mean one seen in a smaller unit. With
``keep_unit_scale`` (a declared unit that is trusted) the scale stays the unit's and only the
rotation and translation are searched, so the head keeps its own size.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from scipy.spatial.transform import Rotation
from torch import nn

from nphm.fitting.adam import Adam
from nphm.fitting.alignment import (
    UNIT_TO_NPHM, Similarity, Target, at_unit_scale, candidate_rotations, check_points, closest_unit, icp_batch,
    mm_per_nphm, rotation_angle_deg, unit_of_scale, updated_similarity,
)
from nphm.fitting.joint import frozen
from nphm.fitting.pose import rotation_exp


@dataclass(frozen=True)
class AutoPoseSettings:
    """Parameters of :func:`auto_pose` (distances in nphm units; 0.004 = 1 mm)."""

    #: coarse ICP from every start: scan points, iterations, reference surface points
    coarse_points: int = 500
    coarse_iterations: int = 10
    coarse_reference_points: int = 3000
    #: ICP of the best ``n_refine`` distinct coarse poses: scan points, iterations
    refine_points: int = 2000
    refine_iterations: int = 25
    n_refine: int = 6
    #: fraction of the point pairs every ICP step keeps
    trim: float = 0.9
    #: the ICP may change the start's scale by up to this factor
    scale_range: float = 1.5
    #: poses count as distinct when their rotations lie this far apart (degrees)
    distinct_degrees: float = 20.0
    #: the capped-distance score of the ICP (``IcpResult.score``)
    icp_cap: float = 0.05
    #: the model's stage: the best ``n_candidates`` distinct refined poses, Adam on the pose
    #: (``lr_pose``) and an identity latent (``lr_latent``, prior ``latent_weight * ||z||^2``);
    #: ``model_steps = 0``: the mean head's SDF only scores them
    n_candidates: int = 3
    model_points: int = 500
    model_steps: int = 15
    lr_pose: float = 0.004
    lr_latent: float = 0.01
    latent_weight: float = 0.01
    #: the best candidate is then refined the same way for ``final_steps`` steps on
    #: ``final_points`` points (0: not): the short ranking stage leaves a head that is not the
    #: mean head several mm off (8 mm for a head 5 % larger than the mean at the unit's scale);
    #: the latent needs the longer run to take the head's own shape
    final_steps: int = 100
    final_points: int = 1000
    #: the final refinement (also the one of a landmark alignment, ``fit_custom``) fits only
    #: the points its start puts above this height (nphm y;
    #: -0.13 is the nose base of the release frame's mean head; None: all points): what lies
    #: below, mouth, jaw and chin, moves with the expression, which the identity model cannot
    #: follow, so it turns the head instead (measured on a held-out open-mouth head, automatic
    #: alignment: pose 1.06 mm off from all points, 1.36 mm from the upper part, but the fit's
    #: face Chamfer-L1 0.758 against 0.593 mm, 0.540 for the head given in the nphm frame);
    #: with fewer than ``model_points`` points there it uses them all. Only when the scale is
    #: the unit's (declared or guessed): a free scale fitted to the upper part alone moved the
    #: landmarks of a head at an arbitrary size 2.5 mm off (1.8 mm from all points)
    final_min_y: Optional[float] = -0.13
    #: robust SDF residual: distances beyond it count as ``cap`` (0.04 = 10 mm: hair, shoulders)
    cap: float = 0.04
    #: limits of :attr:`AutoPose.confident`
    min_margin: float = 0.15
    max_residual_mm: float = 3.0
    min_inliers: float = 0.5


@dataclass
class PoseCandidate:
    """One distinct pose: its similarity, coarse ICP score and the ranking loss."""

    transform: Similarity
    icp_score: float  # capped mean distance to the mean head (nphm units)
    loss: float  # ranking loss: the model's robust SDF residual (or the ICP score)
    residual: float  # median residual of all points (nphm units)
    inlier_fraction: float  # fraction of the points within the cap
    start: str  # which start it came from ("pca k, unit mm" / "icosahedral k, scale by size")

    def to_dict(self, mm_per_unit: float) -> dict:
        return {"loss": self.loss, "icp_score": self.icp_score, "residual_mm": self.residual * mm_per_unit,
                "inlier_fraction": self.inlier_fraction, "start": self.start, **self.transform.to_dict()}


@dataclass
class AutoPose:
    """Result of :func:`auto_pose`.

    Attributes:
        transform: the best similarity, input -> nphm.
        margin: ``1 - best / second`` of the ranking losses (see the module docstring).
        residual_mm: median residual of the best pose's points in mm.
        inlier_fraction: fraction of the points within the cap of the best pose.
        unit: the unit of :data:`~nphm.fitting.alignment.UNIT_TO_NPHM` closest to the scale
            (the given one when it was given); size_factor: ``scale / UNIT_TO_NPHM[unit]``.
        candidates: the distinct poses, best first.
        confident: margin, residual and inlier fraction within the settings' limits.
        scored_by: "model" or "icp".
    """

    transform: Similarity
    margin: float
    residual_mm: float
    inlier_fraction: float
    unit: str
    size_factor: float
    candidates: List[PoseCandidate]
    confident: bool
    scored_by: str
    seconds: float
    n_starts: int
    settings: AutoPoseSettings = field(repr=False, default_factory=AutoPoseSettings)
    #: ``unit`` was guessed from the size (``snap_to_unit``): the pose has that unit's scale
    unit_guessed: bool = False

    def summary(self) -> str:
        """One line for the caller to print."""
        verdict = "confident" if self.confident else "NOT confident: check the alignment picture"
        second = f", runner-up loss {self.candidates[1].loss:.4g}" if len(self.candidates) > 1 else ""
        return (f"automatic pose ({self.scored_by}, {self.n_starts} starts, {self.seconds:.1f} s): "
                f"residual {self.residual_mm:.2f} mm, inliers {100 * self.inlier_fraction:.0f} %, "
                f"margin {self.margin:.2f}{second}; unit {self.unit} x {self.size_factor:.3f} -> {verdict}")

    def to_dict(self) -> dict:
        """JSON-ready record (for ``fitting.json``)."""
        mm = mm_per_nphm(self.transform.scale, self.unit)
        return {
            "method": f"automatic pose ({self.scored_by})",
            "margin": self.margin,
            "residual_mm": self.residual_mm,
            "inlier_fraction": self.inlier_fraction,
            "confident": self.confident,
            "unit": self.unit,
            "size_factor": self.size_factor,
            "seconds": self.seconds,
            "n_starts": self.n_starts,
            "transform": self.transform.to_dict(),
            "candidates": [c.to_dict(mm) for c in self.candidates],
        }


def start_rotations(src: np.ndarray, ref: np.ndarray) -> List[tuple]:
    """``(name, R)``: the 24 principal-axis rotations of ``src`` onto ``ref``, then the 60
    rotations of the icosahedral group."""
    pca = [(f"pca {k}", R) for k, R in enumerate(candidate_rotations(src, ref))]
    group = Rotation.create_group("I").as_matrix()
    return pca + [(f"icosahedral {k}", R) for k, R in enumerate(group)]


def start_scales(points: np.ndarray, reference: np.ndarray, unit: Optional[str] = None,
                 tolerance: float = 1.25) -> List[tuple]:
    """``(label, scale)`` of the starts: the unit's scale when ``unit`` is given, and the ratio of
    the RMS radii of ``reference`` and ``points`` when there is no unit or the two disagree by
    more than the factor ``tolerance`` (the scan holds more or less than a head, or is not in
    that unit)."""
    by_size = _rms_radius(reference) / max(_rms_radius(points), 1e-30)
    if unit is None:
        return [("scale by size", by_size)]
    out = [(f"unit {unit}", UNIT_TO_NPHM[unit])]
    if abs(np.log(by_size / UNIT_TO_NPHM[unit])) > np.log(tolerance):
        out.append(("scale by size", by_size))
    return out


def _subsample_target(target: Target, n: int, rng: np.random.Generator) -> Target:
    idx = rng.choice(len(target.points), n, replace=False)
    return Target(target.points[idx], target.normals[idx])


def _rms_radius(points: np.ndarray) -> float:
    return float(np.sqrt(((points - points.mean(0)) ** 2).sum(1).mean()))


def _distinct(results: Sequence, transform_of, n: int, degrees: float) -> list:
    """The first ``n`` of ``results`` (ranked) whose rotations lie ``degrees`` apart."""
    kept: list = []
    for r in results:
        R = transform_of(r).rotation
        if all(rotation_angle_deg(R, transform_of(k).rotation) >= degrees for k in kept):
            kept.append(r)
            if len(kept) == n:
                break
    return kept


def _model_refine(identity: nn.Module, points: np.ndarray, transforms: Sequence[Similarity],
                  s: AutoPoseSettings, fit_scale: bool = True, fit_rotation: bool = True):
    """Adam on the pose (the scale too when ``fit_scale``, the rotation when ``fit_rotation``)
    and an identity latent of every candidate (one batch).

    Returns (transforms, losses (K,), residuals (K,), inlier fractions (K,)); the losses are
    the robust residual ``mean(min(|sdf|, cap))`` at the end, without the latent term.
    """
    device = next(identity.parameters()).device
    K = len(transforms)
    p0 = torch.tensor(np.stack([T.apply(points) for T in transforms]), dtype=torch.float32, device=device)
    c = p0.mean(1, keepdim=True)
    w = torch.zeros(K, 3, device=device, requires_grad=fit_rotation)
    sigma = torch.zeros(K, 1, device=device, requires_grad=fit_scale)
    tau = torch.zeros(K, 3, device=device, requires_grad=True)
    z = torch.zeros(K, identity.lat_dim, device=device, requires_grad=True)
    pose_params = [tau] + ([w] if fit_rotation else []) + ([sigma] if fit_scale else [])
    opt = Adam([{"params": pose_params, "lr": s.lr_pose}, {"params": [z], "lr": s.lr_latent}])

    def transformed() -> torch.Tensor:
        R = rotation_exp(w)
        return torch.exp(sigma)[:, :, None] * (p0 - c) @ R.transpose(1, 2) + c + tau[:, None, :]

    with frozen(identity):
        for _ in range(s.model_steps):
            opt.zero_grad()
            sdf, _ = identity(transformed(), z)
            data = sdf[..., 0].abs().clamp(max=s.cap).mean(1)
            (data + s.latent_weight * z.square().sum(-1)).sum().backward()
            opt.step()
        with torch.no_grad():
            d = identity(transformed(), z)[0][..., 0].abs().double().cpu().numpy()
    R = rotation_exp(w.detach().double()).cpu().numpy()
    sig = sigma.detach().double().cpu().numpy()[:, 0]
    centres = c.detach().double().cpu().numpy()[:, 0]
    shift = tau.detach().double().cpu().numpy()
    out = [updated_similarity(T, float(np.expm1(sig[k])), R[k], centres[k], shift[k]) for k, T in enumerate(transforms)]
    return out, np.minimum(d, s.cap).mean(1), _inlier_stats(d, s.cap)


def _inlier_stats(d: np.ndarray, cap: float):
    """(median distance, fraction of the points within ``cap``) per row of ``d`` (K, N)."""
    return np.median(d, axis=1), (d < cap).mean(1)


def refine_pose_with_model(identity: nn.Module, points: np.ndarray, start: Similarity,
                           settings: AutoPoseSettings = AutoPoseSettings(), fit_scale: bool = True,
                           seed: int = 0, fit_rotation: bool = True) -> Tuple[Similarity, float, float, float]:
    """The pose of a scan refined by the identity model: Adam on the similarity (the scale only
    when ``fit_scale``, the rotation only when ``fit_rotation``) and an identity latent for
    ``settings.final_steps`` steps on ``settings.final_points`` of ``points`` (input frame),
    started from ``start`` (input -> nphm).

    Without ``fit_scale`` only the points ``start`` puts above ``settings.final_min_y`` are
    fitted (if at least ``settings.model_points`` are there): what expressions move, the
    identity model would fit by turning the head.

    Returns (similarity, robust residual loss, median residual (nphm units), inlier fraction).
    """
    points = np.asarray(points, dtype=np.float64)
    if settings.final_min_y is not None and not fit_scale:  # a free scale needs the whole head
        upper = points[start.apply(points)[:, 1] > settings.final_min_y]
        points = upper if len(upper) >= settings.model_points else points
    rng = np.random.default_rng(seed)
    if len(points) > settings.final_points:
        points = points[rng.choice(len(points), settings.final_points, replace=False)]
    final = replace(settings, model_steps=settings.final_steps)
    (T,), (loss,), ((q,), (f,)) = _model_refine(identity, points, [start], final, fit_scale=fit_scale,
                                                fit_rotation=fit_rotation)
    return T, float(loss), float(q), float(f)


def auto_pose(
    points: np.ndarray,
    reference: Target,
    identity: Optional[nn.Module] = None,
    unit: Optional[str] = None,
    settings: AutoPoseSettings = AutoPoseSettings(),
    seed: int = 0,
    keep_unit_scale: bool = False,
    snap_to_unit: bool = False,
) -> AutoPose:
    """Similarity of a scan (any frame, orientation, unit) onto the model's mean head.

    Args:
        points: (N, 3) scan points in the input frame.
        reference: the mean head's surface, nphm frame
            (:func:`nphm.fitting.custom.mean_head_target`).
        identity: the identity model that ranks the candidates (None: the ICP score ranks).
        unit: a key of :data:`~nphm.fitting.alignment.UNIT_TO_NPHM` if known: the starts take
            its scale (:func:`start_scales`) and the reported mm use it; None: any unit.
        keep_unit_scale: with ``unit``, keep its scale throughout (rotation and translation
            only): the scan is taken at its true size, so a head larger or smaller than the mean
            stays so (the ICP with scale brings every head to the mean head's size).
        snap_to_unit: without ``unit``, a best scale within
            :data:`~nphm.fitting.alignment.UNIT_GUESS_FACTOR` of a unit's is taken as that unit
            (:func:`~nphm.fitting.alignment.unit_of_scale`): the best pose is brought to its scale
            about the scan's centroid before the final refinement, which then keeps it
            (``unit_guessed`` in the result).
    Returns:
        :class:`AutoPose`: the best similarity, its margin and residual, the ranked candidates.
    """
    t0 = time.perf_counter()
    s = settings
    points = check_points(points, "scan", min_points=10)
    if unit is not None and unit not in UNIT_TO_NPHM:
        raise ValueError(f"unknown unit {unit!r}; use one of {sorted(UNIT_TO_NPHM)}")
    if keep_unit_scale and unit is None:
        raise ValueError("keep_unit_scale needs the unit")
    rng = np.random.default_rng(seed)

    def subsample(n: int) -> np.ndarray:
        return points if len(points) <= n else points[rng.choice(len(points), n, replace=False)]

    coarse, dense = subsample(s.coarse_points), subsample(s.refine_points)
    ref = reference.points
    scales = [(f"unit {unit}", UNIT_TO_NPHM[unit])] if keep_unit_scale else start_scales(points, ref, unit)
    with_scale = not keep_unit_scale
    c_src, c_ref = coarse.mean(0), ref.mean(0)
    # far-off starts make nearest-neighbour queries slow in a dense tree: a sparser surface
    sparse = reference if len(ref) <= s.coarse_reference_points else _subsample_target(
        reference, s.coarse_reference_points, rng)
    starts = [(f"{name}, {label}", scale, R) for label, scale in scales
              for name, R in start_rotations(coarse * scale, ref)]
    inits = [Similarity(scale, R, c_ref - scale * R @ c_src) for _, scale, R in starts]
    coarse_results = icp_batch(coarse, sparse, inits, iterations=s.coarse_iterations, trim=s.trim,
                               with_scale=with_scale, score_cap=s.icp_cap, scale_range=s.scale_range)
    results = sorted(zip([name for name, _, _ in starts], coarse_results), key=lambda r: r[1].score)
    best = _distinct(results, lambda r: r[1].transform, s.n_refine, s.distinct_degrees)
    # the scale may keep moving from the coarse estimate, within the same overall range
    refined_results = icp_batch(dense, reference, [r.transform for _, r in best], iterations=s.refine_iterations,
                                trim=s.trim, with_scale=with_scale, score_cap=s.icp_cap, scale_range=s.scale_range)
    refined = sorted(zip([name for name, _ in best], refined_results), key=lambda r: r[1].score)
    refined = _distinct(refined, lambda r: r[1].transform, s.n_candidates, s.distinct_degrees)
    if identity is not None and s.model_steps >= 0:
        model_pts = subsample(s.model_points)
        transforms, losses, (res, inl) = _model_refine(identity, model_pts, [r.transform for _, r in refined], s,
                                                       fit_scale=with_scale)
        scored_by = "model"
    else:
        transforms = [r.transform for _, r in refined]
        d = np.stack([reference.tree.query(T.apply(dense))[0] for T in transforms])
        losses = np.minimum(d, s.icp_cap).mean(1)
        res, inl = _inlier_stats(d, s.cap)
        scored_by = "icp"
    cands = [PoseCandidate(T, float(r.score), float(loss), float(q), float(f), name)
             for (name, r), T, loss, q, f in zip(refined, transforms, losses, res, inl)]
    cands.sort(key=lambda c: c.loss)
    ranked = _distinct(cands, lambda c: c.transform, len(cands), s.distinct_degrees)
    best = ranked[0]
    # the confidence compares equally refined candidates: before the final refinement
    margin = 1.0 - best.loss / ranked[1].loss if len(ranked) > 1 and ranked[1].loss > 0 else 1.0
    guessed = unit_of_scale(best.transform.scale) if snap_to_unit and unit is None else None
    if guessed is not None:
        snapped = at_unit_scale(best.transform, UNIT_TO_NPHM[guessed], points)
        old, best = best, replace(best, transform=snapped, start=best.start + f", scale of unit {guessed}")
        cands = [best if c is old else c for c in cands]
        unit, with_scale = guessed, False
    if identity is not None and s.model_steps >= 0 and s.final_steps > 0:
        T, loss, q, f = refine_pose_with_model(identity, points, best.transform, s, fit_scale=with_scale, seed=seed)
        old, best = best, PoseCandidate(T, best.icp_score, loss, q, f, best.start + ", refined")
        cands = [best if c is old else c for c in cands]
    unit_out = closest_unit(best.transform.scale) if unit is None else unit
    size_factor = best.transform.scale / UNIT_TO_NPHM[unit_out]
    residual_mm = best.residual * mm_per_nphm(best.transform.scale, unit_out)
    confident = margin >= s.min_margin and residual_mm <= s.max_residual_mm and best.inlier_fraction >= s.min_inliers
    return AutoPose(best.transform, float(margin), float(residual_mm), best.inlier_fraction, unit_out,
                    float(size_factor), cands, bool(confident), scored_by, time.perf_counter() - t0, len(starts), s,
                    unit_guessed=guessed is not None)


__all__ = ["AutoPose", "AutoPoseSettings", "PoseCandidate", "auto_pose", "refine_pose_with_model", "start_rotations",
           "start_scales"]
