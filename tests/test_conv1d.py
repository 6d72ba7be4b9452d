"""Compressible 1-D layers: costs worked out by hand, and exact cost == NNI expression == expected cost.

A 1-D conv with kernel ``k`` is described as a ``(k, 1)`` kernel applied at ``L_out`` positions, so every cost
formula of :mod:`nni_udc.evaluators.costs` serves it unchanged; these tests check that the builders, the NNI
shape formulas and the supernet's mixed ops get the 1-D geometry right (issue 11, item 2).
"""
from __future__ import annotations

import nni
import pytest
import torch
from nni.nas.nn.pytorch import LayerChoice, ModelSpace, MutableBatchNorm1d, MutableConv1d
from nni.nas.profiler.pytorch.flops import FlopsProfiler, NumParamsProfiler
from spaces import random_samples
from torch import nn

from nni_udc.evaluators import COSTS, CostProfiler, exact_costs, model_specs, register_nni_formulas
from nni_udc.nn import (
    LowRankConv1d,
    MutableLowRankConv1d,
    MutableQuantConv1d,
    MutableQuantLinear,
    MutableSparseConv1d,
    QuantConv1d,
    SparseConv1d,
    act_bits_choice,
    bits_choice,
    channel_bits_choice,
    rank_choice,
    sparsity_choice,
)
from nni_udc.strategies import UDC, ExpectedCost
from nni_udc.strategies.supernet import MixedCompressedOp

X = torch.zeros(1, 1, 40)


class Pool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(-1)


def one_d_net() -> nn.Sequential:
    return nn.Sequential(
        QuantConv1d(1, 4, 5, padding=2, weight_bits=[8, 4, 2, 0], act_bits=8, sparsity=0.5),   # L 40 → 40
        nn.ReLU(),
        LowRankConv1d(4, 8, 3, stride=2, rank=2, weight_bits=4),                               # L 40 → 19
        SparseConv1d(8, 8, 3, padding=1, bias=False, sparsity=0.75, weight_bits=8),           # L 19 → 19
        nn.Conv1d(8, 6, 1),                                                                    # plain: float
        Pool(),
        nn.Linear(6, 10),
    )


# --- worked by hand ------------------------------------------------------------------------------------
# conv: in 1, out 4 (channel 3 removed → 3 kept), k 5, L_out 40; fan_in 5; bits 8+4+2 = 14; act 8;
#       sparsity 0.5 of 15 kept weights → dense 5·14 = 70 bits, sparse 0.5·70 + 15 = 50 → sparse; 3 biases and
#       3 16-bit scales.
CONV = dict(params=3 * 5 + 3, macs=40 * 3 * 5, bitops=40 * 5 * 14 * 8,
            memory_bits=min(70, 0.5 * 70 + 15) + 3 * 32 + 3 * 16)
# low-rank: first k 3, 4 → 2 at L_out (40 - 3) // 2 + 1 = 19; fan_in 12; 4 bits; float input; no bias; 2 scales.
#           second k 1, 2 → 8 at 19 positions; fan_in 2; 4 bits; 8 biases; 8 scales.
LR1 = dict(params=2 * 12, macs=19 * 2 * 12, bitops=19 * 12 * (4 * 2) * 32, memory_bits=12 * 4 * 2 + 2 * 16)
LR2 = dict(params=8 * 2 + 8, macs=19 * 8 * 2, bitops=19 * 2 * (4 * 8) * 32, memory_bits=2 * 4 * 8 + 8 * 32 + 8 * 16)
# DASS sparse: k 3, 8 → 8, L 19; fan_in 24; 8 bits; 0.75 sparse: dense 24·64 = 1536, sparse 384 + 192 = 576;
#              8 scales.
SP = dict(params=8 * 24, macs=19 * 8 * 24, bitops=19 * 24 * (8 * 8) * 32, memory_bits=0.25 * 1536 + 24 * 8 + 8 * 16)
# plain Conv1d (float): k 1, 8 → 6, L 19; fan_in 8; 32-bit weights and inputs; 6 biases.
PLAIN = dict(params=6 * 8 + 6, macs=19 * 6 * 8, bitops=19 * 8 * (32 * 6) * 32, memory_bits=48 * 32 + 6 * 32)
# plain Linear (float): 6 → 10 once.
FC = dict(params=60 + 10, macs=60, bitops=6 * (32 * 10) * 32, memory_bits=60 * 32 + 10 * 32)
LAYERS = [CONV, LR1, LR2, SP, PLAIN, FC]


def test_one_d_specs_are_k_by_one_kernels_at_l_out_positions():
    specs = model_specs(one_d_net(), X)
    assert [s.name for s in specs] == ["0", "2.first", "2.second", "3", "4", "6"]
    assert [s.kernel_size for s in specs] == [(5, 1), (3, 1), (1, 1), (3, 1), (1, 1), (1, 1)]
    assert [s.positions for s in specs] == [40, 19, 19, 19, 19, 1]


@pytest.mark.parametrize("cost", sorted(COSTS))
def test_one_d_net_costs_are_the_hand_worked_ones(cost):
    specs = model_specs(one_d_net(), X)
    got = [COSTS[cost](s) for s in specs]
    assert got == pytest.approx([layer[cost] for layer in LAYERS])
    assert exact_costs(one_d_net(), X, [cost])[cost] == pytest.approx(sum(layer[cost] for layer in LAYERS))


def test_hand_worked_encodings_are_the_clear_cases():
    assert CONV["memory_bits"] == 50 + 96 + 48 and SP["memory_bits"] == 576 + 128    # both sparse layers store bitmaps


def test_one_d_layers_compute_what_torch_computes():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 40)
    q = QuantConv1d(4, 6, 3, padding=1, weight_bits=32, act_bits=32)
    assert torch.allclose(q(x), nn.functional.conv1d(x, q.weight, q.bias, padding=1))
    s = SparseConv1d(4, 6, 3, sparsity=0.5)
    assert int((s.masked_weight() == 0).sum()) == 36 and s(x).shape == (2, 6, 38)
    dense = nn.Conv1d(4, 6, 3)
    assert torch.allclose(LowRankConv1d.from_dense(dense, rank=6)(x), dense(x), atol=1e-5)
    with pytest.raises(TypeError, match="needs an nn.Conv1d, but got Conv2d"):
        LowRankConv1d.from_dense(nn.Conv2d(4, 6, 3), rank=2)


def test_one_d_rank_limit_counts_the_kernel_once():
    LowRankConv1d(2, 16, 3, rank=6)                 # in · k = 6 (a 2-D 3×3 kernel would allow 16)
    with pytest.raises(ValueError, match=r"rank must be an integer in \[1, 6\]"):
        LowRankConv1d(2, 16, 3, rank=7)


# --- a 1-D space: exact cost == NNI expression == expected cost ------------------------------------------

class OneD(ModelSpace, label_prefix=None):
    """Every 1-D module and the NNI mutables a 1-D space uses (width, kernel size as choices, BatchNorm1d).

    NNI 3.0 has no one-shot version of its ``MutableConv1d``, and our mixed ops do not search kernel sizes: the
    supernet test takes a quantised stem and one kernel size instead.
    """

    def __init__(self, nni_stem: bool = True, kernels: tuple[int, ...] = (3, 5)):
        super().__init__()
        width = nni.choice("width", [4, 8])
        self.stem = (MutableConv1d(1, width, 3, padding=1) if nni_stem else   # NNI's own mutable conv: a float layer
                     MutableQuantConv1d(1, width, 3, padding=1, weight_bits=8))
        self.bn = MutableBatchNorm1d(width)
        kernel = nni.choice("k", list(kernels)) if len(kernels) > 1 else kernels[0]
        self.q = MutableQuantConv1d(width, 8, kernel, stride=2, weight_bits=bits_choice("b", [2, 4, 8]),
                                    act_bits=act_bits_choice("a", [4, 8]), sparsity=sparsity_choice("s", [0.0, 0.5]))
        self.op = LayerChoice({
            "lowrank": MutableLowRankConv1d(8, 8, 3, padding=1, rank=rank_choice("r", [1, 2, 4], max_rank=8),
                                            weight_bits=bits_choice("b_op", [4, 8])),
            "sparse": MutableSparseConv1d(8, 8, 3, padding=1, sparsity=sparsity_choice("sp", [0.5, 0.75]),
                                          weight_bits=bits_choice("b_op", [4, 8])),
        }, label="op")
        self.pc = MutableQuantConv1d(8, 6, 1, weight_bits=channel_bits_choice("pc", 6, [0, 2, 8], group_size=2))
        self.fc = MutableQuantLinear(6, 10, weight_bits=4, in_channel_bits=None)

    def forward(self, x):
        x = torch.relu(self.bn(self.stem(x)))
        x = self.op(torch.relu(self.q(x)))
        return self.fc(self.pc(x).mean(-1))


def _samples(space, n, seed=0):
    # every channel of pc removed is not a model
    return random_samples(space, n, seed=seed, keep=lambda s: any(s[f"pc_g{g}"] for g in range(3)))


@pytest.fixture(scope="module")
def space() -> OneD:
    return OneD()


@pytest.fixture(scope="module")
def samples(space) -> list[dict]:
    samples = _samples(space, 8)
    assert {s["op"] for s in samples} == {"lowrank", "sparse"} and {s["k"] for s in samples} == {3, 5}
    return samples


@pytest.fixture(scope="module")
def exact(space, samples) -> list[dict[str, float]]:
    return [exact_costs(space.freeze(s), X) for s in samples]


@pytest.mark.parametrize("cost", sorted(COSTS))
def test_one_d_exact_cost_equals_nni_expression_and_expected_cost_at_one_hot(space, samples, exact, cost):
    expression = CostProfiler(space, X, cost).expression
    expected = ExpectedCost(expression)
    want = [e[cost] for e in exact]
    assert [float(expression.freeze(s)) for s in samples] == pytest.approx(want, rel=1e-9)
    assert [float(expected(ExpectedCost.one_hot(s, expected.labels))) for s in samples] == pytest.approx(want, rel=1e-9)
    assert len(set(want)) > 3  # the cost really varies over the samples


def test_nni_own_profilers_understand_one_d_modules(space, samples, exact):
    register_nni_formulas()
    flops = FlopsProfiler(space, X, count_bias=False, count_normalization=False, count_activation=False)
    assert [flops.profile(s) for s in samples] == pytest.approx([e["macs"] for e in exact], rel=1e-9)
    count = NumParamsProfiler(space, X, count_normalization=False)
    assert [count.profile(s) for s in samples] == pytest.approx([e["params"] for e in exact], rel=1e-9)


# --- the supernet --------------------------------------------------------------------------------------

def test_supernet_mixes_every_one_d_module_and_one_hot_is_the_exported_model():
    torch.manual_seed(0)
    space, strategy = OneD(nni_stem=False, kernels=(5,)), UDC()
    x = torch.randn(3, 1, 40)
    expected = ExpectedCost(CostProfiler(space, X, "memory_bits").expression)
    strategy.prepare_cost(space, x)
    strategy.mutate_model(space)
    mixed = {name for name, m in space.named_modules() if isinstance(m, MixedCompressedOp)}
    assert mixed == {"stem", "q", "op.lowrank", "op.sparse", "pc", "fc"}
    space.eval()  # BatchNorm on running statistics, as in the frozen model
    space(x)
    for sample in _samples(OneD(nni_stem=False, kernels=(5,)), 4, seed=1):
        sample["width"] = 8  # the shared weights are sliced for narrower widths: compare at the full width
        strategy.distribution.set(sample)
        frozen = space.freeze(sample).eval()
        assert torch.allclose(space(x), frozen(x), atol=1e-5), sample
        cost = exact_costs(frozen, X, ["memory_bits"])["memory_bits"]
        assert float(expected(strategy.distribution.probabilities())) == pytest.approx(cost, rel=1e-6), sample
