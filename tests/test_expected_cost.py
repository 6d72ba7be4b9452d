"""Expected cost from live probabilities: exact at one-hot, differentiable, same formulas as the exact cost."""
from __future__ import annotations

import itertools
import math
import random

import pytest
import torch
from nni.mutable import Categorical, MutableExpression
from spaces import EveryModule, keeps_a_channel, random_samples

from nni_udc.evaluators import COSTS, CostProfiler, exact_costs
from nni_udc.spaces import DigitsSpace
from nni_udc.strategies.expected_cost import ExpectedCost, compile_expression

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


def _brute_force(expression, probs: dict, labels: dict) -> float:
    """Σ over every sample with non-zero probability of P(sample) · cost(sample): the expectation, by enumeration."""
    evaluate = compile_expression(expression)
    support = {label: [(v, float(p)) for v, p in zip(labels[label].values, probs[label]) if p > 0] for label in labels}
    total = 0.0
    for combo in itertools.product(*support.values()):
        weight = math.prod(p for _, p in combo)
        total += weight * float(evaluate({label: v for label, (v, _) in zip(support, combo)}))
    return total


def test_expected_cost_is_the_exact_expectation_with_labels_shared_between_layers():
    """DigitsSpace shares labels between layers (``b_block`` on three candidates, the width on every layer, the
    strided conv's channel groups on the classifier's inputs): each layer's table is over its own labels, and the sum
    over layers is exact by linearity, so the expected cost is the expectation, not an approximation of it."""
    space = DigitsSpace()
    for cost in ("memory_bits", "bitops"):
        expression = CostProfiler(space, X, cost).expression
        expected = ExpectedCost(expression)
        labels = expected.labels
        rng = random.Random(0)
        mixed = ["width", "op", "b_block", "s_block", "rank", "down_g0", "down_g1", "s_down", "head_g0", "head_g1"]
        probs = {}
        for label, choice in labels.items():
            p = torch.zeros(len(choice.values), dtype=torch.float64)
            if label in mixed:  # two values with mixed probabilities: 2**10 samples to enumerate
                first, second = rng.sample(range(len(choice.values)), 2)
                p[first], p[second] = 0.3, 0.7
            else:
                p[rng.randrange(len(choice.values))] = 1.0
            probs[label] = p
        assert float(expected(probs)) == pytest.approx(_brute_force(expression, probs, labels), rel=1e-12), cost


def test_products_of_sums_over_shared_labels_are_exact():
    """(Σ x_i)² over five binary labels, with tables kept to 4 points: expanded into products of pairs of tables, one
    axis per label, so E[x_i · x_i] is E[x_i²], not E[x_i]² as treating the factors as independent would give."""
    xs = [Categorical([0, 1], label=f"x{i}") for i in range(5)]
    total = sum(xs[1:], xs[0])
    expression = total * total + 3
    cost = ExpectedCost(expression, max_table_size=4)
    probs = {f"x{i}": torch.tensor([1 - q, q], dtype=torch.float64) for i, q in enumerate([0.1, 0.3, 0.5, 0.7, 0.9])}
    mean = sum(q for q in [0.1, 0.3, 0.5, 0.7, 0.9])
    variance = sum(q * (1 - q) for q in [0.1, 0.3, 0.5, 0.7, 0.9])
    assert float(cost(probs)) == pytest.approx(mean**2 + variance + 3, rel=1e-12)
    assert float(cost(probs)) == pytest.approx(_brute_force(expression, probs, cost.labels), rel=1e-12)


def test_the_gradient_of_the_contracted_tables_is_the_table_entries():
    """d E / d p(b = v) is the cost at b = v (one label, linear cost): what the contraction's backward must give."""
    b, s = Categorical([2, 4, 8], label="b"), Categorical([0.0, 0.5], label="s")
    cost = ExpectedCost(b * 10 + s * 100 + b * (1 - s))  # a sum of tables over b, over s and over both
    pb = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64, requires_grad=True)
    ps = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
    cost({"b": pb, "s": ps}).backward()
    assert pb.grad.tolist() == pytest.approx([2 * 10 + 2, 4 * 10 + 4, 8 * 10 + 8])


def test_tables_of_operations_that_refuse_arrays_are_evaluated_point_by_point():
    """Tables are computed on numpy arrays where the operations allow it; an operation that needs one number
    (``int()``) or silently computes something else on an array (``len(str(x))``) is evaluated point by point."""
    a, b = Categorical([1, 5, 12], label="a"), Categorical([2, 3], label="b")
    needs_int = MutableExpression(lambda x: int(x) % 4, "int({}) % 4", [a * b])
    digits = MutableExpression(lambda x: len(str(int(x))) if not hasattr(x, "shape") else len(str(x)), "digits({})",
                               [a * b])
    pa, pb = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64), torch.tensor([0.6, 0.4], dtype=torch.float64)
    for expression in (needs_int, digits, MutableExpression.min(a * 3, b * 4) + MutableExpression.switch_case(
            b, {2: a, 3: a * a})):
        cost = ExpectedCost(expression)
        assert float(cost({"a": pa, "b": pb})) == pytest.approx(
            _brute_force(expression, {"a": pa, "b": pb}, cost.labels), rel=1e-12)
