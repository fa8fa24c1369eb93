"""Build the networks from the release's configuration dictionaries (``configs/*.yaml``).

Where the release's configs are known to disagree with its own weights, the tensor shapes of a
state dict (when given) win: the anchor MLP width (``pos_mlp_dim``: missing in ``nphm.yaml``,
128 in ``nphm_def.yaml``, 256 in every released model) and the NPM deformation MLP (yaml says
512 wide; the release always builds 8 x 1024).
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import torch
from torch import nn

from nphm.models.deformation import NPHMDeformation, NPMDeformation
from nphm.models.identity import NPHMIdentity, NPMIdentity

DEFAULT_POS_MLP_DIM = 256
NPM_DEFORMATION_HIDDEN = 1024
NPM_DEFORMATION_LAYERS = 8


def identity_section(cfg: Mapping[str, Any]) -> Mapping[str, Any]:
    """The identity decoder settings: ``decoder`` (stage-1 config) or ``id_decoder`` (stage 2)."""
    for key in ("decoder", "id_decoder"):
        if key in cfg and cfg[key] is not None:
            return cfg[key]
    raise KeyError("config has neither a 'decoder' nor an 'id_decoder' section")


def config_is_local(decoder_cfg: Mapping[str, Any]) -> bool:
    """Whether a ``decoder`` / ``id_decoder`` config section describes an NPHM (local ensemble)
    identity: NPHM configs name the number of anchors, NPM configs do not."""
    return "decoder_nloc" in decoder_cfg


def model_is_local(identity: nn.Module) -> bool:
    """Whether an identity model is NPHM-style (global + local latent parts) rather than one
    global latent (NPM)."""
    return hasattr(identity, "lat_dim_glob") and hasattr(identity, "lat_dim_loc")


def identity_from_config(
    decoder_cfg: Mapping[str, Any],
    anchors_mean: Optional[torch.Tensor] = None,
    state_dict: Optional[Mapping[str, torch.Tensor]] = None,
) -> nn.Module:
    """NPHM or NPM identity model from a ``decoder`` / ``id_decoder`` config section."""
    if config_is_local(decoder_cfg):
        pos_mlp_dim = DEFAULT_POS_MLP_DIM
        if state_dict is not None and "mlp_pos.0.weight" in state_dict:
            pos_mlp_dim = int(state_dict["mlp_pos.0.weight"].shape[0])
        return NPHMIdentity(
            lat_dim_glob=int(decoder_cfg["decoder_lat_dim_glob"]),
            lat_dim_loc=int(decoder_cfg["decoder_lat_dim_loc"]),
            n_loc=int(decoder_cfg["decoder_nloc"]),
            n_symm_pairs=int(decoder_cfg["decoder_nsymm_pairs"]),
            hidden_dim=int(decoder_cfg["decoder_hidden_dim"]),
            n_layers=int(decoder_cfg.get("decoder_nlayers", 4)),
            pos_mlp_dim=pos_mlp_dim,
            anchors_mean=anchors_mean,
        )
    return NPMIdentity(
        lat_dim=int(decoder_cfg["decoder_lat_dim"]),
        hidden_dim=int(decoder_cfg["decoder_hidden_dim"]),
        n_layers=int(decoder_cfg.get("decoder_nlayers", 8)),
    )


def identity_latent_dim(decoder_cfg: Mapping[str, Any]) -> int:
    """Size of the identity latent described by a decoder config section."""
    if config_is_local(decoder_cfg):
        return int(decoder_cfg["decoder_lat_dim_glob"]) + (int(decoder_cfg["decoder_nloc"]) + 1) * int(
            decoder_cfg["decoder_lat_dim_loc"]
        )
    return int(decoder_cfg["decoder_lat_dim"])


def infer_deformation_mode(state_dict: Mapping[str, torch.Tensor], lat_dim_expr: int, lat_dim_glob: int) -> str:
    """Deformation mode from the parameter names and the MLP's input size."""
    if "compressor.0.weight" in state_dict:
        return "compress"
    if "lin0.weight" in state_dict:
        return "npm"
    if "defDeepSDF.lin0.weight" in state_dict:
        d_in = int(state_dict["defDeepSDF.lin0.weight"].shape[1])
        if d_in == 3 + lat_dim_expr:
            return "expr_only"
        if d_in == 3 + lat_dim_glob + lat_dim_expr:
            return "glob_only"
    raise ValueError("cannot tell the deformation mode from the state dict's parameters")


def deformation_from_config(
    cfg: Mapping[str, Any],
    mode: Optional[str] = None,
    state_dict: Optional[Mapping[str, torch.Tensor]] = None,
) -> nn.Module:
    """Deformation network from a stage-2 config (``ex_decoder`` + ``id_decoder`` sections).

    ``mode``: ``compress``, ``glob_only``, ``expr_only`` or ``npm``; default ``ex_decoder.mode``
    of the config, else inferred from ``state_dict``.
    """
    ex = cfg["ex_decoder"]
    id_cfg = identity_section(cfg)
    local = config_is_local(id_cfg)
    if mode is None:
        mode = ex.get("mode")
    if mode is None and state_dict is not None:
        lat_glob = int(id_cfg.get("decoder_lat_dim_glob", 0))
        mode = infer_deformation_mode(state_dict, int(ex.get("decoder_lat_dim_expr", ex.get("decoder_lat_dim", 200))), lat_glob)
    if mode is None:
        mode = "compress" if local else "npm"
    if mode == "npm":
        n_layers = NPM_DEFORMATION_LAYERS
        hidden = NPM_DEFORMATION_HIDDEN
        if state_dict is not None and "lin0.weight" in state_dict:
            hidden = int(state_dict["lin0.weight"].shape[0])
            n_layers = sum(1 for k in state_dict if k.startswith("lin") and k.endswith(".weight")) - 1
        return NPMDeformation(
            lat_dim_id=identity_latent_dim(id_cfg),
            lat_dim_expr=int(ex.get("decoder_lat_dim_expr", ex.get("decoder_lat_dim", 200))),
            hidden_dim=hidden,
            n_layers=n_layers,
        )
    if not local:
        raise ValueError(f"deformation mode {mode!r} needs an NPHM (local) identity config")
    return NPHMDeformation(
        mode=mode,
        lat_dim_expr=int(ex["decoder_lat_dim_expr"]),
        lat_dim_id_compressed=int(ex.get("decoder_lat_dim_id", 32)),
        lat_dim_glob_shape=int(id_cfg["decoder_lat_dim_glob"]),
        lat_dim_loc_shape=int(id_cfg["decoder_lat_dim_loc"]),
        n_loc=int(id_cfg["decoder_nloc"]),
        hidden_dim=int(ex["decoder_hidden_dim"]),
        n_layers=int(ex["decoder_nlayers"]),
    )
