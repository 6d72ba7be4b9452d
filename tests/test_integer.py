"""The integer form of weight layers: the integers and scales a deployment stores reproduce each layer's own
compressed weight (up to the scale rounding), lie in each channel's range, and are zero where nothing is stored."""
from __future__ import annotations

import pytest
import torch
from spaces import random_samples
from torch import nn

from nni_udc.evaluators.exact import model_specs
from nni_udc.export import IntegerWeights, fold_batchnorm, integer_layers, integer_weights, qmax, round_scales
from nni_udc.functional import fake_quantize_weight
from nni_udc.nn import (
    QUANT_LAYERS,
    SPARSE_LAYERS,
    LowRankConv1d,
    LowRankConv2d,
    LowRankLinear,
    QuantConv1d,
    QuantConv2d,
    QuantLinear,
    SparseConv1d,
    SparseConv2d,
    SparseLinear,
)
from nni_udc.spaces.registry import SPACES


def _layers() -> list[tuple[str, nn.Module]]:
    torch.manual_seed(0)
    return [
        ("quant2d", QuantConv2d(3, 8, 3, weight_bits=[2, 3, 4, 0, 8, 16, 32, 5], sparsity=0.5)),
        ("quant2d_dense", QuantConv2d(4, 6, 3, weight_bits=4)),
        ("quant1d", QuantConv1d(2, 5, 5, weight_bits=[8, 0, 4, 4, 2], sparsity=0.25)),
        ("quant_linear", QuantLinear(12, 4, weight_bits=[8, 4, 0, 32])),
        ("inputs_removed", QuantConv2d(6, 4, 1, weight_bits=8, in_channel_bits=[4, 0, 8, 0, 2, 4], sparsity=0.5)),
        ("inputs_removed_dense", QuantLinear(6, 3, weight_bits=[4, 2, 8], in_channel_bits=[4, 0, 8, 0, 2, 4])),
        ("depthwise", QuantConv2d(4, 4, 3, groups=4, weight_bits=[2, 4, 8, 0])),
        ("sparse2d", SparseConv2d(4, 6, 3, sparsity=0.75, weight_bits=4)),
        ("sparse1d", SparseConv1d(3, 4, 3, sparsity=0.5)),
        ("sparse_linear", SparseLinear(10, 5, sparsity=0.5, weight_bits=8, bias=False)),
        ("plain", nn.Conv2d(2, 3, 3)),
    ]


def _reference(module: nn.Module) -> torch.Tensor:
    """The weight the layer computes with in its own forward pass."""
    if isinstance(module, QUANT_LAYERS):
        return module.compressed_weight().detach()
    if isinstance(module, SPARSE_LAYERS):
        return module.masked_weight().detach()
    return module.weight.detach()


@pytest.mark.parametrize("scale_bits", [16, 32])
@pytest.mark.parametrize("index", range(len(_layers())))
def test_dequantize_is_the_layer_s_own_weight(index: int, scale_bits: int) -> None:
    name, module = _layers()[index]
    (record,) = integer_weights(name, module, scale_bits=scale_bits)
    reference, weight = _reference(module), record.dequantize()
    assert weight.shape == reference.shape and weight.dtype == torch.float32
    if scale_bits == 32:  # the very integers times the very scales: nothing rounded
        assert torch.equal(weight, reference), name
    else:  # each level times a half-precision scale: |error| <= qmax · |scale - half(scale)| <= absmax · 2**-11
        absmax = reference.abs().flatten(1).amax(1).view((-1,) + (1,) * (reference.dim() - 1))
        assert bool(((weight - reference).abs() <= absmax * 2.0**-11 + 1e-12).all()), name
        if bool(record.quantised_channels().any()):
            assert not torch.equal(weight, reference), name  # the rounding is really there


@pytest.mark.parametrize("index", range(len(_layers())))
def test_integers_lie_in_each_channel_s_range_and_are_zero_where_nothing_is_stored(index: int) -> None:
    name, module = _layers()[index]
    (record,) = integer_weights(name, module)
    bits = getattr(module, "weight_bits", 32)  # a plain layer is a float layer
    assert record.values.dtype == torch.int32
    assert record.bits == (tuple(bits) if isinstance(bits, list) else (bits,) * record.out_channels)
    for c, b in enumerate(record.bits):
        if b == 0:
            assert int(record.values[c].abs().max()) == 0 and float(record.scales[c]) == 0.0
            if record.bias is not None:
                assert float(record.bias[c]) == 0.0
        elif b < 32:
            assert int(record.values[c].abs().max()) <= qmax(b)
            assert int(record.values[c].abs().max()) == qmax(b)  # the channel's largest weight sits at qmax
            assert float(record.scales[c]) == float(torch.tensor(float(record.scales[c])).half())  # an fp16 number
        else:  # float channels: raw float32 words, no scale
            assert torch.equal(record.values[c].view(torch.float32), _reference(module)[c])
            assert float(record.scales[c]) == 1.0
    if record.mask is not None:
        assert record.mask.dtype == torch.bool and record.mask.shape == record.values.shape
        assert int(record.values[~record.mask].abs().max()) == 0
        removed = [c for c, b in enumerate(record.bits) if b == 0]
        assert not bool(record.mask[removed].any())  # a removed channel stores nothing
        if not removed and record.kept_inputs is None:  # the mask's own count of pruned weights
            assert int((~record.mask).sum()) == round(module.sparsity * module.weight.numel())
    if record.kept_inputs is not None:
        assert int(record.values[:, ~record.kept_inputs].abs().max()) == 0
        assert record.mask is None or not bool(record.mask[:, ~record.kept_inputs].any())


def test_low_rank_layers_are_two_integer_layers_that_compute_the_layer() -> None:
    torch.manual_seed(1)
    for module in (LowRankConv2d(4, 6, 3, padding=1, rank=3, weight_bits=4), LowRankConv1d(4, 6, 3, rank=2, weight_bits=8),
                   LowRankLinear(7, 5, rank=2, weight_bits=2)):
        first, second = integer_weights("lr", module, scale_bits=32)
        assert (first.name, second.name) == ("lr.first", "lr.second")
        assert first.bias is None and second.bias is not None and first.values.shape[0] == module.rank
        assert torch.equal(first.dequantize(), fake_quantize_weight(module.first.weight, module.weight_bits).detach())
        assert torch.equal(second.dequantize(), fake_quantize_weight(module.second.weight, module.weight_bits).detach())


def test_fold_batchnorm_keeps_the_integers_and_computes_layer_then_batchnorm() -> None:
    torch.manual_seed(2)
    conv = QuantConv2d(3, 4, 3, weight_bits=[4, 8, 0, 32], sparsity=0.5)
    bn = nn.BatchNorm2d(4)
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(-2, 2)
        bn.bias.uniform_(-1, 1)
    bn.eval()
    (record,) = integer_weights("conv", conv)
    folded = fold_batchnorm(record, bn)
    assert torch.equal(folded.values[[0, 1, 2]], record.values[[0, 1, 2]])
    assert torch.equal(folded.scales, round_scales(folded.scales))  # scales stay half-precision numbers
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        expected = bn(conv(x))
        got = nn.functional.conv2d(x, folded.dequantize(), folded.bias)
    kept = [0, 1, 3]  # a removed channel outputs 0 in the deployed layer (its bias is not stored)
    assert torch.allclose(got[:, kept], expected[:, kept], atol=2e-3)
    assert float(got[:, 2].abs().max()) == 0.0
    assert record.bias is not None and not torch.equal(folded.bias, record.bias)  # the input record is unchanged


def test_fold_batchnorm_refuses_a_mismatched_or_statless_batchnorm() -> None:
    (record,) = integer_weights("fc", QuantLinear(4, 3, weight_bits=4))
    with pytest.raises(ValueError, match=r"BatchNorm1d\(5\) into layer 'fc': it has 3 output channels"):
        fold_batchnorm(record, nn.BatchNorm1d(5))
    with pytest.raises(ValueError, match="track_running_stats=True"):
        fold_batchnorm(record, nn.BatchNorm1d(3, track_running_stats=False))


def test_bad_inputs_are_named() -> None:
    with pytest.raises(ValueError, match=r"scale_bits must be one of \[16, 32\], but got 8"):
        integer_weights("fc", QuantLinear(4, 3), scale_bits=8)
    with pytest.raises(TypeError, match=r"module 'rnn' \(LSTM\) has no integer form"):
        integer_weights("rnn", nn.LSTM(3, 3))
    with pytest.raises(TypeError, match=r"module '1' \(Embedding\) holds weights that have no integer form"):
        integer_layers(nn.Sequential(nn.Linear(3, 3), nn.Embedding(4, 3)))
    with pytest.raises(ValueError, match="does not fit in 16 bits"):
        round_scales(torch.tensor([1e6]), 16)


def test_a_record_dequantizes_removed_and_float_channels() -> None:
    values = torch.tensor([[3, -1], [0, 0], [0, 0]], dtype=torch.int32)
    values[2] = torch.tensor([0.25, -2.0]).view(torch.int32)
    record = IntegerWeights("fc", "linear", values, torch.tensor([0.5, 0.0, 1.0]), (4, 0, 32))
    assert record.dequantize().tolist() == [[1.5, -0.5], [0.0, 0.0], [0.25, -2.0]]
    assert record.kept_channels() == [0, 2]


@pytest.mark.parametrize("space_name", sorted(SPACES))
def test_every_costed_layer_of_a_space_has_an_integer_form(space_name: str) -> None:
    space_cls, shape = SPACES[space_name]
    space = space_cls()
    for sample in random_samples(space, 4, seed=3):
        model = space.freeze(sample)
        layers = integer_layers(model)
        assert list(layers) == [spec.name for spec in model_specs(model, torch.zeros(1, *shape))]
