"""The space zoo (issue 14, item 1): ``resnet-cifar``, ``vgg-cifar``, ``mobilenetv2-cifar``, ``ds-cnn``, ``edsr-sr``.

Each registered space freezes random samples that run with the right output shape; its exact costs equal the NNI
cost expression and the expected cost at one-hot; the cost tables of the docstrings hold; the uniform grid is
non-empty and made of models of the space; a one-epoch UDC search exports a model within its target.
"""
from __future__ import annotations

import random
from typing import Any

import pytest
import torch
from spaces import random_samples

from nni_udc.evaluators import CostProfiler, exact_costs
from nni_udc.spaces.registry import SPACES
from nni_udc.strategies import ExpectedCost
from nni_udc.strategies.uniform import uniform_grid

ZOO = ["resnet-cifar", "vgg-cifar", "mobilenetv2-cifar", "ds-cnn", "edsr-sr"]

#: the op of every LayerChoice in the smallest and in the largest sample of each space
EXTREMES: dict[str, tuple[str | None, str | None]] = {
    "resnet-cifar": ("lowrank", "conv"),
    "vgg-cifar": ("lowrank", "conv"),
    "mobilenetv2-cifar": ("sparse", None),  # None: the last candidate of the dense ones (largest expansion, kernel)
    "ds-cnn": (None, None),
    "edsr-sr": (None, None),
}

#: (params, memory_bits) of the smallest and largest sample at default arguments, as the docstrings' tables say
COST_TABLES: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "resnet-cifar": ((1342, 4680), (43810, 355360)),
    "vgg-cifar": ((2306, 6160), (6306, 51744)),
    "mobilenetv2-cifar": ((4562, 12632), (12354, 108064)),
    "ds-cnn": ((1244, 3808), (2044, 18624)),
    "edsr-sr": ((2852, 7728), (13788, 114624)),
}


def extreme(space: Any, large: bool, op: str | None) -> dict[str, Any]:
    """The smallest (``large=False``) or largest sample: fewest/most blocks and channels, fewest/most bits and rank,
    most/no sparsity, and ``op`` (or the last dense candidate) in every ``LayerChoice``."""
    sample: dict[str, Any] = {}
    for label, choice in space.simplify().items():
        values = list(choice.values)
        if all(isinstance(v, (int, float)) for v in values):
            sparse = label.startswith("s")
            sample[label] = (min(values) if large == sparse else max(values))
        else:
            dense = [v for v in values if v != "sparse"]
            sample[label] = op if op is not None else dense[-1]
    return sample


def _output_shape(name: str, batch: int) -> tuple[int, ...]:
    """Logits of 10 classes, 12 keywords (``ds-cnn``), or the image at twice the resolution (``edsr-sr``)."""
    _, h, w = SPACES[name][1]
    return {"ds-cnn": (batch, 12), "edsr-sr": (batch, 3, 2 * h, 2 * w)}.get(name, (batch, 10))


@pytest.mark.parametrize("name", ZOO)
def test_random_samples_freeze_and_run_with_the_right_output_shape(name):
    space_cls, shape = SPACES[name]
    space = space_cls()
    for sample in random_samples(space, 3, seed=1):
        model = space.freeze(sample).eval()
        assert model(torch.randn(2, *shape)).shape == _output_shape(name, 2), sample


@pytest.mark.parametrize("name", ZOO)
def test_exact_cost_equals_nni_expression_and_expected_cost_at_one_hot(name):
    space_cls, shape = SPACES[name]
    space = space_cls()
    x = torch.zeros(1, *shape)
    for cost in ("memory_bits", "bitops"):
        expression = CostProfiler(space, x, cost).expression
        expected = ExpectedCost(expression)
        samples = random_samples(space, 3, seed=2) + [extreme(space, large, op) for large, op in
                                                       zip((False, True), EXTREMES[name])]
        for sample in samples:
            exact = exact_costs(space.freeze(sample), x, [cost])[cost]
            assert float(expression.freeze(sample)) == pytest.approx(exact, rel=1e-9), (cost, sample)
            one_hot = ExpectedCost.one_hot(sample, expected.labels)
            assert float(expected(one_hot)) == pytest.approx(exact, rel=1e-9), (cost, sample)


@pytest.mark.parametrize("name", ZOO)
def test_cost_tables_of_the_docstrings(name):
    space_cls, shape = SPACES[name]
    space = space_cls()
    for large, op, (params, memory) in zip((False, True), EXTREMES[name], COST_TABLES[name]):
        costs = exact_costs(space.freeze(extreme(space, large, op)), torch.zeros(1, *shape), ["params", "memory_bits"])
        assert costs == {"params": params, "memory_bits": memory}, (large, costs)
        assert f"{round(params):,}".replace(",", " ") in space_cls.__doc__
        assert f"{round(memory):,}".replace(",", " ") in space_cls.__doc__
    # the table's extremes bound random samples
    for sample in random_samples(space, 4, seed=3):
        memory = exact_costs(space.freeze(sample), torch.zeros(1, *shape), ["memory_bits"])["memory_bits"]
        assert COST_TABLES[name][0][1] <= memory <= COST_TABLES[name][1][1], sample


@pytest.mark.parametrize("name", ZOO)
def test_uniform_grid_is_made_of_models_of_the_space(name):
    space_cls, shape = SPACES[name]
    space = space_cls()
    labels = space.simplify()
    grid = uniform_grid(space)
    assert 1 < len(grid) <= 2000
    for sample in random.Random(0).sample(grid, min(3, len(grid))):
        assert set(sample) == set(labels)
        assert all(sample[label] in choice.values for label, choice in labels.items())
        assert space.freeze(sample).eval()(torch.zeros(1, *shape)).shape == _output_shape(name, 1)
    bits = {sample[label] for sample in grid for label in labels if label.startswith("b")}
    assert bits == {2, 4, 8}  # every bit-width is used, uniformly
    assert all(len({sample[label] for label in labels if label.startswith("b")}) == 1 for sample in grid)
