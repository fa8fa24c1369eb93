"""Settings of the point-cloud fitting and their step-dependent schedules.

Everything comes from the ``fitting:`` block of ``configs/fitting_*.yaml``; the defaults below
are the values the release hard-codes. Schedules are written in "release steps" (the release
runs 1000 steps); ``step_scale`` runs ``steps * step_scale`` optimisation steps and looks the
schedules up at ``int(step / step_scale)``, as the release's ``step_scale`` argument does.

Schedule semantics (the release's):

* learning rate: multiplied by ``lr_decay_factor`` at each step of ``lr_decay_steps``;
* loss weights: ``lambda_schedule[name] = {step: factor}`` multiplies the weight from that step
  on (factors accumulate; the release divides by 10 / 9999 / 3 ..., written here as factors);
* SDF clamp: ``sdf_clamp = {step: threshold}``; only points with ``|SDF| < threshold`` enter the
  surface loss. A threshold applies to the steps *after* its key (the release tests ``j > 250``),
  the one of the smallest key from the start; where several apply, the smallest wins.

Options beyond the release, all off by default (the release's losses and numbers unchanged):

* ``surface_loss: l1 | geman_mcclure``, ``robust_scale`` (nphm units) and
  ``robust_scale_schedule`` (``{step: factor}``, accumulating like ``lambda_schedule``): the
  per-point surface loss, ``|SDF|`` (the release) or the Geman-McClure penalty with scale ``c``
  that ignores points far from the surface (:func:`nphm.fitting.losses.geman_mcclure`; the SDF
  clamp still applies on top). A scale that shrinks (e.g. ``robust_scale: 0.03``,
  ``robust_scale_schedule: {250: 0.333}``) lets a start far from the person (the mean head)
  see the whole head first and ignore the outliers once it is close;
* ``pose: {enabled, lr, lambda_pose, sigma_rotation, sigma_log_scale, sigma_translation,
  fit_scale, shared, start_step}``: refine a similarity of the observations with the latents
  (:class:`nphm.fitting.pose.PoseSettings`).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from nphm.fitting.losses import SURFACE_LOSSES, surface_penalty
from nphm.fitting.pose import PoseSettings

#: Loss terms and their release weights.
DEFAULT_LAMBDAS: Dict[str, float] = {
    "surface": 2.0,
    "reg_expr": 0.01,
    "reg_global": 0.25,
    "reg_loc": 0.05,
    "reg_unobserved": 10.0,
    "symm_dist": 5.0,
}
DEFAULT_LAMBDA_SCHEDULE: Dict[str, Dict[int, float]] = {
    "symm_dist": {200: 0.1, 500: 1.0 / 9999.0},
    "reg_global": {200: 1.0 / 3.0, 600: 0.1},
    "reg_loc": {500: 1.0 / 3.0, 600: 0.1},
    "reg_expr": {600: 0.1},
}
DEFAULT_SDF_CLAMP: Dict[int, float] = {0: 0.1, 250: 0.05, 500: 0.0075}


@dataclass(frozen=True)
class BroydenSettings:
    """Root finding of ``x + D(x) = x_obs`` (release: 15 iterations, 1e-6, 0.2)."""

    max_iters: int = 15
    converge_threshold: float = 1e-6
    diverge_threshold: float = 0.2
    #: added to the Sherman-Morrison denominator with its sign (release: 1e-6)
    eps: float = 1e-6
    #: joint fitting: start a point that converged in an earlier step at its last root and
    #: inverse Jacobian instead of at the observation (not in the release; the roots and the
    #: threshold are the same, it only saves iterations and the Jacobian at the observation)
    warm_start: bool = True
    #: Jacobians of x + D(x): "forward" (one forward-mode pass), "forward_bf16" (its tangent
    #: matmuls in bfloat16: roots unchanged, gradients within a tested tolerance) or "backward"
    jacobian: str = "forward"
    #: inverse Jacobian of the implicit step at the roots: "exact", or "broyden" (the root
    #: finding's last estimate: no Jacobian at the roots, gradients within a tested tolerance)
    implicit_jacobian: str = "exact"

    def __post_init__(self) -> None:
        if self.jacobian not in ("forward", "forward_bf16", "backward"):
            raise ValueError(f"broyden.jacobian must be 'forward', 'forward_bf16' or 'backward', got {self.jacobian!r}")
        if self.implicit_jacobian not in ("exact", "broyden"):
            raise ValueError(f"broyden.implicit_jacobian must be 'exact' or 'broyden', got {self.implicit_jacobian!r}")
        if self.max_iters < 0:
            raise ValueError(f"broyden.max_iters must be >= 0, got {self.max_iters}")
        if not 0 < self.converge_threshold < self.diverge_threshold:
            raise ValueError(
                "need 0 < broyden.converge_threshold < broyden.diverge_threshold, got "
                f"{self.converge_threshold} and {self.diverge_threshold}"
            )

    def approximate(self) -> "BroydenSettings":
        """These settings with the approximate Jacobians: Broyden's last inverse-Jacobian
        estimate in the implicit step and bfloat16 tangents for the Jacobian at the observations
        (roots, convergence test and losses unchanged; gradients within a tested tolerance)."""
        return replace(self, implicit_jacobian="broyden", jacobian="forward_bf16")


def _int_keys(mapping: Optional[Mapping[Any, float]], what: str) -> Dict[int, float]:
    out: Dict[int, float] = {}
    for k, v in (mapping or {}).items():
        try:
            out[int(k)] = float(v)
        except (TypeError, ValueError) as e:
            raise ValueError(f"fitting.{what}: expected {{step: number}}, got {k!r}: {v!r}") from e
    return out


@dataclass(frozen=True)
class FittingSettings:
    """All knobs of :func:`nphm.fitting.joint.fit_joint` (defaults = the release)."""

    steps: int = 1000
    step_scale: float = 1.0
    lr: float = 0.01
    lr_decay_steps: Tuple[int, ...] = (200, 400, 600, 800)
    lr_decay_factor: float = 0.5
    observations_per_step: int = 5
    points_per_observation: int = 1000
    broyden: BroydenSettings = field(default_factory=BroydenSettings)
    sdf_clamp: Dict[int, float] = field(default_factory=lambda: dict(DEFAULT_SDF_CLAMP))
    lambdas: Dict[str, float] = field(default_factory=lambda: dict(DEFAULT_LAMBDAS))
    lambda_schedule: Dict[str, Dict[int, float]] = field(
        default_factory=lambda: {k: dict(v) for k, v in DEFAULT_LAMBDA_SCHEDULE.items()}
    )
    unobserved_local_latents: Tuple[int, ...] = (30, 31, 39)
    sample_std_scale: float = 0.85
    grid_min: Tuple[float, float, float] = (-0.55, -0.5, -0.95)
    grid_max: Tuple[float, float, float] = (0.55, 0.75, 0.4)
    #: per-point surface loss: "l1" (the release) or "geman_mcclure" (robust, scale robust_scale)
    surface_loss: str = "l1"
    robust_scale: float = 0.01
    robust_scale_schedule: Dict[int, float] = field(default_factory=dict)
    #: pose refinement of the observations (off: the release)
    pose: PoseSettings = field(default_factory=PoseSettings)

    def __post_init__(self) -> None:
        if self.surface_loss not in SURFACE_LOSSES:
            raise ValueError(f"fitting.surface_loss: unknown {self.surface_loss!r}; known: {', '.join(SURFACE_LOSSES)}")
        if not self.robust_scale > 0 or any(not f > 0 for f in self.robust_scale_schedule.values()):
            raise ValueError(f"fitting.robust_scale and its schedule's factors must be > 0, got {self.robust_scale}, "
                             f"{self.robust_scale_schedule}")
        if self.steps < 0 or self.step_scale <= 0:
            raise ValueError(f"fitting.steps must be >= 0 and step_scale > 0, got {self.steps}, {self.step_scale}")
        if self.observations_per_step < 1 or self.points_per_observation < 1:
            raise ValueError("fitting.observations_per_step and points_per_observation must be >= 1")
        if not self.sdf_clamp:
            raise ValueError("fitting.sdf_clamp needs at least one {step: threshold} entry")
        unknown = set(self.lambdas) - set(DEFAULT_LAMBDAS)
        if unknown:
            raise ValueError(f"fitting.lambdas: unknown loss terms {sorted(unknown)}; known: {sorted(DEFAULT_LAMBDAS)}")
        unknown = set(self.lambda_schedule) - set(self.lambdas)
        if unknown:
            raise ValueError(f"fitting.lambda_schedule: terms {sorted(unknown)} have no weight in fitting.lambdas")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, block: Optional[Mapping[str, Any]]) -> "FittingSettings":
        """Settings from a config's ``fitting:`` block; missing keys keep the release defaults."""
        block = dict(block or {})
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(block) - known
        if unknown:
            raise ValueError(f"fitting config: unknown keys {sorted(unknown)}; known: {sorted(known)}")
        kw: Dict[str, Any] = {}
        for key in ("steps", "observations_per_step", "points_per_observation"):
            if key in block:
                kw[key] = int(block[key])
        for key in ("step_scale", "lr", "lr_decay_factor", "sample_std_scale", "robust_scale"):
            if key in block:
                kw[key] = float(block[key])
        if "lr_decay_steps" in block:
            kw["lr_decay_steps"] = tuple(int(s) for s in block["lr_decay_steps"] or ())
        if "robust_scale_schedule" in block:
            kw["robust_scale_schedule"] = _int_keys(block["robust_scale_schedule"], "robust_scale_schedule")
        if "surface_loss" in block:
            kw["surface_loss"] = str(block["surface_loss"])
        if "pose" in block:
            kw["pose"] = PoseSettings.from_config(block["pose"])
        if "broyden" in block:
            kw["broyden"] = BroydenSettings(**dict(block["broyden"] or {}))
        if "sdf_clamp" in block:
            kw["sdf_clamp"] = _int_keys(block["sdf_clamp"], "sdf_clamp")
        if "lambdas" in block:
            kw["lambdas"] = {str(k): float(v) for k, v in dict(block["lambdas"] or {}).items()}
        if "lambda_schedule" in block:
            kw["lambda_schedule"] = {
                str(k): _int_keys(v, f"lambda_schedule.{k}") for k, v in dict(block["lambda_schedule"] or {}).items()
            }
        if "unobserved_local_latents" in block:
            kw["unobserved_local_latents"] = tuple(int(i) for i in block["unobserved_local_latents"] or ())
        for key in ("grid_min", "grid_max"):
            if key in block:
                values = tuple(float(v) for v in block[key])
                if len(values) != 3:
                    raise ValueError(f"fitting.{key}: expected 3 numbers, got {block[key]!r}")
                kw[key] = values
        return cls(**kw)

    def to_config(self) -> Dict[str, Any]:
        """The ``fitting:`` block that reproduces these settings (plain YAML types)."""
        d = asdict(self)
        d["lr_decay_steps"] = list(self.lr_decay_steps)
        d["unobserved_local_latents"] = list(self.unobserved_local_latents)
        d["grid_min"] = list(self.grid_min)
        d["grid_max"] = list(self.grid_max)
        return d

    def replace(self, **changes: Any) -> "FittingSettings":
        """A copy with some fields changed (validated again)."""
        d = {f: getattr(self, f) for f in self.__dataclass_fields__}
        d.update(changes)
        return FittingSettings(**d)

    def for_known_identity(self, step_fraction: float = 1.0 / 3.0, lr_factor: float = 2.0) -> "FittingSettings":
        """The schedule for fitting only expressions of a known identity
        (:func:`nphm.fitting.joint.fit_expressions`): the same schedule compressed to
        ``step_fraction`` of the steps (``step_scale``) at ``lr_factor`` times the learning rate,
        so that the latents still travel as far (the identity no longer moves with them, so the
        larger steps stay stable). On the toy models a third of the steps at twice the rate
        reaches the joint fit's surface error."""
        if not 0 < step_fraction <= 1 or not lr_factor > 0:
            raise ValueError(f"need 0 < step_fraction <= 1 and lr_factor > 0, got {step_fraction}, {lr_factor}")
        n = max(1, round(self.n_iterations * step_fraction)) if self.n_iterations else 0
        scale = n / self.steps if n > 0 else self.step_scale * step_fraction
        while int(self.steps * scale) < n:  # the rounding of n / steps * steps
            scale = math.nextafter(scale, math.inf)
        return self.replace(step_scale=scale, lr=self.lr * lr_factor)

    # ------------------------------------------------------------------ schedules
    @property
    def n_iterations(self) -> int:
        """Optimisation steps actually run: ``int(steps * step_scale)``."""
        return int(self.steps * self.step_scale)

    def schedule_step(self, iteration: int) -> int:
        """The release step an optimisation iteration corresponds to."""
        return int(iteration / self.step_scale)

    def lr_at(self, step: int) -> float:
        """Learning rate at release step ``step``."""
        return self.lr * self.lr_decay_at(step)

    def lr_decay_at(self, step: int) -> float:
        """The factor of the learning rates at release step ``step`` (``lr_decay_factor`` to the
        number of ``lr_decay_steps`` passed; it decays the pose's learning rates too)."""
        return self.lr_decay_factor ** sum(1 for s in self.lr_decay_steps if step >= s)

    def lambdas_at(self, step: int) -> Dict[str, float]:
        """Loss weights at release step ``step``."""
        out = dict(self.lambdas)
        for name, sched in self.lambda_schedule.items():
            for s, factor in sched.items():
                if step >= s:
                    out[name] *= factor
        return out

    def robust_scale_at(self, step: int) -> float:
        """Scale of the robust surface loss at release step ``step``."""
        out = self.robust_scale
        for s, factor in self.robust_scale_schedule.items():
            if step >= s:
                out *= factor
        return out

    def penalty_at(self, step: int):
        """The per-point surface loss at release step ``step`` (:func:`nphm.fitting.losses.surface_penalty`)."""
        return surface_penalty(self.surface_loss, self.robust_scale_at(step))

    def clamp_at(self, step: int) -> float:
        """SDF threshold of the surface loss at release step ``step``."""
        first = min(self.sdf_clamp)
        return min(v for s, v in self.sdf_clamp.items() if s == first or step > s)

    def schedule_table(self, steps: Sequence[int]) -> List[Dict[str, float]]:
        """lr, clamp and weights at the given release steps (for logs and docs)."""
        return [{"step": s, "lr": self.lr_at(s), "clamp": self.clamp_at(s), **self.lambdas_at(s)} for s in steps]
