"""DigitsSpace(down_groups=...): the strided conv's channels removed in groups (0 bits), and the classifier's
inputs with them; the uniform grid keeps every channel."""
from __future__ import annotations

import pytest
import torch

from nni_udc.evaluators import CostProfiler, exact_costs
from nni_udc.spaces import DigitsSpace
from nni_udc.strategies import UDC, ExpectedCost, uniform_grid

X = torch.zeros(1, 1, 8, 8)
BASE = {"width": 8, "b_stem": 4, "op": "conv", "b_block": 4, "s_block": 0.0, "rank": 2, "s_dass": 0.5,
        "s_down": 0.0, "head_g0": 8, "head_g1": 8}


def _groups(*bits):
    return {f"down_g{i}": b for i, b in enumerate(bits)}


def test_labels_and_candidates():
    choices = DigitsSpace(down_groups=4).simplify()
    assert "b_down" not in choices
    assert [choices[f"down_g{i}"].values for i in range(4)] == [[0, 2, 4, 8]] * 4


@pytest.mark.parametrize("groups", [0, 3, 64, True, 2.0])
def test_groups_that_do_not_divide_the_channels_are_refused(groups):
    with pytest.raises(ValueError, match="down_groups must divide"):
        DigitsSpace(down_groups=groups)


def test_removing_two_groups_removes_their_weights_and_the_classifiers_inputs():
    model = DigitsSpace(down_groups=4).freeze({**BASE, **_groups(4, 0, 4, 0)})
    kept = exact_costs(model, X)["memory_bits"]
    full = exact_costs(DigitsSpace(down_groups=4).freeze({**BASE, **_groups(4, 4, 4, 4)}), X)["memory_bits"]
    # 16 of the strided conv's 32 channels go: 16 x (8 x 9 weights x 4 bits + a 32-bit bias + a 16-bit scale)
    # = 16 x 336 = 5,376, and the classifier's weights on them: 16 inputs x 10 classes x 8 bits = 1,280
    assert full - kept == 5_376 + 1_280
    assert int(model.head.input_mask.sum()) == 16


def test_the_grid_is_the_default_spaces_grid_with_every_channel_kept():
    grid = uniform_grid(DigitsSpace(down_groups=4))
    old = uniform_grid(DigitsSpace())
    assert len(grid) == len(old) == 96
    for new, before in zip(grid, old):
        assert {new[f"down_g{i}"] for i in range(4)} == {before["b_down"]}  # one bit-width, no channel removed
        assert {k: v for k, v in new.items() if not k.startswith("down_g")} == \
               {k: v for k, v in before.items() if k != "b_down"}
    for new, before in list(zip(grid, old))[::17]:  # the same models: the same costs
        assert exact_costs(DigitsSpace(down_groups=4).freeze(new), X) == exact_costs(DigitsSpace().freeze(before), X)


@torch.no_grad()
def test_one_hot_supernet_with_removed_groups_computes_the_frozen_model_and_its_cost():
    torch.manual_seed(0)
    space = DigitsSpace(down_groups=4)
    expression = CostProfiler(space, X, "memory_bits").expression
    strategy = UDC()
    strategy.prepare_cost(space, X)
    strategy.mutate_model(space)
    x = torch.randn(4, 1, 8, 8)
    space.train()
    space(x)  # initialise the activation clips
    space.eval()
    sample = {**BASE, **_groups(0, 2, 8, 0)}
    strategy.distribution.set(sample)
    frozen = space.freeze(sample).eval()
    assert torch.allclose(space(x), frozen(x), atol=1e-5)
    expected = ExpectedCost(expression)(strategy.distribution.probabilities())
    assert float(expected) == pytest.approx(exact_costs(frozen, X)["memory_bits"])
