"""Cost formulas of ``nni_udc.evaluators.costs`` against numbers worked out by hand.

Every expected value below is written as the arithmetic of the documented conventions
(see the docstring of :mod:`nni_udc.evaluators.costs`), layer by layer, so a wrong formula,
a wrong spec builder (positions, fan-in, kept channels, bias) or a wrong encoding choice fails.
"""
from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from nni_udc.evaluators import (
    COSTS,
    LayerSpec,
    bitops,
    exact_costs,
    kept_channels,
    macs,
    memory_bits,
    model_specs,
    params,
    resolve_cost,
    total,
)
from nni_udc.nn import LowRankConv2d, LowRankLinear, QuantConv2d, QuantLinear, SparseConv2d, SparseLinear


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


class Pool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3))


def three_layer_net() -> nn.Sequential:
    return nn.Sequential(
        QuantConv2d(1, 4, 3, padding=1, weight_bits=4, act_bits=8, sparsity=0.5),            # 8×8 out
        nn.ReLU(),
        QuantConv2d(4, 8, 3, stride=2, padding=1, weight_bits=[8, 8, 4, 4, 2, 2, 0, 0], act_bits=8),  # 4×4 out
        nn.ReLU(),
        Pool(),
        QuantLinear(8, 10, weight_bits=8, bias=True, sparsity=0.1),                       # act_bits=32 (float)
    )


X8 = torch.zeros(1, 1, 8, 8)

# --- worked by hand ---------------------------------------------------------------------------------
# conv1: in 1, out 4, k 3×3, padding 1 on 8×8 → 8×8 = 64 positions; fan_in = 1·9 = 9; 4 bits; act 8;
#        sparsity 0.5 → 36 weights, 18 non-zeros; bias (32 bits) on all 4 channels.
C1_PARAMS = 4 * 9 + 4                                   # 40
C1_MACS = 64 * 4 * 9                                    # 2304
C1_BITOPS = 64 * 9 * (4 * 4) * 8                        # 73728
C1_DENSE = 36 * 4                                       # 144 bits
C1_SPARSE = 18 * 4 + 36                                 # 72 payload + 36-bit bitmap = 108 → sparse wins
C1_MEMORY = min(C1_DENSE, C1_SPARSE) + 4 * 32 + 4 * 16  # 108 + 128 biases + 64 (four 16-bit scales) = 300
# conv2: in 4, out 8 (2 removed → 6 kept), k 3×3, stride 2, padding 1 on 8×8 → 4×4 = 16 positions;
#        fan_in = 4·9 = 36; bits of kept channels 8+8+4+4+2+2 = 28; act 8; dense (no sparsity);
#        biases and scales only for the 6 kept channels.
C2_PARAMS = 6 * 36 + 6                                  # 222
C2_MACS = 16 * 6 * 36                                   # 3456
C2_BITOPS = 16 * 36 * 28 * 8                            # 129024
C2_DENSE = 36 * 28                                      # 1008 bits
C2_SPARSE = 36 * 28 + 6 * 36                            # 1224: a bitmap of a dense layer only adds → dense wins
C2_MEMORY = min(C2_DENSE, C2_SPARSE) + 6 * 32 + 6 * 16  # 1008 + 192 + 96 = 1296
# fc: in 8, out 10, one position; 8 bits; act 32 (float); sparsity 0.1 → 80 weights, 72 non-zeros;
#     even though it is sparse, the bitmap costs more than it saves.
FC_PARAMS = 10 * 8 + 10                                 # 90
FC_MACS = 10 * 8                                        # 80
FC_BITOPS = 8 * (8 * 10) * 32                           # 20480
FC_DENSE = 80 * 8                                       # 640 bits
FC_SPARSE = 72 * 8 + 80                                 # 656 → dense wins
FC_MEMORY = min(FC_DENSE, FC_SPARSE) + 10 * 32 + 10 * 16  # 640 + 320 + 160 = 1120


def test_hand_worked_encodings_are_clear_cases():
    # Guard the test itself: each encoding case is won by a clear margin, never a tie.
    assert C1_SPARSE < C1_DENSE and C2_DENSE < C2_SPARSE and FC_DENSE < FC_SPARSE


def test_three_layer_net_per_layer_costs():
    specs = model_specs(three_layer_net(), X8)
    assert [s.name for s in specs] == ["0", "2", "5"]
    c1, c2, fc = specs
    assert (c1.positions, c1.fan_in, c2.positions, c2.fan_in, fc.positions, fc.fan_in) == (64, 9, 16, 36, 1, 8)
    assert kept_channels(c2) == 6
    assert [params(s) for s in specs] == [C1_PARAMS, C2_PARAMS, FC_PARAMS]
    assert [macs(s) for s in specs] == [C1_MACS, C2_MACS, FC_MACS]
    assert [bitops(s) for s in specs] == [C1_BITOPS, C2_BITOPS, FC_BITOPS]
    assert [memory_bits(s) for s in specs] == pytest.approx([C1_MEMORY, C2_MEMORY, FC_MEMORY], abs=1e-9)


def test_three_layer_net_totals():
    costs = exact_costs(three_layer_net(), X8)
    assert costs == {
        "params": C1_PARAMS + C2_PARAMS + FC_PARAMS,            # 352
        "macs": C1_MACS + C2_MACS + FC_MACS,                    # 5840
        "bitops": C1_BITOPS + C2_BITOPS + FC_BITOPS,            # 223232
        "memory_bits": pytest.approx(C1_MEMORY + C2_MEMORY + FC_MEMORY, abs=1e-9),   # 2716
    }
    assert costs["params"] == 352 and costs["macs"] == 5840 and costs["bitops"] == 223232
    assert costs["memory_bits"] == pytest.approx(2716)


def test_hand_worked_sparsity_matches_the_modules_nonzeros():
    # The counts used above (18 of 36, 72 of 80) are what the layers really keep.
    net = three_layer_net()
    assert int((net[0].compressed_weight() != 0).sum()) == 18
    assert int((net[5].compressed_weight() != 0).sum()) == 72


def test_removed_channels_cost_nothing():
    x = torch.zeros(1, 4, 8, 8)
    with_removed = QuantConv2d(4, 8, 3, stride=2, padding=1, weight_bits=[8, 8, 4, 4, 2, 2, 0, 0], act_bits=8)
    only_kept = QuantConv2d(4, 6, 3, stride=2, padding=1, weight_bits=[8, 8, 4, 4, 2, 2], act_bits=8)
    assert exact_costs(with_removed, x) == exact_costs(only_kept, x)


def test_removing_a_channel_lowers_every_cost():
    x = torch.zeros(1, 4, 8, 8)
    kept = exact_costs(QuantConv2d(4, 3, 3, weight_bits=[4, 4, 2], act_bits=8), x)
    removed = exact_costs(QuantConv2d(4, 3, 3, weight_bits=[4, 4, 0], act_bits=8), x)
    # out 6×6 = 36 positions, fan_in 36; the dropped channel had 36 weights at 2 bits, a bias and a 16-bit scale.
    assert kept["params"] - removed["params"] == 36 + 1
    assert kept["macs"] - removed["macs"] == 36 * 36
    assert kept["bitops"] - removed["bitops"] == 36 * 36 * 2 * 8
    assert kept["memory_bits"] - removed["memory_bits"] == 36 * 2 + 32 + 16


@pytest.mark.parametrize("bits, sparsity, expected", [
    # n = 10 weights per channel × 4 channels = 40 weights; every case adds 4 scales × 16 bits.
    (8, 0.75, 0.25 * 40 * 8 + 40 + 64),     # sparse: 80 + 40 = 120 < dense 320
    (2, 0.25, 40 * 2 + 64),                 # dense: 80 < sparse 0.75·80 + 40 = 100
    (1, 0.75, 40 * 1 + 64),                 # 1 bit never gains from a bitmap: 40 < 10 + 40
    (4, 0.0, 40 * 4 + 64),                  # no sparsity: dense
])
def test_encoding_choice(bits, sparsity, expected):
    spec = LayerSpec("fc", "linear", in_channels=10, out_channels=4, weight_bits=bits, density=1 - sparsity)
    assert memory_bits(spec) == pytest.approx(expected)


def test_bias_is_32_bits_per_kept_channel():
    no_bias = LayerSpec("c", "conv", 3, 4, kernel_size=(3, 3), weight_bits=[8, 0, 4, 0])
    with_bias = LayerSpec("c", "conv", 3, 4, kernel_size=(3, 3), weight_bits=[8, 0, 4, 0], bias=True)
    assert memory_bits(no_bias) == 27 * (8 + 4) + 2 * 16                  # 356 (two kept channels' scales)
    assert memory_bits(with_bias) == 27 * (8 + 4) + 2 * 16 + 2 * 32       # 420
    assert params(with_bias) - params(no_bias) == 2


def test_lowrank_conv_is_two_factors():
    m = LowRankConv2d(4, 8, 3, padding=1, bias=True, rank=2)
    x = torch.zeros(1, 4, 6, 6)
    specs = model_specs(m, x)
    assert [(s.name, s.in_channels, s.out_channels, s.kernel_size, s.positions) for s in specs] == [
        (".first", 4, 2, (3, 3), 36), (".second", 2, 8, (1, 1), 36)]
    params_ = 2 * (4 * 3 * 3) + 8 * 2 + 8          # rank·(in·k²) + out·rank + bias = 72 + 16 + 8 = 96
    macs_ = 36 * (2 * 36 + 8 * 2)                   # 36 positions × (72 + 16) = 3168
    costs = exact_costs(m, x)
    assert costs["params"] == params_
    assert costs["params"] == sum(p.numel() for p in m.parameters())   # float layer: the real parameter count
    assert costs["macs"] == macs_
    assert costs["bitops"] == macs_ * 32 * 32
    assert costs["memory_bits"] == params_ * 32
    # A low-rank layer costs the same as the model itself or inside a container (factors counted once).
    assert exact_costs(nn.Sequential(m), x) == costs


def test_lowrank_linear_is_two_factors_on_vectors_and_sequences():
    m = LowRankLinear(10, 6, bias=False, rank=3)
    params_ = 3 * 10 + 6 * 3                        # 48, no bias
    assert exact_costs(m, torch.zeros(2, 10))["params"] == params_
    assert exact_costs(m, torch.zeros(2, 10))["macs"] == params_
    seq = exact_costs(m, torch.zeros(2, 5, 10))     # 5 tokens: 5 positions
    assert seq["macs"] == 5 * params_ and seq["params"] == params_


def test_sparse_conv_density():
    m = SparseConv2d(4, 8, 3, sparsity=0.75)        # bias=True by default
    x = torch.zeros(1, 4, 6, 6)                     # out 4×4 = 16 positions, fan_in 36, 288 weights
    assert int((m.masked_weight() != 0).sum()) == 72  # 0.25 · 288 non-zeros really kept
    costs = exact_costs(m, x)
    assert costs["params"] == 288 + 8               # sparsity does not change params
    assert costs["macs"] == 16 * 8 * 36             # nor dense MACs: 4608
    assert costs["bitops"] == 16 * 8 * 36 * 32 * 32
    # float weights: dense 288·32 = 9216; sparse 72·32 + 288 = 2592 → sparse; + 8 biases · 32
    assert costs["memory_bits"] == pytest.approx(72 * 32 + 288 + 8 * 32)   # 2848


def test_sparse_linear_density():
    m = SparseLinear(20, 5, bias=False, sparsity=0.5)   # 100 weights, 50 non-zeros
    assert int((m.masked_weight() != 0).sum()) == 50
    assert exact_costs(m, torch.zeros(1, 20))["memory_bits"] == pytest.approx(50 * 32 + 100)


def test_float_layers_are_32_bit():
    conv = nn.Conv2d(1, 2, 3)                       # 5×5 → 3×3 = 9 positions, fan_in 9
    c = exact_costs(conv, torch.zeros(1, 1, 5, 5))
    assert c == {"params": 2 * 9 + 2, "macs": 9 * 2 * 9, "bitops": 9 * 2 * 9 * 32 * 32, "memory_bits": (2 * 9 + 2) * 32}
    fc = nn.Linear(6, 3)
    f = exact_costs(fc, torch.zeros(4, 6))
    assert f == {"params": 21, "macs": 18, "bitops": 18 * 32 * 32, "memory_bits": 21 * 32}


def test_depthwise_conv_macs():
    x = torch.zeros(1, 4, 5, 5)
    dw = QuantConv2d(4, 4, 3, padding=1, groups=4, bias=False, weight_bits=8, act_bits=8)
    c = exact_costs(dw, x)
    # fan_in = 4/4 · 9 = 9; 25 positions; 4 channels
    assert c["macs"] == 25 * 4 * 9                  # 900 (a dense conv would be 25·4·36 = 3600)
    assert c["params"] == 4 * 9 == sum(p.numel() for n, p in dw.named_parameters() if n == "weight")
    assert c["bitops"] == 25 * 4 * 9 * 8 * 8
    assert c["memory_bits"] == 36 * 8 + 4 * 16          # and a 16-bit scale per channel
    float_dw = nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False)
    assert exact_costs(float_dw, x)["macs"] == 900


def test_total_matches_per_spec_sum_and_accepts_functions():
    specs = model_specs(three_layer_net(), X8)
    assert total(specs, "params") == 352
    assert total(specs, "bitops") == 223232
    assert total(specs, lambda s: s.out_channels) == 4 + 8 + 10
    assert total([], "macs") == 0
    assert resolve_cost("memory_bits") is memory_bits
    assert resolve_cost(macs) is macs
    assert set(COSTS) == {"params", "macs", "bitops", "memory_bits"}


def test_unknown_cost_lists_known_costs():
    known = re.escape(str(sorted(COSTS)))
    with pytest.raises(ValueError, match=rf"unknown cost 'flops'.*known costs: {known}"):
        resolve_cost("flops")
    with pytest.raises(ValueError, match=rf"known costs: {known}"):
        total([LayerSpec("fc", "linear", 2, 2)], "latency")
    with pytest.raises(ValueError, match="known costs"):
        exact_costs(nn.Linear(2, 2), torch.zeros(1, 2), costs=["energy"])


def test_formulas_are_differentiable_in_tensors():
    bits = torch.tensor(4.0, requires_grad=True)
    density = torch.tensor(0.5, requires_grad=True)
    spec = LayerSpec("c", "conv", 3, 8, kernel_size=(3, 3), weight_bits=bits, density=density, bias=True)
    mem = memory_bits(spec)
    # fan_in 27; dense 27·8·4 = 864; sparse 0.5·864 + 27·8 = 648 → sparse; + 8·32 bias + 8·16 scales
    assert isinstance(mem, torch.Tensor) and mem.item() == pytest.approx(648 + 256 + 128)
    mem.backward()
    assert bits.grad.item() == pytest.approx(0.5 * 27 * 8)   # ∂/∂bits of density·fan_in·out·bits
    assert density.grad.item() == pytest.approx(864)         # ∂/∂density = dense payload
    # The same formula on plain numbers gives the same value.
    plain = LayerSpec("c", "conv", 3, 8, kernel_size=(3, 3), weight_bits=4, density=0.5, bias=True)
    assert memory_bits(plain) == pytest.approx(mem.item())


def test_per_channel_tensor_bits_are_differentiable():
    bits = [torch.tensor(b, requires_grad=True) for b in (8.0, 4.0, 0.0)]
    spec = LayerSpec("fc", "linear", 10, 3, weight_bits=bits, act_bits=8)
    b = bitops(spec)
    assert b.item() == 10 * (8 + 4 + 0) * 8
    b.backward()
    assert all(t.grad.item() == pytest.approx(10 * 8) for t in bits)
    m = memory_bits(LayerSpec("fc", "linear", 10, 3, weight_bits=bits, density=torch.tensor(0.2, requires_grad=True)))
    # dense 10·12 = 120; sparse 0.2·120 + 10·2 kept channels = 44 → sparse; + 2 kept channels' scales · 16
    assert m.item() == pytest.approx(44 + 32)
    assert torch.autograd.grad(m, bits[0])[0].item() == pytest.approx(0.2 * 10)
