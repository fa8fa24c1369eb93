"""DeepSDF-style MLP with a skip connection, evaluated without copying the latent per point.

Layer ``lin{i}`` is an ordinary ``nn.Linear`` so that parameter names match the release's
checkpoints. With ``nlayers`` hidden layers the input ``[xyz, lat]`` is concatenated back in at
layer ``nlayers // 2`` (divided by sqrt(2)); the layer before it outputs ``hidden - d_in``.

Speed-up over the straightforward evaluation: the first layer and the skip layer are affine in
the latent, so their latent part ``W_lat @ lat (+ b)`` is computed once per latent and added as
a bias, instead of concatenating a copy of the latent to every point.

:meth:`DeepSDF.forward_with_jacobian` also returns the Jacobian w.r.t. the 3 spatial inputs by
forward mode: the three tangents travel through the layers together with the primal values, one
matmul of ``3 N`` rows per layer, and the activation derivative ``sigmoid(beta h)`` is computed
once per layer for all three (the three backward passes of autograd recompute it three times).
"""
from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

SOFTPLUS_BETA = 100.0
#: ``F.softplus``'s default: above ``beta * x = 20`` it returns ``x``
SOFTPLUS_THRESHOLD = 20.0


def skip_layer_index(nlayers: int) -> int:
    """Index of the layer whose input is ``concat(h, input) / sqrt(2)``."""
    return nlayers // 2


def layer_dims(d_in: int, hidden_dim: int, nlayers: int, out_dim: int) -> List[tuple]:
    """(in_features, out_features) of ``lin0 .. lin{nlayers}`` of a DeepSDF MLP."""
    if hidden_dim <= d_in:
        raise ValueError(f"hidden_dim ({hidden_dim}) must exceed the input size ({d_in}) for the skip connection")
    dims = [d_in] + [hidden_dim] * nlayers + [out_dim]
    skip = skip_layer_index(nlayers)
    shapes = []
    for layer in range(nlayers + 1):
        out_features = dims[layer + 1] - d_in if layer + 1 == skip else dims[layer + 1]
        shapes.append((dims[layer], out_features))
    return shapes


def _tangent_linear(tangent: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``tangent (..., in) @ weight.T`` as one 2-D matmul in the tangent's dtype (a broadcast
    tangent would otherwise go to a batched matmul with the weight copied per point)."""
    flat = tangent.reshape(-1, tangent.shape[-1]) @ weight.to(tangent.dtype).T
    return flat.reshape(*tangent.shape[:-1], weight.shape[0])


class DeepSDF(nn.Module):
    """MLP ``f(xyz, lat)`` with Softplus(beta=100) activations and one skip connection.

    Args:
        lat_dim: latent size ``L``.
        hidden_dim: width of the hidden layers.
        nlayers: number of hidden layers (``nlayers + 1`` linear layers in total).
        out_dim: output channels (1 for an SDF, 3 for a deformation).
        input_dim: spatial input size (3).
        geometric_init: initialise the last layer as the release does for SDFs
            (weights ~ N(sqrt(pi)/sqrt(hidden), 1e-5), bias -radius_init).
    """

    def __init__(
        self,
        lat_dim: int,
        hidden_dim: int,
        nlayers: int = 8,
        out_dim: int = 1,
        input_dim: int = 3,
        geometric_init: bool = False,
        radius_init: float = 1.0,
    ) -> None:
        super().__init__()
        self.lat_dim = lat_dim
        self.input_dim = input_dim
        self.hidden_dim = hidden_dim
        self.nlayers = nlayers
        self.out_dim = out_dim
        self.d_in = input_dim + lat_dim
        self.skip = skip_layer_index(nlayers)
        for layer, (fan_in, fan_out) in enumerate(layer_dims(self.d_in, hidden_dim, nlayers, out_dim)):
            lin = nn.Linear(fan_in, fan_out)
            if geometric_init and layer == nlayers:
                nn.init.normal_(lin.weight, mean=math.sqrt(math.pi) / math.sqrt(fan_in), std=1e-5)
                nn.init.constant_(lin.bias, -radius_init)
            setattr(self, f"lin{layer}", lin)

    def layers(self) -> List[nn.Linear]:
        return [getattr(self, f"lin{i}") for i in range(self.nlayers + 1)]

    def latent_biases(self, lat: torch.Tensor) -> tuple:
        """Latent-dependent parts of the first and the skip layer.

        Args:
            lat: (B, L) latent codes.
        Returns:
            ``(c0, cs)``, each (B, out): the bias that replaces the latent input of ``lin0`` and
            of the skip layer (its latent part already divided by sqrt(2), plus the bias).
        """
        lin0 = self.lin0
        lin_s = getattr(self, f"lin{self.skip}")
        c0 = F.linear(lat, lin0.weight[:, self.input_dim:], lin0.bias)
        cs = F.linear(lat, lin_s.weight[:, -self.lat_dim:]) / math.sqrt(2.0) + lin_s.bias
        return c0, cs

    def forward(self, xyz: torch.Tensor, lat: torch.Tensor) -> torch.Tensor:
        """Evaluate the MLP.

        Args:
            xyz: (B, N, 3) query points.
            lat: (B, L) one latent per batch element (never per point).
        Returns:
            (B, N, out_dim)
        """
        return self._evaluate(xyz, lat, with_jacobian=False)[0]

    def forward_with_jacobian(
        self, xyz: torch.Tensor, lat: torch.Tensor, tangent_dtype: Optional[torch.dtype] = None
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Outputs and their Jacobian w.r.t. ``xyz`` in one forward-mode pass.

        Args:
            xyz: (B, N, 3) query points; lat: (B, L) latents.
            tangent_dtype: dtype of the tangent matmuls (default: that of ``xyz``). ``bfloat16``
                runs them on the CPU's bf16 matrix units; the outputs stay in full precision,
                the Jacobian carries bf16 rounding (about 1e-2 relative on ``d out / d xyz``).
        Returns:
            ``(out (B, N, out_dim), jac (B, N, out_dim, 3))`` with ``jac[b, n, i, j] = d out_i / d xyz_j``.
            ``out`` carries the autograd graph as :meth:`forward` does; ``jac`` is detached.
        """
        h, tangent = self._evaluate(xyz, lat, with_jacobian=True, tangent_dtype=tangent_dtype)
        return h, tangent.transpose(-1, -2).to(h.dtype)

    def _evaluate(self, xyz: torch.Tensor, lat: torch.Tensor, with_jacobian: bool,
                  tangent_dtype: Optional[torch.dtype] = None) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The layer loop of :meth:`forward` and, with ``with_jacobian``, the forward-mode
        tangents ``(B, N, 3, width)`` (row j: d h / d xyz_j) carried along without a graph."""
        if lat.dim() != 2 or lat.shape[-1] != self.lat_dim:
            raise ValueError(f"expected latent of shape (B, {self.lat_dim}), got {tuple(lat.shape)}")
        c0, cs = self.latent_biases(lat)
        inv_sqrt2 = 1.0 / math.sqrt(2.0)
        x_dim = self.input_dim
        h = None
        tangent = None
        for layer, lin in enumerate(self.layers()):
            weight = lin.weight.detach()
            if layer == 0:
                h = F.linear(xyz, lin.weight[:, :x_dim]) + c0[:, None, :]
                if with_jacobian:
                    tangent = weight[:, :x_dim].T.to(tangent_dtype or xyz.dtype).expand(*xyz.shape[:-1], x_dim, -1)
            elif layer == self.skip:
                n_h = lin.in_features - self.d_in
                h = (F.linear(h, lin.weight[:, :n_h]) + F.linear(xyz, lin.weight[:, n_h:n_h + x_dim])) * inv_sqrt2
                h = h + cs[:, None, :]
                if with_jacobian:
                    with torch.no_grad():
                        skip_x = weight[:, n_h:n_h + x_dim].T.to(tangent.dtype)
                        tangent = (_tangent_linear(tangent, weight[:, :n_h]) + skip_x) * inv_sqrt2
            else:
                h = lin(h)
                if with_jacobian:
                    with torch.no_grad():
                        tangent = _tangent_linear(tangent, weight)
            if layer < self.nlayers:
                if with_jacobian:
                    with torch.no_grad():
                        # d softplus_beta(h) / dh = sigmoid(beta h), and 1 on softplus's linear branch
                        scaled = h.detach() * SOFTPLUS_BETA
                        slope = torch.where(scaled > SOFTPLUS_THRESHOLD, 1.0, torch.sigmoid(scaled))
                        tangent = tangent * slope.to(tangent.dtype)[..., None, :]
                h = F.softplus(h, beta=SOFTPLUS_BETA)
        return h, tangent
