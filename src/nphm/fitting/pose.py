"""The pose of the observations, refined in the fit jointly with the latents.

A real scan comes in its scanner's frame; the initial alignment (landmarks + Umeyama, or the
automatic ICP of :mod:`nphm.fitting.alignment`) brings it into the nphm frame only to a few
degrees and millimetres, and the latents then absorb the error (a tilted head becomes a
different identity). With pose refinement the fit also optimises a similarity of the observed
points, started from that alignment and kept near it by a prior.

Parameterisation, around the start ``S0_i`` of observation ``i`` (a :class:`Similarity`
input -> nphm, default the identity: the observations are then already in the nphm frame)::

    x_nphm = exp(l) * Exp(w) @ S0_i(x) + dt

with the log-scale ``l``, the axis-angle rotation ``w`` (radians; ``Exp`` the matrix
exponential of its cross-product matrix) and the translation ``dt`` (nphm units) of the pose
``p(i)``. Rotation and scale act about the nphm origin, which lies inside the head (the models'
canonical frame is centred there), so that they barely couple with the translation; ``dt`` is
the displacement of the point the start maps to the origin. The final transform input -> nphm is
``s = exp(l) s0``, ``R = Exp(w) R0``, ``t = exp(l) Exp(w) t0 + dt`` (:meth:`ScanPose.similarity`).
All parameters start at 0, i.e. at the start alignment, and the prior is::

    lambda_pose * (l^2 / sigma_log_scale^2 + |w|^2 / sigma_rotation^2 + |dt|^2 / sigma_translation^2)

(mean over the poses; with the default sigmas of 1, 1 and 0.04 (10 mm) this is
``lambda_pose * (|log s - log s0|^2 + |w|^2 + |dt|^2 / sigma_t^2)``).

**One pose for all observations** (``shared``, the default): one rigid correction of the
scanner frame, the same for every observation (expression) of the scan set: the scans of one
session share one frame, and a pose per observation would let the rigid head motion trade with
the expression latents. ``shared: false`` gives every observation its own correction (a person
moving between captures); the starts may differ per observation either way.

**Gradients.** The posed observation ``x_obs = P(x)`` enters the root finding
``x_c + D(x_c) = x_obs``; by the implicit function theorem ``dx_c/dx_obs = (I + dD/dx)^-1`` at the
root (:func:`nphm.fitting.implicit.implicit_canonical` with ``observed=``), so the loss reaches
the pose parameters through the canonical points; identity-only fitting evaluates the SDF at
``x_obs`` directly.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from nphm.data.frames import Similarity


@dataclass(frozen=True)
class PoseSettings:
    """Pose refinement in the fit (the ``pose:`` block of ``fitting:``; off in the release).

    Attributes:
        enabled: refine the pose (False: the start alignment is applied and kept fixed).
        lr: Adam learning rate of the translation (nphm units per step, roughly) and of the
            log-scale, decayed with the latents' schedule (``lr_decay_steps``/``lr_decay_factor``).
        lr_rotation: the same for the rotation (radians): ``lr / 0.3`` or so moves a point at
            the head's radius (~0.3) as far as ``lr`` moves it by translation. The scale is
            left slower on purpose: it trades with the identity's size (a larger head seen
            from closer), and a fast scale settles in that valley early.
        lambda_pose: weight of the prior (the surface term has weight ``lambdas.surface``).
        sigma_rotation: rotation (radians) at which the prior costs ``lambda_pose``.
        sigma_log_scale: log-scale at which it costs ``lambda_pose``.
        sigma_translation: translation (nphm units) at which it costs ``lambda_pose``.
        fit_scale: refine the scale too (False: rotation and translation only).
        shared: one pose for all observations (one rigid scanner frame); False: one each.
        start_step: release step from which the pose moves (the latents settle first).
    """

    enabled: bool = False
    lr: float = 1e-3
    lr_rotation: float = 3e-3
    lambda_pose: float = 1e-3
    sigma_rotation: float = 1.0
    sigma_log_scale: float = 1.0
    sigma_translation: float = 0.04
    fit_scale: bool = True
    shared: bool = True
    start_step: int = 0

    def __post_init__(self) -> None:
        if min(self.lr, self.lr_rotation, self.lambda_pose) < 0:
            raise ValueError("fitting.pose: lr, lr_rotation and lambda_pose must be >= 0, got "
                             f"{self.lr}, {self.lr_rotation}, {self.lambda_pose}")
        if min(self.sigma_rotation, self.sigma_log_scale, self.sigma_translation) <= 0:
            raise ValueError("fitting.pose: the sigmas must be > 0")
        if self.start_step < 0:
            raise ValueError(f"fitting.pose.start_step must be >= 0, got {self.start_step}")

    @classmethod
    def from_config(cls, block: Optional[Mapping[str, Any]]) -> "PoseSettings":
        """Settings from the ``pose:`` block; missing keys keep the defaults."""
        block = dict(block or {})
        known = {f.name for f in fields(cls)}
        unknown = set(block) - known
        if unknown:
            raise ValueError(f"fitting.pose: unknown keys {sorted(unknown)}; known: {sorted(known)}")
        kw: dict = {}
        for key, value in block.items():
            default = getattr(cls, key)
            if isinstance(default, bool):
                if not isinstance(value, bool):
                    raise ValueError(f"fitting.pose.{key} must be true or false, got {value!r}")
                kw[key] = value
            else:
                kw[key] = type(default)(value)
        return cls(**kw)

    def to_config(self) -> dict:
        return asdict(self)


def hat(w: torch.Tensor) -> torch.Tensor:
    """Cross-product matrices (..., 3, 3) of vectors (..., 3)."""
    zero = torch.zeros_like(w[..., 0])
    x, y, z = w.unbind(-1)
    return torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(*w.shape[:-1], 3, 3)


def rotation_exp(w: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) of axis-angle vectors (..., 3) (differentiable at 0)."""
    return torch.linalg.matrix_exp(hat(w))


def compose(outer: Similarity, inner: Similarity) -> Similarity:
    """The similarity ``x -> outer(inner(x))``."""
    R = np.asarray(outer.rotation, dtype=np.float64) @ np.asarray(inner.rotation, dtype=np.float64)
    t = outer.apply_offsets(np.asarray(inner.translation, dtype=np.float64)) + np.asarray(outer.translation)
    return Similarity(float(outer.scale) * float(inner.scale), R, t)


StartLike = Union[None, Similarity, Sequence[Similarity]]


def start_similarities(start: StartLike, n_observations: int) -> List[Similarity]:
    """One start per observation: None -> identities, one similarity -> shared by all."""
    if start is None:
        return [Similarity.identity()] * n_observations
    if isinstance(start, Similarity):
        return [start] * n_observations
    starts = list(start)
    if len(starts) != n_observations:
        raise ValueError(f"give one start pose or one per observation ({n_observations}), got {len(starts)}")
    return starts


class ScanPose(nn.Module):
    """Pose corrections ``exp(l) Exp(w) x + dt`` of started observations (see the module docstring).

    Args:
        starts: the start similarity of every observation (input -> nphm).
        settings: prior and options (``shared``, ``fit_scale``).
        dtype, device: of the parameters (those of the points).
    Attributes:
        log_scale (P,), rotvec (P, 3), translation (P, 3): parameters of the P poses (P = 1
            when ``shared``, else one per observation), all 0 at the start.
    """

    def __init__(self, starts: Sequence[Similarity], settings: PoseSettings = PoseSettings(enabled=True),
                 dtype=torch.float32, device=None) -> None:
        super().__init__()
        self.starts = list(starts)
        if not self.starts:
            raise ValueError("a pose needs at least one observation")
        self.settings = settings
        P = 1 if settings.shared else len(self.starts)
        kw = dict(dtype=dtype, device=device)
        self.log_scale = nn.Parameter(torch.zeros(P, **kw), requires_grad=settings.fit_scale)
        self.rotvec = nn.Parameter(torch.zeros(P, 3, **kw))
        self.translation = nn.Parameter(torch.zeros(P, 3, **kw))

    @property
    def n_poses(self) -> int:
        return self.rotvec.shape[0]

    def trainable(self) -> List[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def param_groups(self) -> List[dict]:
        """Adam parameter groups with their base learning rates (``lr`` / ``lr_rotation``)."""
        linear = [p for p in (self.log_scale, self.translation) if p.requires_grad]
        return [{"params": linear, "lr": self.settings.lr}, {"params": [self.rotvec], "lr": self.settings.lr_rotation}]

    def pose_of(self, observation: torch.Tensor) -> torch.Tensor:
        """Pose index (n,) of observations (n,)."""
        return torch.zeros_like(observation) if self.n_poses == 1 else observation

    def correct(self, points: torch.Tensor, observation: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Corrected points (n, 3) of started points (n, 3) (in the nphm frame after their start);
        ``observation`` (n,) their observation (None: all of observation 0). Differentiable."""
        R = rotation_exp(self.rotvec)  # (P, 3, 3)
        s = torch.exp(self.log_scale)
        if self.n_poses == 1 or observation is None:
            return s[0] * points @ R[0].T + self.translation[0]
        p = self.pose_of(observation)
        return s[p, None] * (R[p] @ points[..., None])[..., 0] + self.translation[p]

    def apply(self, points: torch.Tensor, observation: int = 0) -> torch.Tensor:
        """The full map input frame -> nphm frame of points (n, 3) of one observation
        (the start, then the correction), differentiable in the pose parameters."""
        start = self.starts[observation]
        kw = dict(dtype=points.dtype, device=points.device)
        linear = torch.as_tensor(start.scale * np.asarray(start.rotation, dtype=np.float64), **kw)
        started = points @ linear.T + torch.as_tensor(np.asarray(start.translation, dtype=np.float64), **kw)
        index = torch.full((points.shape[0],), observation, dtype=torch.long, device=points.device)
        return self.correct(started, index)

    def prior(self) -> torch.Tensor:
        """The prior (without ``lambda_pose``): mean over the poses of the scaled squared norms."""
        s = self.settings
        per_pose = (self.log_scale.square() / s.sigma_log_scale ** 2
                    + (self.rotvec).square().sum(-1) / s.sigma_rotation ** 2
                    + self.translation.square().sum(-1) / s.sigma_translation ** 2)
        return per_pose.mean()

    def correction(self, pose: int = 0) -> Similarity:
        """The correction of pose ``pose`` as a similarity nphm -> nphm."""
        with torch.no_grad():
            R = rotation_exp(self.rotvec[pose].double()).cpu().numpy()
            s = float(torch.exp(self.log_scale[pose].double()))
            t = self.translation[pose].double().cpu().numpy()
        return Similarity(s, R, t)

    def similarity(self, observation: int = 0) -> Similarity:
        """The final transform input -> nphm of an observation (correction after start)."""
        p = 0 if self.n_poses == 1 else observation
        return compose(self.correction(p), self.starts[observation])

    def similarities(self) -> List[Similarity]:
        """The final transform of every observation."""
        return [self.similarity(i) for i in range(len(self.starts))]


def start_observations(observations: Sequence, starts: Sequence[Similarity]) -> List[np.ndarray]:
    """The observations mapped by their start similarities (float64, nphm frame)."""
    out = []
    for obs, start in zip(observations, starts):
        pts = obs.detach().cpu().numpy() if isinstance(obs, torch.Tensor) else np.asarray(obs)
        out.append(pts if _is_identity(start) else start.apply(pts))
    return out


def _is_identity(T: Similarity) -> bool:
    return (float(T.scale) == 1.0 and np.array_equal(np.asarray(T.rotation), np.eye(3))
            and not np.any(np.asarray(T.translation)))


def prepare_pose(
    observations: Sequence, start: StartLike, settings: PoseSettings, dtype=torch.float32, device=None
) -> Tuple[Sequence, List[Similarity], Optional[ScanPose]]:
    """Observations, starts and the pose to refine for a fit.

    Returns:
        ``(observations, starts, pose)``: with no start and pose refinement off, the
        observations unchanged, identities and None (the release's fit); otherwise the
        observations mapped by their starts, the starts, and a :class:`ScanPose` when
        ``settings.enabled`` (else None: the starts stay fixed).
    """
    if start is None and not settings.enabled:
        return observations, start_similarities(None, len(observations)), None
    starts = start_similarities(start, len(observations))
    started = start_observations(observations, starts)
    pose = ScanPose(starts, settings, dtype=dtype, device=device) if settings.enabled else None
    return started, starts, pose


def pose_errors(estimate: Similarity, truth: Similarity, centre: Sequence[float] = (0.0, 0.0, 0.0)
                ) -> Tuple[float, float, float]:
    """``(rotation error (deg), relative scale error, translation error)`` of a similarity
    input -> nphm: the last is the distance between where the two maps put the input point that
    ``truth`` maps to ``centre`` (nphm units)."""
    from nphm.fitting.alignment import rotation_angle_deg

    c = truth.invert(np.asarray(centre, dtype=np.float64)[None])
    return (rotation_angle_deg(estimate.rotation, truth.rotation), abs(estimate.scale / truth.scale - 1.0),
            float(np.linalg.norm(estimate.apply(c) - truth.apply(c))))
