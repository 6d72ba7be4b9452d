"""Expected cost from live probabilities: exact at one-hot, differentiable, same formulas as the exact cost."""
from __future__ import annotations

import pytest
import torch
from nni.mutable import Categorical
from spaces import EveryModule, keeps_a_channel, random_samples

from nni_udc.evaluators import COSTS, CostProfiler, exact_costs
from nni_udc.spaces import DigitsSpace
from nni_udc.strategies.expected_cost import ExpectedCost

X = torch.zeros(1, 1, 8, 8)


def _samples(space, n, seed=0):
    return random_samples(space, n, seed=seed, keep=lambda s: not isinstance(space, EveryModule) or keeps_a_channel(s))


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
