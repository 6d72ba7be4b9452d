"""Expected cost from live probabilities: exact at one-hot, differentiable, same formulas as the exact cost."""
from __future__ import annotations

import random

import nni
import pytest
import torch
import torch.nn.functional as F
from nni.mutable import Categorical
from nni.nas.nn.pytorch import LayerChoice, ModelSpace, MutableConv2d, Repeat
from torch import nn

from nni_udc.evaluators import COSTS, CostProfiler, exact_costs
from nni_udc.nn import (
    MutableLowRankConv2d,
    MutableLowRankLinear,
    MutableQuantConv2d,
    MutableSparseConv2d,
    act_bits_choice,
    bits_choice,
    channel_bits_choice,
    rank_choice,
    sparsity_choice,
)
from nni_udc.spaces import DigitsSpace
from nni_udc.strategies.expected_cost import ExpectedCost

X = torch.zeros(1, 1, 8, 8)


class EveryModule(ModelSpace, label_prefix=None):
    def __init__(self):
        super().__init__()
        width = nni.choice("width", [4, 8])
        self.stem = MutableConv2d(1, width, 3, padding=1)
        self.quant = MutableQuantConv2d(width, 8, 3, padding=1, weight_bits=bits_choice("b", [2, 4, 8]),
                                        act_bits=act_bits_choice("a", [4, 8]), sparsity=sparsity_choice("s", [0.0, 0.5, 0.9]))
        self.op = LayerChoice({
            "lowrank": MutableLowRankConv2d(8, 8, 3, padding=1, rank=rank_choice("r", [2, 4], max_rank=8)),
            "sparse": MutableSparseConv2d(8, 8, 3, padding=1, sparsity=sparsity_choice("sp", [0.5, 0.75])),
            "skip": nn.Identity(),
        }, label="op")
        self.rep = Repeat(lambda i: MutableQuantConv2d(8, 8, 1, weight_bits=bits_choice(f"rb{i}", [4, 8])), (1, 3), label="depth")
        self.pc = MutableQuantConv2d(8, 6, 1, weight_bits=channel_bits_choice("pc", 6, [0, 2, 8], group_size=2))
        self.fc = MutableLowRankLinear(6, 10, rank=rank_choice("fr", [2, 6], max_rank=6))

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = self.rep(self.op(F.relu(self.quant(x))))
        return self.fc(self.pc(x).mean((2, 3)))


def _samples(space, n, seed=0):
    labels = space.simplify()
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        sample = {label: rng.choice(m.values) for label, m in labels.items()}
        if all(sample.get(f"pc_g{g}", 1) == 0 for g in range(3)):
            continue  # every channel removed is not a model
        out.append(sample)
    return out


@pytest.mark.parametrize("space_cls", [EveryModule, DigitsSpace])
@pytest.mark.parametrize("cost", sorted(COSTS))
def test_one_hot_expected_cost_equals_exact_cost(space_cls, cost):
    space = space_cls()
    expected = ExpectedCost(CostProfiler(space, X, cost).expression)
    for sample in _samples(space, 6):
        exact = exact_costs(space.freeze(sample), X, [cost])[cost]
        assert float(expected(ExpectedCost.one_hot(sample, expected.labels))) == pytest.approx(exact, rel=1e-9)


def test_gradient_reaches_every_label_that_changes_the_cost():
    space = EveryModule()
    expected = ExpectedCost(CostProfiler(space, X, "memory_bits").expression)
    logits = {label: torch.zeros(len(c.values), requires_grad=True) for label, c in expected.labels.items()}
    value = expected({label: torch.softmax(a, 0) for label, a in logits.items()})
    value.backward()
    for label, a in logits.items():
        assert a.grad is not None and torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0, label


def test_few_label_terms_are_exact_expectations():
    b, s = Categorical([2, 8], label="b"), Categorical([0.0, 0.5], label="s")
    cost = ExpectedCost(b * b * (1 - s))  # one product over two labels: tabulated, not factorised
    pb, ps = torch.tensor([0.25, 0.75]), torch.tensor([0.5, 0.5])
    brute = sum(pb[i] * ps[j] * bv * bv * (1 - sv) for i, bv in enumerate([2, 8]) for j, sv in enumerate([0.0, 0.5]))
    assert float(cost({"b": pb, "s": ps})) == pytest.approx(float(brute))


def test_missing_probabilities_name_the_label():
    cost = ExpectedCost(Categorical([2, 8], label="b") * 3)
    with pytest.raises(KeyError, match="'b'"):
        cost({})
