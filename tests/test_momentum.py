"""EMA copies: exact limits, the formula by hand, no gradients, clear errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from aetnet.strategies.aet.momentum import MomentumPairs, ema_update_, make_momentum_copy, momentum_param_pairs


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3), nn.Dropout(0.1), nn.Linear(3, 2))


def _perturb(module: nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=gen))


def test_copy_is_frozen_and_equal_and_follows_parent_mode():
    online = _tiny()
    online.train()
    twin = make_momentum_copy(online)
    assert all(not p.requires_grad for p in twin.parameters())
    assert all(p.requires_grad for p in online.parameters())
    for (n1, a), (n2, b) in zip(online.named_parameters(), twin.named_parameters()):
        assert n1 == n2 and torch.equal(a, b) and a.data_ptr() != b.data_ptr()
    parent = nn.Module()
    parent.online, parent.twin = online, twin
    parent.eval()
    assert not twin.training and not twin[2].training
    parent.train()
    assert twin.training


def test_m_zero_copies_and_m_one_freezes_exactly():
    online = _tiny()
    twin = make_momentum_copy(online)
    _perturb(online, 1)
    before = [p.clone() for p in twin.parameters()]
    src, dst = momentum_param_pairs(online, twin)
    ema_update_(src, dst, 1.0)
    assert all(torch.equal(a, b) for a, b in zip(before, twin.parameters()))
    ema_update_(src, dst, 0.0)
    assert all(torch.equal(a, b) for a, b in zip(online.parameters(), twin.parameters()))


def test_one_step_matches_formula_elementwise():
    online = _tiny()
    twin = make_momentum_copy(online)
    _perturb(online, 2)
    m = 0.9
    expected = []
    for p_on, p_m in zip(online.parameters(), twin.parameters()):
        flat_on, flat_m = p_on.detach().flatten().tolist(), p_m.flatten().tolist()
        expected.append([m * b + (1 - m) * a for a, b in zip(flat_on, flat_m)])
    online_before = [p.detach().clone() for p in online.parameters()]
    MomentumPairs([(online, twin)]).update(m)
    for exp, p_m in zip(expected, twin.parameters()):
        assert p_m.flatten().tolist() == pytest.approx(exp, rel=1e-6, abs=1e-6)
    # the online side is never written
    assert all(torch.equal(a, b) for a, b in zip(online_before, online.parameters()))


def test_momentum_copy_never_gets_gradients():
    online = _tiny()
    twin = make_momentum_copy(online)
    x = torch.randn(5, 4)
    loss = online(x).sum() + twin(x).sum()
    loss.backward()
    assert all(p.grad is not None for p in online.parameters())
    assert all(p.grad is None for p in twin.parameters())
    MomentumPairs([(online, twin)]).update(0.5)
    assert all(p.grad is None and not p.requires_grad for p in twin.parameters())


def test_trainable_only_tracks_only_trainable_parameters():
    online = _tiny()
    twin = make_momentum_copy(online)
    online[0].weight.requires_grad_(False)
    src, dst = momentum_param_pairs(online, twin, trainable_only=True)
    assert len(src) == len(list(online.parameters())) - 1
    assert all(s is not online[0].weight for s in src)
    frozen_before = twin[0].weight.clone()
    _perturb(online, 3)
    MomentumPairs([(online, twin)], trainable_only=True).update(0.0)
    assert torch.equal(twin[0].weight, frozen_before)
    assert torch.equal(twin[3].weight, online[3].weight)


def test_several_pairs_in_one_update():
    a, b = nn.Linear(2, 2), nn.Linear(3, 1)
    am, bm = make_momentum_copy(a), make_momentum_copy(b)
    _perturb(a, 4)
    _perturb(b, 5)
    pairs = MomentumPairs([(a, am), (b, bm)])
    assert pairs.num_tensors() == 4
    pairs.reset()
    assert torch.equal(am.weight, a.weight) and torch.equal(bm.bias, b.bias)


def test_mismatched_lists_raise():
    a = [torch.zeros(2), torch.zeros(3)]
    with pytest.raises(ValueError, match="2 online tensors but 1"):
        ema_update_(a, [torch.zeros(2)], 0.5)
    with pytest.raises(ValueError, match="shape"):
        ema_update_(a, [torch.zeros(2), torch.zeros(4)], 0.5)
    with pytest.raises(ValueError, match="floating"):
        ema_update_([torch.zeros(2, dtype=torch.long)], [torch.zeros(2, dtype=torch.long)], 0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ema_update_(a, [torch.zeros(2), torch.zeros(3)], 1.5)
    online = _tiny()
    with pytest.raises(ValueError, match="no counterpart"):
        momentum_param_pairs(online, nn.Sequential(nn.Linear(4, 3)))
    other = nn.Sequential(nn.Linear(4, 5), nn.LayerNorm(3), nn.Dropout(0.1), nn.Linear(3, 2))
    with pytest.raises(ValueError, match="differs"):
        MomentumPairs([(online, other)])


def test_copy_buffers_option():
    online = nn.BatchNorm1d(3)
    twin = make_momentum_copy(online)
    online(torch.randn(8, 3) * 5 + 2)  # changes running stats of the online module only
    assert not torch.equal(online.running_mean, twin.running_mean)
    MomentumPairs([(online, twin)]).update(0.9)
    assert not torch.equal(online.running_mean, twin.running_mean)
    MomentumPairs([(online, twin)], copy_buffers=True).update(0.9)
    assert torch.equal(online.running_mean, twin.running_mean)
    assert torch.equal(online.running_var, twin.running_var)
    assert twin.num_batches_tracked.item() == 0  # integer buffers are left alone
