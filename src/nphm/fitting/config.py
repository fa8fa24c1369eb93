"""The fitting config (``configs/fitting_*.yaml``): the experiments a fit uses and its settings.

Release keys at the top level, our settings in the ``fitting:`` block::

    exp_name_shape: nphm_identity_space_pretrained   # EXPERIMENT_DIR/{exp_name_shape}/
    checkpoint_shape: 15000                          # epoch; null = the newest checkpoint
    mode: compress                                   # the expression model's mode (informative)
    local_shape: true                                # NPHM (local) identity; false: NPM
    local_expr: false
    exp_name_expr: nphm_expression_space_pretrained  # null = identity-only fitting
    checkpoint_expr: 2500
    fitting: {...}                                   # nphm.fitting.schedule.FittingSettings

Other top-level keys are accepted and kept (:attr:`FittingConfig.extra`). :meth:`FittingConfig.to_config`
writes the keys of the file the config was read from (plus those changed since), so that the
copy a fit saves next to its results holds what the file held.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional

from nphm.config import load_yaml
from nphm.fitting.schedule import FittingSettings
from nphm.utils.io import PathLike


#: Sections of the config that :attr:`FittingConfig.layout` follows key by key (the others are
#: written whole): the ``fitting`` block and its ``broyden`` and ``pose`` settings.
_NESTED: Dict[str, Any] = {"fitting": {"broyden": {}, "pose": {}}}


def _skeleton(mapping: Mapping[str, Any], nested: Mapping[str, Any]) -> Dict[str, Any]:
    """The keys of ``mapping`` (in order): None for a value written whole, a skeleton for a
    section of ``nested``."""
    return {k: _skeleton(v, nested[k]) if k in nested and isinstance(v, Mapping) else None
            for k, v in mapping.items()}


def _written(full: Mapping[str, Any], skeleton: Mapping[str, Any]) -> Dict[str, Any]:
    """The entries of ``full`` that ``skeleton`` names, in its order."""
    out = {}
    for key, sub in skeleton.items():
        if key in full:
            value = full[key]
            out[key] = _written(value, sub) if sub is not None and isinstance(value, Mapping) else value
    return out


def _epoch(cfg: Mapping[str, Any], key: str) -> Optional[int]:
    value = cfg.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not str(value).lstrip("-").isdigit():
        raise ValueError(f"{key} must be an epoch number or null, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class FittingConfig:
    """A fitting config: the identity (and expression) experiment and the fitting settings.

    Attributes:
        exp_name_shape: identity experiment (a folder of the experiment root).
        checkpoint_shape: its epoch (None: the newest checkpoint).
        mode: the expression model's mode as written in the config (not read by the fitting).
        local_shape: the identity model is NPHM's local ensemble (False: NPM's global DeepSDF).
        local_expr: the release's flag for local expression models (not read by the fitting).
        exp_name_expr: expression experiment (None: identity-only fitting).
        checkpoint_expr: its epoch (None: the newest checkpoint).
        settings: the ``fitting:`` block.
        extra: other top-level keys (kept and written back).
        layout: the keys :meth:`to_config` writes (the skeleton of the mapping the config was
            read from, plus the keys changed since; None: all of them).
    """

    exp_name_shape: str
    checkpoint_shape: Optional[int] = None
    mode: Optional[str] = None
    local_shape: bool = True
    local_expr: bool = False
    exp_name_expr: Optional[str] = None
    checkpoint_expr: Optional[int] = None
    settings: FittingSettings = field(default_factory=FittingSettings)
    extra: Dict[str, Any] = field(default_factory=dict)
    layout: Optional[Dict[str, Any]] = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.exp_name_shape:
            raise ValueError("'exp_name_shape' (the identity experiment) is required")
        for key in ("local_shape", "local_expr"):
            if not isinstance(getattr(self, key), bool):
                raise ValueError(f"{key} must be true or false, got {getattr(self, key)!r}")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "FittingConfig":
        """The config stored in a mapping (a parsed ``configs/fitting_*.yaml``).

        Raises:
            ValueError: ``exp_name_shape`` is missing or a value is invalid (the message names the key).
        """
        if not isinstance(cfg, Mapping):
            raise ValueError(f"a fitting config is a mapping, got {type(cfg).__name__}")
        names = {f.name for f in dataclasses.fields(cls)} - {"settings", "extra", "layout"}
        optional_str = {k: None if cfg.get(k) is None else str(cfg[k]) for k in ("mode", "exp_name_expr")}
        return cls(
            exp_name_shape=str(cfg.get("exp_name_shape") or ""),
            checkpoint_shape=_epoch(cfg, "checkpoint_shape"),
            local_shape=cfg.get("local_shape", True),
            local_expr=cfg.get("local_expr", False),
            checkpoint_expr=_epoch(cfg, "checkpoint_expr"),
            settings=FittingSettings.from_config(cfg.get("fitting")),
            extra={k: copy.deepcopy(v) for k, v in cfg.items() if k not in names and k != "fitting"},
            layout=_skeleton(cfg, _NESTED),
            **optional_str,
        )

    @classmethod
    def load(cls, path: PathLike) -> "FittingConfig":
        """Read a fitting config file.

        Raises:
            FileNotFoundError: no such file.
            ValueError: not a YAML mapping, or an invalid config (the message names the file).
        """
        cfg = load_yaml(path, "fitting config")
        try:
            return cls.from_config(cfg)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: {e}") from e

    def to_config(self) -> Dict[str, Any]:
        """The mapping this config is read from (release keys, plain YAML types)."""
        full = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in ("settings", "extra", "layout")}
        full.update(copy.deepcopy(self.extra))
        full["fitting"] = self.settings.to_config()
        return full if self.layout is None else _written(full, self.layout)

    # ------------------------------------------------------------------ changes
    def replace(self, **changes: Any) -> "FittingConfig":
        """A copy with some fields changed (``exp_name_expr=None``, ``settings=...``; validated again)."""
        layout = copy.deepcopy(self.layout)
        if layout is not None:
            for key in changes:
                if key == "settings":
                    layout["fitting"] = None
                elif key not in ("extra", "layout"):
                    layout.setdefault(key, None)
        return dataclasses.replace(self, **{"layout": layout, **changes})

    def with_settings(self, **changes: Any) -> "FittingConfig":
        """A copy with some fitting settings changed (fields of :class:`FittingSettings`:
        ``steps``, ``step_scale``, ...); :meth:`to_config` writes them in the ``fitting`` block."""
        layout = copy.deepcopy(self.layout)
        if layout is not None:
            fitting = layout.setdefault("fitting", {})
            if fitting is not None:
                fitting.update(dict.fromkeys(changes))
        return dataclasses.replace(self, settings=self.settings.replace(**changes), layout=layout)

    def with_steps(self, steps: int) -> "FittingConfig":
        """:meth:`with_settings` for ``fitting.steps`` (release steps, before ``step_scale``)."""
        return self.with_settings(steps=int(steps))

    def with_step_scale(self, step_scale: float) -> "FittingConfig":
        """:meth:`with_settings` for ``fitting.step_scale``."""
        return self.with_settings(step_scale=float(step_scale))

    # ------------------------------------------------------------------ derived
    @property
    def method(self) -> str:
        """``"NPHM"`` for a local identity model, ``"NPM"`` otherwise."""
        return "NPHM" if self.local_shape else "NPM"
