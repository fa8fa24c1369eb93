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
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

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

    def __post_init__(self) -> None:
        if self.max_iters < 0:
            raise ValueError(f"broyden.max_iters must be >= 0, got {self.max_iters}")
        if not 0 < self.converge_threshold < self.diverge_threshold:
            raise ValueError(
                "need 0 < broyden.converge_threshold < broyden.diverge_threshold, got "
                f"{self.converge_threshold} and {self.diverge_threshold}"
            )


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

    def __post_init__(self) -> None:
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
        for key in ("step_scale", "lr", "lr_decay_factor", "sample_std_scale"):
            if key in block:
                kw[key] = float(block[key])
        if "lr_decay_steps" in block:
            kw["lr_decay_steps"] = tuple(int(s) for s in block["lr_decay_steps"] or ())
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
        n = sum(1 for s in self.lr_decay_steps if step >= s)
        return self.lr * self.lr_decay_factor ** n

    def lambdas_at(self, step: int) -> Dict[str, float]:
        """Loss weights at release step ``step``."""
        out = dict(self.lambdas)
        for name, sched in self.lambda_schedule.items():
            for s, factor in sched.items():
                if step >= s:
                    out[name] *= factor
        return out

    def clamp_at(self, step: int) -> float:
        """SDF threshold of the surface loss at release step ``step``."""
        first = min(self.sdf_clamp)
        return min(v for s, v in self.sdf_clamp.items() if s == first or step > s)

    def schedule_table(self, steps: Sequence[int]) -> List[Dict[str, float]]:
        """lr, clamp and weights at the given release steps (for logs and docs)."""
        return [{"step": s, "lr": self.lr_at(s), "clamp": self.clamp_at(s), **self.lambdas_at(s)} for s in steps]
