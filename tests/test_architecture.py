"""Most probable architectures within a budget: the best-first enumeration against brute force."""
from __future__ import annotations

import itertools

import pytest
import torch
from nni.mutable import Categorical

from nni_udc.strategies.architecture import ArchitectureDistribution, most_probable, ranked_samples


def _distribution(seed: int) -> ArchitectureDistribution:
    generator = torch.Generator().manual_seed(seed)
    choices = {"a": Categorical([1, 2, 3], label="a"), "b": Categorical([2, 4, 8], label="b"),
               "c": Categorical([0.0, 0.5], label="c"), "d": Categorical([1, 5], label="d")}
    logits = {label: torch.randn(len(c.values), generator=generator) * 2 for label, c in choices.items()}
    return ArchitectureDistribution(choices, {k: (lambda v=v: v) for k, v in logits.items()})


def _cost(sample):
    return sample["a"] * sample["b"] * (1 - sample["c"]) + sample["d"]


@pytest.mark.parametrize("seed", range(5))
def test_ranked_samples_come_in_decreasing_probability_and_cover_the_space(seed):
    dist = _distribution(seed)
    ranked = list(ranked_samples(dist.log_probabilities(), dist.choices))
    assert len(ranked) == 3 * 3 * 2 * 2
    scores = [s for s, _ in ranked]
    assert scores == sorted(scores, reverse=True)
    assert len({tuple(x.values()) for _, x in ranked}) == len(ranked)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("budget", [4.0, 9.0, 20.0])
def test_most_probable_within_budget_equals_brute_force(seed, budget):
    dist = _distribution(seed)
    log_p = dist.log_probabilities()
    every = [dict(zip(dist.choices, combo)) for combo in itertools.product(*(c.values for c in dist.choices.values()))]

    def joint(sample):
        return sum(float(log_p[lb][dist.choices[lb].values.index(v)]) for lb, v in sample.items())

    fitting = sorted((x for x in every if _cost(x) <= budget), key=joint, reverse=True)
    found = most_probable(dist, _cost, budget=budget, k=3)
    assert [joint(x) for _, x in found] == pytest.approx([joint(x) for x in fitting[:3]])
    assert all(_cost(x) <= budget for _, x in found)


def test_unused_labels_do_not_repeat_an_architecture():
    dist = _distribution(0)
    # 'd' only matters when c == 0.5: samples that differ in 'd' alone are one architecture when c == 0.0
    found = most_probable(dist, _cost, budget=100.0, k=36, used=lambda x: set(x) - ({"d"} if x["c"] == 0.0 else set()))
    keys = [(x["a"], x["b"], x["c"], x["d"] if x["c"] == 0.5 else None) for _, x in found]
    assert len(keys) == len(set(keys)) == 3 * 3 * (1 + 2)


def test_set_selects_a_sample_and_restore_undoes_it():
    dist = _distribution(0)
    state = dist.state()
    dist.set({"a": 3, "b": 2, "c": 0.5, "d": 1})
    assert dist.argmax() == {"a": 3, "b": 2, "c": 0.5, "d": 1}
    dist.restore(state)
    assert all(torch.equal(dist.logits(lb), state[lb]) for lb in state)


def test_fixed_labels_give_the_most_probable_architecture_given_them():
    dist = _distribution(2)
    log_p = dist.log_probabilities()
    every = [dict(zip(dist.choices, combo)) for combo in itertools.product(*(c.values for c in dist.choices.values()))]

    def joint(sample):
        return sum(float(log_p[lb][dist.choices[lb].values.index(v)]) for lb, v in sample.items())

    for value in (1, 2, 3):
        ((_, found),) = most_probable(dist, _cost, budget=9.0, fixed={"a": value})
        best = max((x for x in every if x["a"] == value and _cost(x) <= 9.0), key=joint)
        assert found["a"] == value and joint(found) == pytest.approx(joint(best))
