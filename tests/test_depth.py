"""Depth as a choice in a converted model: ``make_compressible(..., depth=...)`` (issue 11, item 5).

The registered ``mnist1d`` space searches depth too; ``tests/test_mnist1d_space.py`` checks its costs three ways.
"""
from __future__ import annotations

import copy
import logging
import warnings

import pytest
import torch
import torchvision
from searches import udc_search_one_epoch
from spaces import random_samples
from torch import nn

from nni_udc.compressible import CompressionPolicy, make_compressible
from nni_udc.evaluators import CostProfiler, exact_costs
from nni_udc.strategies import UDC, ExpectedCost
from nni_udc.strategies.supernet import MixedRepeat

warnings.filterwarnings("ignore")
logging.getLogger("nni").setLevel(logging.ERROR)

X = torch.zeros(1, 3, 16, 16)  # resnet18: 8×8 after the stem, 4×4 in layer1, 2×2 in layer2
DEPTH = {"layer1": [1, 2], "layer2": [1, 2]}  # each stage's second block keeps its input's shape


def _resnet() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=10).eval()


def _space(net: nn.Module | None = None, **kwargs):
    return make_compressible(_resnet() if net is None else net, **{"weight_bits": [4, 8], "depth": DEPTH,
                                                                   "example_input": X, **kwargs})


def _uniform(space, bits: int, depth1: int, depth2: int) -> dict:
    sample = {label: bits for label in space.simplify() if label.startswith("bits")}
    return {**sample, "depth_layer1": depth1, "depth_layer2": depth2}


def test_depth_labels_are_listed_and_layers_keep_their_paths():
    space = _space()
    labels = space.simplify()
    assert labels["depth_layer1"].values == [1, 2] and labels["depth_layer2"].values == [1, 2]
    assert len(labels) == 19 + 2  # 21 layers, the first and last at 8 bits, and two depths
    assert len(space.converted) == 21 and "layer1.1.conv2" in space.converted
    frozen = space.freeze(_uniform(space, 4, 1, 2))
    assert [name for name, _ in frozen.model.layer1.named_children()] == ["0"]
    assert [name for name, _ in frozen.model.layer2.named_children()] == ["0", "1"]


def test_a_dropped_block_removes_exactly_its_layers_cost():
    space = _space()
    deep = space.freeze(_uniform(space, 4, 2, 2))
    full, short = exact_costs(deep, X), exact_costs(space.freeze(_uniform(space, 4, 1, 1)), X)
    # layer1.1: two 64→64 3×3 convs (36,864 weights each, no bias) at 4×4 positions;
    # layer2.1: two 128→128 3×3 convs (147,456 weights each) at 2×2 positions
    assert full["macs"] - short["macs"] == 2 * 36864 * 16 + 2 * 147456 * 4
    assert full["params"] - short["params"] == 2 * 36864 + 2 * 147456
    # and their storage (4-bit weights), as those two blocks cost on their own
    dropped = (exact_costs(deep.model.layer1[1], torch.zeros(1, 64, 4, 4))["memory_bits"]
               + exact_costs(deep.model.layer2[1], torch.zeros(1, 128, 2, 2))["memory_bits"])
    assert full["memory_bits"] - short["memory_bits"] == dropped >= (2 * 36864 + 2 * 147456) * 4


@pytest.mark.parametrize("cost", ["memory_bits", "macs", "bitops"])
def test_exact_cost_nni_expression_and_expected_cost_agree_at_one_hot(cost):
    space = _space(weight_bits=[2, 4, 8], sparsity=[0.0, 0.5])
    expression = CostProfiler(space, X, cost).expression
    expected = ExpectedCost(expression)
    depths = [(1, 1), (1, 2), (2, 1), (2, 2)]
    for (first, second), sample in zip(depths, random_samples(space, len(depths), seed=1)):
        sample |= {"depth_layer1": first, "depth_layer2": second}
        exact = exact_costs(space.freeze(sample), X, [cost])[cost]
        assert float(expression.freeze(sample)) == pytest.approx(exact, rel=1e-9), sample
        assert float(expected(ExpectedCost.one_hot(sample, expected.labels))) == pytest.approx(exact, rel=1e-9), sample


def test_a_frozen_model_holds_the_original_weights_of_the_blocks_it_keeps():
    net = _resnet()
    for m in net.modules():  # non-trivial running statistics, to see that they are kept too
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
    space = _space(net, weight_bits=[4, 32], policy=CompressionPolicy(ends_bits=32))
    frozen = space.freeze(_uniform(space, 32, 1, 2)).eval()
    own, original = frozen.model.state_dict(), net.state_dict()
    dropped = [k for k in original if k.startswith("layer1.1.")]
    assert dropped and not any(k in own for k in dropped)
    for key, value in original.items():
        if key not in dropped:
            assert torch.equal(own[key], value), key
    # at float bits, the frozen model is the user's model with layer1's second block removed by hand
    by_hand = copy.deepcopy(net)
    by_hand.layer1 = nn.Sequential(by_hand.layer1[0])
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(frozen(x), by_hand(x))


def test_the_supernet_at_one_hot_computes_the_frozen_model():
    space, strategy = _space(weight_bits=[4, 8]), UDC()
    x = torch.randn(2, 3, 16, 16)
    strategy.prepare_cost(space, X)
    strategy.mutate_model(space)
    space.eval()
    for sample in random_samples(_space(weight_bits=[4, 8]), 3, seed=2):
        strategy.distribution.set(sample)
        frozen = space.freeze(sample).eval()
        assert len(frozen.model.layer1) == sample["depth_layer1"]
        torch.testing.assert_close(space(x), frozen(x), atol=1e-4, rtol=1e-4)


# ----- depth 0: a run of blocks skipped altogether -----------------------------------------------------------

SKIPPABLE = {"layer1": [0, 1, 2], "layer2.1-1": [0, 1]}  # layer2's first block changes the shape: it stays


def test_depth_zero_skips_the_run_and_costs_nothing_for_it():
    space = _space(weight_bits=[4, 8], depth=SKIPPABLE)
    assert space.simplify()["depth_layer1"].values == [0, 1, 2]
    expression = CostProfiler(space, X, "memory_bits").expression
    expected = ExpectedCost(expression)
    for first, second in [(0, 0), (0, 1), (2, 0)]:
        sample = {label: 4 for label in space.simplify() if label.startswith("bits")}
        sample |= {"depth_layer1": first, "depth_layer2.1-1": second}
        frozen = space.freeze(sample)
        assert len(frozen.model.layer1) == first and len(frozen.model.layer2) == 1 + second
        exact = exact_costs(frozen, X, ["memory_bits"])["memory_bits"]
        assert float(expression.freeze(sample)) == pytest.approx(exact, rel=1e-9), sample
        assert float(expected(ExpectedCost.one_hot(sample, expected.labels))) == pytest.approx(exact, rel=1e-9)
    # at float bits, layer1 skipped is the user's model with layer1 emptied by hand
    net = _resnet()
    space = _space(net, weight_bits=[4, 32], depth=SKIPPABLE, policy=CompressionPolicy(ends_bits=32))
    sample = {label: 32 for label in space.simplify() if label.startswith("bits")}
    frozen = space.freeze(sample | {"depth_layer1": 0, "depth_layer2.1-1": 1}).eval()
    by_hand = copy.deepcopy(net)
    by_hand.layer1 = nn.Sequential()
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(frozen(x), by_hand(x))


def test_the_supernet_at_one_hot_depth_zero_computes_the_frozen_model():
    # 'layer2.1-1' also checks a label with a '.', which torch's ParameterDict refuses as a key (MixedRepeat)
    space, strategy = _space(weight_bits=[4, 8], depth=SKIPPABLE), UDC()
    x = torch.randn(2, 3, 16, 16)
    strategy.prepare_cost(space, X)
    strategy.mutate_model(space)
    space.eval()
    reference = _space(weight_bits=[4, 8], depth=SKIPPABLE)
    for first, second, sample in zip([0, 2, 0, 1], [0, 0, 1, 1], random_samples(reference, 4, seed=3)):
        sample |= {"depth_layer1": first, "depth_layer2.1-1": second}
        strategy.distribution.set(sample)
        frozen = space.freeze(sample).eval()
        assert len(frozen.model.layer1) == first and len(frozen.model.layer2) == 1 + second
        torch.testing.assert_close(space(x), frozen(x), atol=1e-4, rtol=1e-4)
    exported = {}  # NNI's export reads the parameters by label: the last sample's depths
    for repeat in (m for m in space.modules() if isinstance(m, MixedRepeat)):
        exported |= repeat.export({})
    assert exported == {"depth_layer1": 1, "depth_layer2.1-1": 1}


def test_a_run_of_blocks_in_a_flat_sequential():
    """mobilenet_v2's features 14-16: a 96 → 160 stride-2 block, then two 160 → 160 blocks that can be dropped."""
    torch.manual_seed(0)
    net = torchvision.models.mobilenet_v2(weights=None, num_classes=10).eval()
    x = torch.zeros(1, 3, 32, 32)
    space = make_compressible(net, weight_bits=[4, 8], depth={"features.14-16": [1, 2, 3]}, example_input=x)
    sample = {label: 8 for label in space.simplify()} | {"depth_features.14-16": 2}
    frozen = space.freeze(sample).eval()
    assert [name for name, _ in frozen.model.features.named_children()] == [str(i) for i in range(19) if i != 16]
    assert torch.equal(frozen.model.features.get_submodule("15.conv.2").weight, net.features[15].conv[2].weight)
    assert CostProfiler(space, x, "memory_bits").profile(sample) == exact_costs(frozen, x)["memory_bits"]


@pytest.mark.parametrize("depth, message", [
    ({"layer9": [1, 2]}, r"depth\['layer9'\]: the model has no module 'layer9'; its nn.Sequential modules are \["),
    ({"layer1.0": [1]}, r"'layer1.0' is a BasicBlock, not an nn.Sequential"),
    ({"layer1": [-1, 2]}, r"from 0 to 2, but got -1"),
    ({"layer1": [1, 3]}, r"from 0 to 2, but got 3"),
    ({"layer1": []}, r"depth\['layer1'\] must be a number or a non-empty list"),
    ({"layer1.0-5": [1]}, r"'layer1' has no blocks 0 to 5; its blocks are \['0', '1'\]"),
    ({"layer1": [1, 2], "layer1.1-1": [1]}, r"depth keys 'layer1' and 'layer1.1-1' share blocks"),
    (["layer1"], r"depth must map paths of nn.Sequential modules"),
])
def test_bad_depth_keys_and_values_are_named(depth, message):
    with pytest.raises(ValueError, match=message):
        _space(depth=depth)


def test_a_block_that_changes_its_input_shape_cannot_be_dropped():
    torch.manual_seed(0)
    net = torchvision.models.mobilenet_v2(weights=None, num_classes=10)
    with pytest.raises(ValueError, match=r"depth\['features.13-15'\] may drop block 'features.14' \(depths \[1, 2, 3\]\), "
                                         r"but it maps shape \(1, 96, 2, 2\) to \(1, 160, 1, 1\)"):
        make_compressible(net, depth={"features.13-15": [1, 2, 3]}, example_input=torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"depth needs example_input"):
        make_compressible(net, depth={"features.14-16": [1, 3]})
    with pytest.raises(ValueError, match=r"the model does not run on example_input \(\(1, 1, 32, 32\)\): RuntimeError"):
        make_compressible(net, depth={"features.14-16": [1, 3]}, example_input=torch.zeros(1, 1, 32, 32))


def test_a_single_count_removes_the_blocks_beyond_it_for_good():
    net = _resnet()
    space = make_compressible(net, weight_bits=[4, 8], depth={"layer1": 1}, example_input=X)
    assert "depth_layer1" not in space.simplify() and "bits_layer1.1.conv1" not in space.simplify()
    assert len(space.converted) == 19 and len(space.model.layer1) == 1 and len(net.layer1) == 2


# ----- the experiment file's form -------------------------------------------------------------------------

NET = """
from torch import nn


def build(num_classes=10):
    blocks = [nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()) for _ in range(3)]
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.Sequential(*blocks), nn.Conv2d(8, 16, 3, stride=2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes))
"""


def _depth_file(tmp_path, monkeypatch, compress: str) -> str:
    (tmp_path / "depth_net.py").write_text(NET)
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / "depth.yaml"
    path.write_text(f"space: {{model: 'depth_net:build', compress: {compress}}}\noutput: {tmp_path / 'run'}\n")
    return str(path)


def test_an_experiment_file_searches_depth(tmp_path, monkeypatch):
    from nni_udc.config import load_config
    from nni_udc.experiment import _space

    config = load_config(_depth_file(tmp_path, monkeypatch, "{weight_bits: [4, 8], depth: {'1': [1, 2, 3]}}"))
    space = _space(config, (1, 8, 8))
    assert space.simplify()["depth_1"].values == [1, 2, 3]


@pytest.mark.parametrize("compress, message", [
    ("{depth: {'2': [1, 2]}}", r"space.compress: make_compressible rejects .*'2' is a Conv2d, not an nn.Sequential"),
    ("{depth: {'1': [1, 4]}}", r"space.compress: make_compressible rejects .*from 0 to 3, but got 4"),
])
def test_bad_depth_in_an_experiment_file_is_a_config_error(tmp_path, monkeypatch, compress, message):
    from nni_udc.config import ConfigError, load_config
    from nni_udc.experiment import check_space

    config = load_config(_depth_file(tmp_path, monkeypatch, compress))
    with pytest.raises(ConfigError, match=message):
        check_space(config)


def test_example_input_is_not_for_the_experiment_file(tmp_path, monkeypatch):
    from nni_udc.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"space.compress.example_input: must be left out"):
        load_config(_depth_file(tmp_path, monkeypatch, "{example_input: [1]}"))


# ----- a search --------------------------------------------------------------------------------------------

def test_udc_searches_depth_and_exports_a_model_within_target(tmp_path):
    """One epoch on 32 random 3×16×16 inputs (about 12 s)."""
    space = _space(weight_bits=[2, 4, 8])
    model, strategy = udc_search_one_epoch(space, (3, 16, 16), 0.3, tmp_path)
    result = strategy.result
    assert {"depth_layer1", "depth_layer2"} <= set(strategy.distribution.choices)
    assert result.costs["memory_bits"] <= 0.3 * result.reference_costs["memory_bits"]
    assert exact_costs(model, X, ["memory_bits"]) == {"memory_bits": result.costs["memory_bits"]}
    assert len(model.model.layer1) == result.sample["depth_layer1"]
    assert len(model.model.layer2) == result.sample["depth_layer2"]
