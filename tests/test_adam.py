"""nphm.fitting.adam.Adam against torch.optim.Adam: the same values, step by step."""
import pytest
import torch

from nphm.fitting.adam import Adam


def _loss(a: torch.Tensor, b: torch.Tensor, k: int) -> torch.Tensor:
    return ((a - 0.3).pow(2) * (1 + k % 3)).sum() + torch.sin(3 * b).sum() + (a.sum() * b.mean()) ** 2


def test_adam_matches_torch_step_by_step():
    """Two groups (own learning rates, changed between steps; a group whose gradient is
    dropped on some steps, as the fit's pose before its start step): every iterate equal to
    torch's to the last bit."""
    torch.manual_seed(0)
    a0, b0 = torch.randn(5, 7), torch.randn(3)
    ours = [a0.clone().requires_grad_(True), b0.clone().requires_grad_(True)]
    ref = [a0.clone().requires_grad_(True), b0.clone().requires_grad_(True)]
    opt = Adam([ours[0]], lr=0.01)
    opt.add_param_group({"params": [ours[1]], "lr": 0.05, "base_lr": 0.05})
    opt_ref = torch.optim.Adam([ref[0]], lr=0.01)
    opt_ref.add_param_group({"params": [ref[1]], "lr": 0.05})
    for k in range(40):
        for o in (opt, opt_ref):
            o.param_groups[0]["lr"] = 0.01 * 0.5 ** (k // 10)
            o.param_groups[1]["lr"] = 0.05 * 0.7 ** (k // 15)
        for o, (a, b) in ((opt, ours), (opt_ref, ref)):
            o.zero_grad(set_to_none=True)
            _loss(a, b, k).backward()
            if k < 12:
                b.grad = None  # skipped: its state does not advance
            o.step()
        assert torch.equal(ours[0], ref[0]) and torch.equal(ours[1], ref[1]), k
    assert opt.state[ours[1]]["step"] == 28
    assert not torch.equal(ours[0], a0)


def test_adam_interface():
    p = torch.zeros(3, requires_grad=True)
    opt = Adam([{"params": p, "lr": 0.1}], betas=(0.8, 0.99))
    assert opt.param_groups[0]["betas"] == (0.8, 0.99) and opt.param_groups[0]["eps"] == 1e-8
    p.sum().backward()
    opt.zero_grad(set_to_none=False)
    assert p.grad is not None and not p.grad.any()
    opt.zero_grad()
    assert p.grad is None
    with pytest.raises(ValueError, match="more than one"):
        opt.add_param_group({"params": [p]})
    with pytest.raises(ValueError, match="empty"):
        Adam([])
