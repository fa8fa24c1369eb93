"""Adam for the fits' few latent and pose tensors, without torch.optim's start-up cost.

torch.optim's optimisers import ``torch._dynamo`` on first use (``add_param_group``,
``zero_grad`` and ``step`` are wrapped to keep compilation out): 2.3 s on the 2-core reference
CPU, once per process, as much as the whole ICP stage of the automatic pose. The fits need
only plain Adam (the release's optimiser with torch's defaults: betas (0.9, 0.999), eps 1e-8,
no weight decay, no amsgrad) on a handful of tensors, so this is torch's single-tensor Adam
update, operation for operation (the same values, tested against ``torch.optim.Adam`` step by
step), with the parts of its interface the fits use: ``param_groups`` (lists of dicts whose
``lr`` may change between steps), ``add_param_group``, ``zero_grad`` and ``step``.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Tuple, Union

import torch

ParamsLike = Union[Iterable[torch.Tensor], Iterable[Dict[str, Any]]]


class Adam:
    """``torch.optim.Adam(params, lr, betas, eps)`` (no weight decay, amsgrad, maximize or
    capturable mode)."""

    def __init__(self, params: ParamsLike, lr: float = 1e-3, betas: Tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        if lr < 0 or eps < 0 or not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"invalid Adam settings: lr {lr}, betas {betas}, eps {eps}")
        self.defaults: Dict[str, Any] = {"lr": float(lr), "betas": (float(betas[0]), float(betas[1])),
                                         "eps": float(eps)}
        self.param_groups: List[Dict[str, Any]] = []
        self.state: Dict[torch.Tensor, Dict[str, Any]] = {}
        params = list(params)
        if not params:
            raise ValueError("Adam got an empty parameter list")
        for group in params if isinstance(params[0], dict) else [{"params": params}]:
            self.add_param_group(group)

    def add_param_group(self, group: Dict[str, Any]) -> None:
        """Add a group (``{"params": tensors, "lr": ...}``; missing settings from the defaults)."""
        group = dict(group)
        params = group["params"]
        group["params"] = [params] if isinstance(params, torch.Tensor) else list(params)
        for key, value in self.defaults.items():
            group.setdefault(key, value)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in group["params"]):
            raise ValueError("some parameters appear in more than one parameter group")
        self.param_groups.append(group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.detach_()
                    p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, eps = group["lr"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state.get(p)
                if state is None:
                    state = self.state[p] = {"step": 0, "exp_avg": torch.zeros_like(p),
                                             "exp_avg_sq": torch.zeros_like(p)}
                state["step"] += 1
                grad, exp_avg, exp_avg_sq = p.grad, state["exp_avg"], state["exp_avg_sq"]
                exp_avg.lerp_(grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                step = float(state["step"])
                bias_correction1 = 1 - beta1**step
                bias_correction2_sqrt = (1 - beta2**step) ** 0.5
                denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
                p.addcdiv_(exp_avg, denom, value=-(lr / bias_correction1))


__all__ = ["Adam"]
