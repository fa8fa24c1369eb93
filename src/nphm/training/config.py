"""Training settings: the ``training`` section of a config, completed with defaults.

The release's configs (``configs/nphm.yaml`` etc.) hold only part of the knobs; the others
were hard-coded in its scripts. Their values are the defaults of :class:`IdentityTrainingSettings`
(stage 1) and :class:`ExpressionTrainingSettings` (stage 2), so a release config trains exactly
as the release did, and every value can be set in the yaml. Required in both stages: ``lr``,
``lr_lat``, ``weight_decay`` and ``lambdas`` ({loss name: weight}); keys that no setting reads
are accepted and kept (:attr:`CommonTrainingSettings.extra`). The keys:

Both stages:
    ``nepochs`` (stage 1: 30001, stage 2: 8000), ``batch_size``, ``lr``, ``lr_lat``,
    ``weight_decay``, ``grad_clip``, ``grad_clip_lat``, ``lr_decay_*``, ``ckpt_interval``,
    ``lambdas``; ``lr_decay_start_lat``: latent learning rates decay only at multiples of
    ``lr_decay_interval_lat`` beyond this epoch (release: 1000 in stage 1, 0 in stage 2);
    ``lat_init_std`` (stage 1: ``0.1 / sqrt(D)``, stage 2: 0.01); ``val_interval`` (epochs
    between passes over the validation latents, release 1); ``num_workers`` (data loader
    processes, release 8); ``seed``; ``preview_resolution`` (release 256) and ``n_preview``
    (meshes per split at each checkpoint, release 5); ``ckpt`` (resume from this epoch
    instead of the newest).
Stage 1:
    ``npoints_decoder`` face points per subject (750), ``npoints_decoder_non`` (250; the
    release uses a fifth of it, ``npoints_non_face`` = 50), ``npoints_far`` points uniform in
    a ball of radius ``far_radius`` (``npoints_decoder // 8`` = 93; radius ``0.5 ** (1/3)``:
    the release's ``uniform_ball(rad=0.5)`` draws ``r = U(0, 0.5) ** (1/3)``, which is uniform
    in the ball of that radius, not of radius 0.5), ``sigma_near``
    (0.01), ``query_mode`` of the NPHM ensemble (``sparse`` or ``exact``) and, in sparse mode,
    ``sparse_tol`` (bound on what sparse mode may drop per point; null: the model's default,
    :data:`nphm.models.identity.SPARSE_TOL`; larger values evaluate fewer members and train
    faster), ``anchors_mean``
    (``asset``: the dataset's anchors_39.npy; ``train_mean``: mean registration anchors of the
    training subjects).
Stage 2:
    ``npoints_decoder`` correspondences per item (1000), ``npoints_zero`` points uniform in
    ``[-zero_box, zero_box]^3`` for ``loss_reg_zero`` (100, 1.25), ``shape_exp_name`` /
    ``shape_ckpt`` the stage-1 experiment (``shape_ckpt`` null = its newest checkpoint).
"""
from __future__ import annotations

import copy
import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Self, Union

#: Keys every training block must set.
REQUIRED = ("lr", "lr_lat", "weight_decay", "lambdas")


def _convert(key: str, value: Any, kind: Any) -> Any:
    """``value`` of ``training.{key}`` as the field type ``kind`` (int, float, str, their
    Optional, {str: float}; anything else is kept as given)."""
    if typing.get_origin(kind) is Union and type(None) in typing.get_args(kind):
        if value is None:
            return None
        kinds = [a for a in typing.get_args(kind) if a is not type(None)]
        if len(kinds) > 1:
            return value
        kind = kinds[0]
    if kind is dict or typing.get_origin(kind) is dict:
        if not isinstance(value, Mapping):
            raise ValueError(f"training.{key} must be a mapping {{loss name: weight}}, got {value!r}")
        return {str(k): _convert(f"{key}.{k}", v, float) for k, v in value.items()}
    if kind in (int, float, str):
        try:
            return kind(value)
        except (TypeError, ValueError) as e:
            raise ValueError(f"training.{key} must be {'a number' if kind is not str else 'a string'}, "
                             f"got {value!r}") from e
    return value


@dataclass(frozen=True, kw_only=True)
class CommonTrainingSettings:
    """The settings both training stages share (keys and defaults: the module docstring).

    Made from a config by :meth:`from_config` of a stage's class; ``to_config`` gives the
    ``training`` block back (all keys, plus :attr:`extra`).
    """

    lr: float
    lr_lat: float
    weight_decay: float
    lambdas: Dict[str, float]
    nepochs: int
    lr_decay_start_lat: int
    batch_size: int = 32
    ckpt_interval: int = 500
    grad_clip: Optional[float] = None
    grad_clip_lat: Optional[float] = None
    lr_decay_factor: float = 0.5
    lr_decay_factor_lat: float = 0.5
    lr_decay_interval: Optional[int] = None
    lr_decay_interval_lat: Optional[int] = None
    #: None: ``0.1 / sqrt(latent dim)`` (see :meth:`latent_init_std`)
    lat_init_std: Optional[float] = None
    val_interval: int = 1
    num_workers: int = 8
    seed: int = 0
    preview_resolution: int = 256
    n_preview: int = 5
    ckpt: Optional[int] = None
    #: keys of the training block that no setting reads (accepted and written back)
    extra: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in ("batch_size", "nepochs", "ckpt_interval", "val_interval"):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"training.{key} must be >= 1, got {getattr(self, key)}")
        if not isinstance(self.lambdas, Mapping):
            raise ValueError("training.lambdas must be a mapping {loss name: weight}")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> Self:
        """Settings from a whole config (its ``training`` section) or from the section itself;
        missing keys keep the defaults.

        Raises:
            KeyError: a required key (lr, lr_lat, weight_decay, lambdas) is missing.
            ValueError: a value has the wrong type or is out of range (the message names the key).
        """
        block = cfg.get("training", cfg) if isinstance(cfg, Mapping) else None
        if not isinstance(block, Mapping):
            raise KeyError("config has no 'training' section")
        missing = [k for k in REQUIRED if k not in block]
        if missing:
            raise KeyError(f"config 'training' section lacks {missing}")
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kw: Dict[str, Any] = {k: _convert(k, v, hints[k]) for k, v in block.items() if k in names}
        kw["extra"] = {k: copy.deepcopy(v) for k, v in block.items() if k not in names}
        return cls(**kw)

    def to_config(self) -> Dict[str, Any]:
        """The ``training`` block that reproduces these settings (plain YAML types)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        out["lambdas"] = dict(self.lambdas)
        out.update(copy.deepcopy(self.extra))
        return out

    def replace(self, **changes: Any) -> Self:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ derived values
    def latent_init_std(self, latent_dim: int) -> float:
        """Standard deviation of the initial latents: ``lat_init_std``, else ``0.1 / sqrt(D)``."""
        return float(self.lat_init_std) if self.lat_init_std is not None else 0.1 / math.sqrt(latent_dim)


@dataclass(frozen=True, kw_only=True)
class IdentityTrainingSettings(CommonTrainingSettings):
    """Stage 1 (identity model): the common settings and the point sampling / ensemble query.

    ``npoints_non_face`` and ``npoints_far`` given as None are resolved on construction
    (``npoints_decoder_non // 5`` and ``npoints_decoder // 8``).
    """

    nepochs: int = 30001
    lr_decay_start_lat: int = 1000
    npoints_decoder: int = 750
    npoints_decoder_non: int = 250
    npoints_non_face: Optional[int] = None
    npoints_far: Optional[int] = None
    far_radius: float = 0.5 ** (1.0 / 3.0)
    sigma_near: float = 0.01
    query_mode: str = "sparse"
    #: None: the model's default, :data:`nphm.models.identity.SPARSE_TOL`
    sparse_tol: Optional[float] = None
    anchors_mean: str = "asset"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.npoints_non_face is None:
            object.__setattr__(self, "npoints_non_face", int(self.npoints_decoder_non) // 5)
        if self.npoints_far is None:
            object.__setattr__(self, "npoints_far", int(self.npoints_decoder) // 8)
        if self.query_mode not in ("sparse", "exact"):
            raise ValueError(f"training.query_mode must be 'sparse' or 'exact', got {self.query_mode!r}")
        if self.anchors_mean not in ("asset", "train_mean"):
            raise ValueError(f"training.anchors_mean must be 'asset' or 'train_mean', got {self.anchors_mean!r}")


@dataclass(frozen=True, kw_only=True)
class ExpressionTrainingSettings(CommonTrainingSettings):
    """Stage 2 (expression model): the common settings, correspondence and zero-offset points
    and the stage-1 experiment.

    ``shape_exp_name`` / ``shape_ckpt`` are kept as written (the release's configs hold the
    placeholders ``SHAPE_EXP_NAME`` / ``CHECKPOINT_EPOCH``); :func:`nphm.training.stage2.train`
    resolves and checks them.
    """

    nepochs: int = 8000
    lr_decay_start_lat: int = 0
    lat_init_std: Optional[float] = 0.01
    npoints_decoder: int = 1000
    npoints_zero: int = 100
    zero_box: float = 1.25
    shape_exp_name: Optional[str] = None
    shape_ckpt: Optional[Union[int, str]] = None


def lr_at(epoch: int, base: float, factor: float, interval, start: int = -1) -> float:
    """Learning rate of a step schedule at ``epoch``: ``base * factor ** (epoch // interval)``,
    where a decay at epoch ``m`` (a multiple of ``interval``) only applies if ``m > start``
    (the release decays stage-1 latents only after epoch 1000)."""
    if not interval:
        return float(base)
    k = int(epoch) // int(interval)
    if k * int(interval) <= start:
        return float(base)
    return float(base) * float(factor) ** k
