"""Penalties on a toy search where the task prefers the expensive choice: the target form meets its budget."""
from __future__ import annotations

import pytest
import torch

from nni_udc.strategies.penalty import LinearPenalty, TargetPenalty

BITS = torch.tensor([2.0, 4.0, 8.0])
REFERENCE = 8.0  # the float-like choice: the most bits


def _search(penalty, steps=600, lr=0.05):
    """Architecture logits over bit-widths; the 'task' rewards more (expected) bits with diminishing returns."""
    logits = torch.zeros(3, requires_grad=True)
    optimizer = torch.optim.Adam([logits], lr=lr)
    for _ in range(steps):
        p = torch.softmax(logits, 0)
        cost = (p * BITS).sum()
        task = -torch.log(cost)
        optimizer.zero_grad()
        (task + penalty(cost)).backward()
        optimizer.step()
        penalty.update(cost)
    return float((torch.softmax(logits.detach(), 0) * BITS).sum())


def test_linear_penalty_cost_falls_as_weight_rises():
    costs = [_search(LinearPenalty(weight, REFERENCE)) for weight in (0.0, 1.0, 20.0)]
    assert costs[0] > costs[1] > costs[2]


# Targets near a discrete choice (2.4 and 4 bits). Between far-apart choices (6 bits, between 4 and 8) the
# softmax saturates onto one vertex in this toy and the expected cost can settle at 4 bits: known, and
# harmless for the search, whose exported architecture is discrete anyway.
@pytest.mark.parametrize("target", [0.3, 0.5])
def test_target_penalty_lands_within_15_percent_of_target(target):
    penalty = TargetPenalty(target, REFERENCE, step_size=1.0)
    cost = _search(penalty, steps=1500)
    assert cost == pytest.approx(target * REFERENCE, rel=0.15)
    assert _search(LinearPenalty(0.0, REFERENCE)) > 1.15 * target * REFERENCE  # the budget was binding


def test_target_penalty_lets_weight_fall_when_under_budget():
    penalty = TargetPenalty(0.9, 100.0, step_size=1.0, weight=2.0)
    penalty.update(torch.tensor(10.0))
    assert penalty.weight == pytest.approx(1.2)  # 2 + 1 * (0.1 - 0.9)
    for _ in range(5):
        penalty.update(torch.tensor(10.0))
    assert penalty.weight == 0.0


def test_penalty_gradient_reaches_the_cost():
    cost = torch.tensor(4.0, requires_grad=True)
    LinearPenalty(2.0, 8.0)(cost).backward()
    assert cost.grad == pytest.approx(0.25)


@pytest.mark.parametrize("kwargs, field, value", [
    (dict(weight=-1.0, reference=1.0), "weight", "-1.0"),
    (dict(weight=1.0, reference=0.0), "reference", "0.0"),
])
def test_linear_penalty_rejects_bad_values(kwargs, field, value):
    with pytest.raises(ValueError, match=f"{field}.*{value}"):
        LinearPenalty(**kwargs)


@pytest.mark.parametrize("kwargs, field, value", [
    (dict(target=0.0, reference=1.0), "target", "0.0"),
    (dict(target=0.5, reference=-2.0), "reference", "-2.0"),
    (dict(target=0.5, reference=1.0, step_size=0), "step_size", "0"),
])
def test_target_penalty_rejects_bad_values(kwargs, field, value):
    with pytest.raises(ValueError, match=f"{field}.*{value}"):
        TargetPenalty(**kwargs)


def test_target_penalty_weight_never_negative_and_never_rewards_cost():
    penalty = TargetPenalty(0.5, 100.0, step_size=3.0)
    generator = torch.Generator().manual_seed(0)
    for cost in torch.rand(200, generator=generator) * 100:  # mostly under, sometimes over budget
        cost = cost.clone().requires_grad_()
        penalty(cost).backward()
        assert cost.grad >= 0  # a higher cost is never rewarded
        penalty.update(cost)
        assert penalty.weight >= 0.0
