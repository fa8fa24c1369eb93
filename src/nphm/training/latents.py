"""Auto-decoder latent tables: ``nn.Embedding(max_norm=1, sparse=True)`` with ``SparseAdam``.

A lookup renormalises the rows it reads in place (rows longer than ``max_norm`` are scaled to
it), and the gradient is sparse: only the rows of the batch get Adam updates, as in the
release. With several processes the table is replicated: every process renormalises all rows
of the *global* batch (so replicas stay equal), and the sparse gradients are summed over
processes before clipping and stepping.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist
from torch import nn

from nphm.training.distributed import DistInfo

MAX_NORM = 1.0


def renormalized(z: torch.Tensor, max_norm: float = MAX_NORM) -> torch.Tensor:
    """What an ``nn.Embedding(max_norm=...)`` lookup returns for rows ``z`` (n, D)."""
    norm = torch.linalg.vector_norm(z, dim=-1, keepdim=True)
    return torch.where(norm > max_norm, z * (max_norm / (norm + 1e-7)), z)


class LatentTable:
    """``n`` latent codes of size ``dim`` and their optimiser.

    Args:
        init_std: codes start as N(0, init_std^2).
        lr: SparseAdam learning rate.
    """

    def __init__(self, n: int, dim: int, init_std: float, lr: float, device: torch.device,
                 max_norm: float = MAX_NORM) -> None:
        self.embedding = nn.Embedding(n, dim, max_norm=max_norm, sparse=True).to(device)
        with torch.no_grad():
            nn.init.normal_(self.embedding.weight, 0.0, float(init_std))
        self.optimizer = torch.optim.SparseAdam(list(self.embedding.parameters()), lr=float(lr))

    @property
    def weight(self) -> torch.Tensor:
        return self.embedding.weight

    def __len__(self) -> int:
        return self.embedding.num_embeddings

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = float(lr)

    def zero_grad(self) -> None:
        self.embedding.weight.grad = None

    def renormalize(self, rows: torch.Tensor) -> None:
        """Apply the ``max_norm`` renormalisation to ``rows`` (what a lookup does)."""
        if rows.numel():
            with torch.no_grad():
                self.embedding(rows)

    def lookup(self, rows: torch.Tensor, global_rows: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Codes (b, dim) of ``rows`` (b,), differentiable (sparse gradient).

        ``global_rows``: every row of the global batch; renormalised first so that all
        processes apply the same in-place renormalisation.
        """
        if global_rows is not None:
            self.renormalize(global_rows)
        return self.embedding(rows)

    def reduce_gradient(self, global_rows: torch.Tensor, info: DistInfo) -> None:
        """Make ``weight.grad`` the coalesced sparse gradient of the whole global batch.

        Single process: coalesces the local gradient. Several processes: sums the gradients
        of the rows in ``global_rows`` over all processes.
        """
        weight = self.embedding.weight
        grad = weight.grad
        if not info.enabled:
            if grad is not None:
                weight.grad = grad.coalesce()
            return
        rows = torch.unique(global_rows.to(weight.device))
        dense = torch.zeros(len(rows), weight.shape[1], dtype=weight.dtype, device=weight.device)
        if grad is not None:
            grad = grad.coalesce()
            where = torch.searchsorted(rows, grad.indices()[0])
            dense.index_add_(0, where, grad.values())
        dist.all_reduce(dense, op=dist.ReduceOp.SUM)
        weight.grad = torch.sparse_coo_tensor(rows[None], dense, weight.shape).coalesce()

    def clip_gradient(self, max_norm: Optional[float]) -> Optional[float]:
        """Scale the gradient so that its norm is at most ``max_norm`` (``clip_grad_norm_``'s
        rule, which does not accept sparse gradients). Returns the norm before clipping."""
        grad = self.embedding.weight.grad
        if grad is None or max_norm is None:
            return None
        if not grad.is_coalesced():
            grad = grad.coalesce()
            self.embedding.weight.grad = grad
        values = grad._values()
        norm = torch.linalg.vector_norm(values)
        coef = torch.clamp(float(max_norm) / (norm + 1e-6), max=1.0)
        values.mul_(coef)
        return float(norm)

    def step(self) -> None:
        if self.embedding.weight.grad is not None:
            self.optimizer.step()
