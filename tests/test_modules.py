"""Compressible layers in ``nni_udc.nn``: gradients, exact sparsity, low-rank fidelity, freezing, validation."""
from __future__ import annotations

import math
import re

import nni
import pytest
import torch
from nni.nas.nn.pytorch import ModelSpace
from torch import nn

from nni_udc.nn import (
    ActivationQuantizer,
    LowRankConv2d,
    LowRankLinear,
    MutableLowRankConv2d,
    MutableLowRankLinear,
    MutableQuantConv2d,
    MutableQuantLinear,
    MutableSparseConv2d,
    MutableSparseLinear,
    QuantConv2d,
    QuantLinear,
    SparseConv2d,
    SparseLinear,
    act_bits_choice,
    bits_choice,
    channel_bits_choice,
    rank_choice,
    sparsity_choice,
)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _assert_useful_grad(grad: torch.Tensor | None) -> None:
    assert grad is not None
    assert torch.isfinite(grad).all()
    assert grad.abs().sum() > 0


def _backprop(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    y = module(x)
    assert torch.isfinite(y).all()
    y.pow(2).sum().backward()
    return y


# --------------------------------------------------------------------------- gradients through the layers


def test_quant_conv_gradients_reach_weight_and_activation_clip():
    conv = QuantConv2d(2, 3, 3, padding=1, weight_bits=4, act_bits=4, sparsity=0.5, act_signed=False)
    conv.act_quant.log_clip.data.fill_(math.log(0.5))
    conv.act_quant.initialized.fill_(True)
    x = (torch.randn(2, 2, 5, 5) * 2).requires_grad_()
    _backprop(conv, x)
    _assert_useful_grad(conv.weight.grad)
    _assert_useful_grad(conv.act_quant.log_clip.grad)  # alpha learns through the clip
    _assert_useful_grad(x.grad)
    # pruned weights get no gradient, kept ones do
    pruned = conv.compressed_weight().detach() == 0
    mask_zero = (conv.weight.detach().abs() <= conv.weight.detach().abs().flatten().kthvalue(27).values)
    assert (conv.weight.grad[mask_zero] == 0).all()
    assert pruned[mask_zero].all()


def test_quant_linear_per_channel_bits_gradient_and_removed_channel():
    fc = QuantLinear(6, 4, weight_bits=[8, 0, 2, 32], act_bits=8)
    x = torch.randn(5, 6)
    y = _backprop(fc, x)
    _assert_useful_grad(fc.weight.grad)
    assert torch.equal(fc.weight.grad[1], torch.zeros(6))
    assert (fc.weight.grad[[0, 2, 3]].abs().sum(1) > 0).all()
    assert fc.bias[1] != 0 and not y[:, 1].any()  # a removed output stores nothing, bias included: it is 0
    assert fc.bias.grad[1] == 0 and (fc.bias.grad[[0, 2, 3]] != 0).all()


def test_activation_quantizer_initialises_clip_and_gets_gradient():
    q = ActivationQuantizer(3, signed=True)
    x = torch.randn(4, 8)
    q(x)
    assert q.clip.item() == pytest.approx(x.abs().max().item())
    q.log_clip.data.add_(math.log(0.5))
    x.requires_grad_()
    q(x).sum().backward()
    _assert_useful_grad(q.log_clip.grad)
    _assert_useful_grad(x.grad)


def test_activation_clip_stays_positive_under_a_loss_that_pushes_it_down():
    # Adam's fixed-size steps drove a plain clip parameter through zero (all activations then quantise to 0).
    q = ActivationQuantizer(4, signed=False)
    x = torch.rand(64, 8) * 3
    q(x)
    optimizer = torch.optim.Adam(q.parameters(), lr=0.1)
    for _ in range(300):  # 300 steps of 0.1 would move a plain parameter by up to 30
        optimizer.zero_grad()
        q(x).sum().backward()  # every clipped value pushes the clip down
        optimizer.step()
    assert 0 < float(q.clip) < 0.1
    assert q(x).max() > 0  # still a usable range: its values are not all quantised to 0


def test_activation_quantizer_levels():
    q = ActivationQuantizer(3, signed=False, init_clip=2.0)
    y = q(torch.linspace(-1.0, 4.0, 500))
    assert len(y.unique()) <= 2**3
    assert y.min() >= 0.0 and y.max() <= 2.0 + 1e-5
    assert torch.equal(ActivationQuantizer(32)(y), y)


@pytest.mark.parametrize("cls,args,x", [
    (SparseConv2d, (2, 3, 3), torch.randn(2, 2, 5, 5)),
    (SparseLinear, (7, 3), torch.randn(4, 7)),
])
def test_sparse_layers_gradient_reaches_scores_and_kept_weights(cls, args, x):
    layer = cls(*args, sparsity=0.5)
    _backprop(layer, x)
    _assert_useful_grad(layer.scores.grad)
    _assert_useful_grad(layer.weight.grad)
    kept = layer.mask().detach().bool()
    assert (layer.weight.grad[~kept] == 0).all()


@pytest.mark.parametrize("layer,x", [
    (lambda: LowRankConv2d(3, 5, 3, padding=1, rank=2), torch.randn(2, 3, 6, 6)),
    (lambda: LowRankLinear(7, 5, rank=3), torch.randn(4, 7)),
])
def test_low_rank_both_factors_get_gradient(layer, x):
    m = layer()
    _backprop(m, x)
    _assert_useful_grad(m.first.weight.grad)
    _assert_useful_grad(m.second.weight.grad)


# --------------------------------------------------------------------------- exact sparsity


def _spread_weights(weight: torch.Tensor) -> None:
    """Magnitudes in [0.5, 1]: no kept weight can round to zero at 8+ bits, so only the mask makes zeros."""
    with torch.no_grad():
        weight.copy_(torch.sign(torch.randn_like(weight)) * (0.5 + 0.5 * torch.rand_like(weight)))


@pytest.mark.parametrize("s", [0.0, 0.3, 0.5, 0.9])
@pytest.mark.parametrize("bits", [8, 16, 32])
@pytest.mark.parametrize("make", [lambda s, b: QuantConv2d(3, 5, 3, weight_bits=b, sparsity=s),
                                  lambda s, b: QuantLinear(7, 3, weight_bits=b, sparsity=s)],
                         ids=["conv", "linear"])
def test_quant_layers_compressed_weight_has_exact_zero_count(make, s, bits):
    layer = make(s, bits)
    _spread_weights(layer.weight)
    n = layer.weight.numel()
    assert n % 2 == 1
    assert int((layer.compressed_weight() == 0).sum()) == round(s * n)


@pytest.mark.parametrize("s", [0.0, 0.3, 0.5, 0.9])
@pytest.mark.parametrize("make", [lambda s: SparseConv2d(3, 5, 3, sparsity=s),
                                  lambda s: SparseLinear(7, 3, sparsity=s)], ids=["conv", "linear"])
def test_sparse_layers_masked_weight_has_exact_zero_count(make, s):
    layer = make(s)
    n = layer.weight.numel()
    assert n % 2 == 1
    assert int((layer.masked_weight() == 0).sum()) == round(s * n)
    # the initial scores are |w|: the first mask is the magnitude mask
    w = layer.weight.detach().abs()
    zero = layer.masked_weight().detach() == 0
    if 0 < round(s * n):
        assert w[zero].max() <= w[~zero].min()


# --------------------------------------------------------------------------- low rank fidelity


def test_low_rank_conv_full_rank_reproduces_dense():
    dense = nn.Conv2d(4, 6, 3, stride=2, padding=1)
    lr = LowRankConv2d.from_dense(dense, rank=6)
    x = torch.randn(2, 4, 7, 7)
    assert torch.allclose(lr(x), dense(x), atol=1e-5)


def test_low_rank_conv_full_rank_when_input_side_limits_rank():
    dense = nn.Conv2d(1, 12, 3, padding=1, bias=False)  # max rank = min(12, 1*3*3) = 9
    lr = LowRankConv2d.from_dense(dense, rank=9)
    assert lr.second.bias is None
    x = torch.randn(1, 1, 5, 5)
    assert torch.allclose(lr(x), dense(x), atol=1e-5)


def test_low_rank_linear_full_rank_reproduces_dense():
    dense = nn.Linear(10, 6)
    lr = LowRankLinear.from_dense(dense, rank=6)
    x = torch.randn(3, 10)
    assert torch.allclose(lr(x), dense(x), atol=1e-5)


@pytest.mark.parametrize("rank", [1, 3, 5])
def test_low_rank_linear_lower_rank_error_is_eckart_young(rank):
    dense = nn.Linear(9, 6)
    lr = LowRankLinear.from_dense(dense, rank=rank)
    w = dense.weight.detach().double()
    approx = (lr.second.weight @ lr.first.weight).detach().double()
    s = torch.linalg.svdvals(w)
    err = (w - approx).pow(2).sum().item()
    assert err == pytest.approx(s[rank:].pow(2).sum().item(), rel=1e-4)
    assert err > 0
    # and the layer's function error matches the weight error (same bias, linear map)
    x = torch.eye(9)
    assert torch.allclose(lr(x) - dense(x), x @ (approx - w).float().T, atol=1e-5)


def test_low_rank_conv_lower_rank_error_equals_tail_energy():
    dense = nn.Conv2d(3, 8, 3)
    lr = LowRankConv2d.from_dense(dense, rank=4)
    w = dense.weight.detach().reshape(8, -1).double()
    approx = (lr.second.weight.reshape(8, 4) @ lr.first.weight.reshape(4, -1)).detach().double()
    s = torch.linalg.svdvals(w)
    assert (w - approx).pow(2).sum().item() == pytest.approx(s[4:].pow(2).sum().item(), rel=1e-4)


# --------------------------------------------------------------------------- freezing the mutable twins


class _QuantSpace(ModelSpace, label_prefix=None):
    def __init__(self):
        super().__init__()
        self.conv = MutableQuantConv2d(2, 4, 3, padding=1, weight_bits=bits_choice("cb", [2, 4, 8]),
                                       act_bits=act_bits_choice("ca", [4, 8]),
                                       sparsity=sparsity_choice("cs", [0.0, 0.5]))
        self.fc = MutableQuantLinear(6, 4, weight_bits=channel_bits_choice("fb", 4, [0, 4, 8], group_size=2),
                                     sparsity=sparsity_choice("fs", [0.0, 0.3]))


class _LowRankSpace(ModelSpace, label_prefix=None):
    def __init__(self):
        super().__init__()
        self.conv = MutableLowRankConv2d(2, 5, 3, padding=1, rank=rank_choice("cr", [1, 3, 5], max_rank=5))
        self.fc = MutableLowRankLinear(6, 4, rank=rank_choice("fr", [1, 2, 4], max_rank=4))


class _SparseSpace(ModelSpace, label_prefix=None):
    def __init__(self):
        super().__init__()
        self.conv = MutableSparseConv2d(2, 3, 3, sparsity=sparsity_choice("cs", [0.25, 0.75]))
        self.fc = MutableSparseLinear(5, 3, sparsity=sparsity_choice("fs", [0.0, 0.6]))


def _check_frozen_forward_backward(frozen, x_conv, x_fc):
    for name, x in (("conv", x_conv), ("fc", x_fc)):
        layer = getattr(frozen, name)
        _backprop(layer, x)
        grads = [p.grad for p in layer.parameters() if p.requires_grad]
        assert any(g is not None and g.abs().sum() > 0 for g in grads)
        assert all(g is None or torch.isfinite(g).all() for g in grads)


def test_freeze_quant_space_gives_plain_layers_with_sampled_values():
    space = _QuantSpace()
    assert set(space.simplify()) == {"cb", "ca", "cs", "fb_g0", "fb_g1", "fs"}
    frozen = space.freeze({"cb": 4, "ca": 8, "cs": 0.5, "fb_g0": 0, "fb_g1": 8, "fs": 0.3})
    assert type(frozen.conv) is QuantConv2d
    assert type(frozen.fc) is QuantLinear
    assert (frozen.conv.weight_bits, frozen.conv.act_bits, frozen.conv.sparsity) == (4, 8, 0.5)
    assert frozen.conv.act_quant.bits == 8
    assert frozen.fc.weight_bits == [0, 0, 8, 8]
    assert frozen.fc.sparsity == 0.3
    _check_frozen_forward_backward(frozen, torch.randn(2, 2, 5, 5), torch.randn(3, 6))
    # the removed channels (group 0) stay removed in the frozen layer
    assert torch.equal(frozen.fc.compressed_weight()[:2], torch.zeros(2, 6))
    assert torch.equal(frozen.fc.weight.grad[:2], torch.zeros(2, 6))


def test_freeze_quant_space_other_sample():
    frozen = _QuantSpace().freeze({"cb": 2, "ca": 4, "cs": 0.0, "fb_g0": 4, "fb_g1": 0, "fs": 0.0})
    assert type(frozen.conv) is QuantConv2d and type(frozen.fc) is QuantLinear
    assert (frozen.conv.weight_bits, frozen.conv.act_bits, frozen.conv.sparsity) == (2, 4, 0.0)
    assert frozen.fc.weight_bits == [4, 4, 0, 0]
    _check_frozen_forward_backward(frozen, torch.randn(2, 2, 5, 5), torch.randn(3, 6))
    for c in range(2):  # 2-bit weights: at most 3 symmetric levels per channel
        assert len(frozen.conv.compressed_weight()[c].unique()) <= 2**2


def test_freeze_low_rank_space_gives_plain_layers_with_sampled_rank():
    space = _LowRankSpace()
    assert set(space.simplify()) == {"cr", "fr"}
    frozen = space.freeze({"cr": 3, "fr": 2})
    assert type(frozen.conv) is LowRankConv2d
    assert type(frozen.fc) is LowRankLinear
    assert frozen.conv.rank == 3 and frozen.fc.rank == 2
    assert frozen.conv.first.out_channels == 3 and frozen.conv.second.in_channels == 3
    assert frozen.fc.first.out_features == 2 and frozen.fc.second.in_features == 2
    _check_frozen_forward_backward(frozen, torch.randn(2, 2, 5, 5), torch.randn(3, 6))
    _assert_useful_grad(frozen.conv.first.weight.grad)
    _assert_useful_grad(frozen.fc.second.weight.grad)


def test_freeze_sparse_space_gives_plain_layers_with_sampled_sparsity():
    space = _SparseSpace()
    assert set(space.simplify()) == {"cs", "fs"}
    frozen = space.freeze({"cs": 0.75, "fs": 0.6})
    assert type(frozen.conv) is SparseConv2d
    assert type(frozen.fc) is SparseLinear
    assert frozen.conv.sparsity == 0.75 and frozen.fc.sparsity == 0.6
    assert int((frozen.conv.masked_weight() == 0).sum()) == round(0.75 * 54)
    assert int((frozen.fc.masked_weight() == 0).sum()) == round(0.6 * 15)
    _check_frozen_forward_backward(frozen, torch.randn(2, 2, 5, 5), torch.randn(3, 5))
    _assert_useful_grad(frozen.conv.scores.grad)
    _assert_useful_grad(frozen.fc.scores.grad)


def test_freeze_with_unchecked_bad_choice_fails_in_the_plain_constructor():
    class Raw(ModelSpace, label_prefix=None):
        def __init__(self):
            super().__init__()
            self.conv = MutableQuantConv2d(2, 4, 3, weight_bits=nni.choice("b", [4, 9]))

    space = Raw()
    assert type(space.freeze({"b": 4}).conv) is QuantConv2d
    with pytest.raises(ValueError, match=r"but got 9$"):
        space.freeze({"b": 9})


# --------------------------------------------------------------------------- validation


def _exact(value) -> str:
    """Regex for a message that ends by showing ``value``."""
    return rf"but got {re.escape(repr(value))}$"


@pytest.mark.parametrize("bad", [1, 9, 33, 64, -2, 4.0, True, "8", None])
def test_bits_choice_rejects_bad_bit_widths(bad):
    with pytest.raises(ValueError, match=_exact(bad)):
        bits_choice("b", [8, bad])


def test_bits_choice_rejects_zero_per_layer_with_hint():
    with pytest.raises(ValueError, match=r"but got 0 \(0 bits = channel removed"):
        bits_choice("b", [0, 4])


@pytest.mark.parametrize("bad", [0, 1, 9, 33, 4.0, True])
def test_act_bits_choice_rejects_bad_bit_widths(bad):
    with pytest.raises(ValueError, match=_exact(bad)):
        act_bits_choice("a", [8, bad])


@pytest.mark.parametrize("bad", [1, 9, 33, 4.0, True, -1])
def test_channel_bits_choice_rejects_bad_bit_widths(bad):
    with pytest.raises(ValueError, match=_exact(bad)):
        channel_bits_choice("c", 4, [0, 8, bad])


def test_channel_bits_choice_rejects_only_zero():
    with pytest.raises(ValueError, match=r"non-zero.*but got \[0\]$"):
        channel_bits_choice("c", 4, [0])


@pytest.mark.parametrize("bad", [0, 5, -1, 1.5, True])
def test_channel_bits_choice_rejects_bad_group_size(bad):
    with pytest.raises(ValueError, match=r"group_size.*" + _exact(bad)):
        channel_bits_choice("c", 4, [0, 8], group_size=bad)


@pytest.mark.parametrize("bad", [0, -3, 2.0, True])
def test_channel_bits_choice_rejects_bad_out_channels(bad):
    with pytest.raises(ValueError, match=r"out_channels.*" + _exact(bad)):
        channel_bits_choice("c", bad, [0, 8])


def test_channel_bits_choice_groups_share_labels():
    bits = channel_bits_choice("c", 5, [0, 4, 8], group_size=2)
    assert len(bits) == 5
    assert sorted(bits.simplify()) == ["c_g0", "c_g1", "c_g2"]
    assert [b.label for b in bits] == ["c_g0", "c_g0", "c_g1", "c_g1", "c_g2"]


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), "0.5", True])
def test_sparsity_choice_rejects_out_of_range(bad):
    with pytest.raises(ValueError, match=r"\[0, 1\).*" + _exact(bad)):
        sparsity_choice("s", [0.0, bad])


@pytest.mark.parametrize("bad", [0, 9, -1, 2.0])
def test_rank_choice_rejects_rank_outside_layer_limit(bad):
    with pytest.raises(ValueError, match=r"\[1, 8\].*" + _exact(bad)):
        rank_choice("r", [1, bad], max_rank=8)


@pytest.mark.parametrize("builder", [
    lambda c: bits_choice("x", c),
    lambda c: act_bits_choice("x", c),
    lambda c: channel_bits_choice("x", 4, c),
    lambda c: sparsity_choice("x", c),
    lambda c: rank_choice("x", c, max_rank=8),
])
def test_builders_reject_empty_duplicate_and_non_list_candidates(builder):
    with pytest.raises(ValueError, match=r"empty.*but got \[\]$"):
        builder([])
    with pytest.raises(ValueError, match=r"distinct.*but got \[4, 4\]$"):
        builder([4, 4])
    with pytest.raises(ValueError, match=r"list.*" + _exact(4)):
        builder(4)
    with pytest.raises(ValueError, match=r"list.*" + _exact("248")):
        builder("248")
    with pytest.raises(ValueError, match=r"but got \[\[2, 4\]\]$"):
        builder([[2, 4]])


def test_sparsity_choice_rejects_duplicate_floats():
    with pytest.raises(ValueError, match=r"distinct.*but got \[0\.5, 0\.5\]$"):
        sparsity_choice("s", [0.5, 0.5])


def test_builders_accept_good_candidates():
    assert bits_choice("b", [2, 3, 4, 5, 6, 7, 8, 16, 32]).values == [2, 3, 4, 5, 6, 7, 8, 16, 32]
    assert act_bits_choice("a", (4, 8)).values == [4, 8]
    assert sparsity_choice("s", [0, 0.5]).values == [0.0, 0.5]
    assert rank_choice("r", [1, 8], max_rank=8).values == [1, 8]


# plain constructors ---------------------------------------------------------


@pytest.mark.parametrize("bad", [1, 9, 0, 33, 4.0, True])
@pytest.mark.parametrize("make", [lambda b: QuantConv2d(2, 3, 3, weight_bits=b),
                                  lambda b: QuantLinear(4, 3, weight_bits=b)], ids=["conv", "linear"])
def test_quant_layers_reject_bad_weight_bits(make, bad):
    with pytest.raises(ValueError, match=r"weight_bits.*but got " + re.escape(repr(bad))):
        make(bad)


@pytest.mark.parametrize("make", [lambda b: QuantConv2d(2, 3, 3, weight_bits=b),
                                  lambda b: QuantLinear(4, 3, weight_bits=b)], ids=["conv", "linear"])
def test_quant_layers_reject_bad_per_channel_bits(make):
    with pytest.raises(ValueError, match=r"\(3\), but got 2: \[8, 8\]$"):
        make([8, 8])
    with pytest.raises(ValueError, match=r"\(3\), but got 4: \[8, 8, 8, 8\]$"):
        make([8, 8, 8, 8])
    with pytest.raises(ValueError, match=r"at least one.*but got \[0, 0, 0\]"):
        make([0, 0, 0])
    with pytest.raises(ValueError, match=r"weight_bits\[1\].*but got 9$"):
        make([8, 9, 8])
    with pytest.raises(ValueError, match=r"weight_bits\[2\].*but got 1$"):
        make((8, 4, 1))


@pytest.mark.parametrize("bad", [0, 1, 9, 33, 8.0, False])
def test_quant_layers_reject_bad_act_bits(bad):
    with pytest.raises(ValueError, match=r"act_bits.*" + _exact(bad)):
        QuantConv2d(2, 3, 3, act_bits=bad)
    with pytest.raises(ValueError, match=r"act_bits.*" + _exact(bad)):
        QuantLinear(4, 3, act_bits=bad)
    with pytest.raises(ValueError, match=r"act_bits.*" + _exact(bad)):
        ActivationQuantizer(bad)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
@pytest.mark.parametrize("make", [
    lambda s: QuantConv2d(2, 3, 3, sparsity=s),
    lambda s: QuantLinear(4, 3, sparsity=s),
    lambda s: SparseConv2d(2, 3, 3, sparsity=s),
    lambda s: SparseLinear(4, 3, sparsity=s),
], ids=["qconv", "qlinear", "sconv", "slinear"])
def test_layers_reject_sparsity_outside_unit_interval(make, bad):
    with pytest.raises(ValueError, match=r"sparsity.*\[0, 1\).*" + _exact(bad)):
        make(bad)


@pytest.mark.parametrize("bad", [0, 7, -1, 3.0])
def test_low_rank_linear_rejects_bad_rank(bad):
    with pytest.raises(ValueError, match=r"rank.*\[1, 6\].*" + _exact(bad)):
        LowRankLinear(10, 6, rank=bad)
    with pytest.raises(ValueError, match=r"rank.*\[1, 6\].*" + _exact(bad)):
        LowRankLinear.from_dense(nn.Linear(10, 6), rank=bad)


@pytest.mark.parametrize("bad", [0, 19, 20])
def test_low_rank_conv_rejects_bad_rank(bad):
    # max rank of a 2 -> 20 3x3 conv is min(20, 2*3*3) = 18
    with pytest.raises(ValueError, match=r"rank.*\[1, 18\].*" + _exact(bad)):
        LowRankConv2d(2, 20, 3, rank=bad)
    assert LowRankConv2d(2, 20, 3, rank=18).rank == 18


def test_low_rank_conv_from_dense_rejects_grouped_conv():
    with pytest.raises(ValueError, match=r"groups=2"):
        LowRankConv2d.from_dense(nn.Conv2d(4, 4, 3, groups=2), rank=2)


def test_an_evaluation_pass_before_training_does_not_fix_the_activation_clip():
    """A cost probe on zeros (exact_costs runs the model in eval mode) must leave the clip to the first training batch."""
    from nni_udc.evaluators import exact_costs

    conv = QuantConv2d(1, 2, 3, padding=1, weight_bits=4, act_bits=4, act_signed=False)
    exact_costs(nn.Sequential(conv), torch.zeros(1, 1, 4, 4))
    assert not bool(conv.act_quant.initialized)
    conv.train()
    conv(torch.full((1, 1, 4, 4), 3.0))
    assert bool(conv.act_quant.initialized) and float(conv.act_quant.clip) == pytest.approx(3.0)
