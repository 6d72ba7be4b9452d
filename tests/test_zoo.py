"""The space zoo (issue 14, item 1): ``resnet-cifar``, ``vgg-cifar``, ``mobilenetv2-cifar``, ``ds-cnn``, ``edsr-sr``.

Each registered space freezes random samples that run with the right output shape; its exact costs equal the NNI
cost expression and the expected cost at one-hot; the cost tables of the docstrings hold; the uniform grid is
non-empty and made of models of the space; a one-epoch UDC search exports a model within its target.
"""
from __future__ import annotations

import random
import re
from typing import Any

import nni
import pytest
import torch
from nni.nas.nn.pytorch import ModelSpace, MutableConv2d, MutableLinear, Repeat
from nni.nas.oneshot.pytorch.supermodule.differentiable import DifferentiableMixedRepeat
from searches import udc_search_one_epoch
from spaces import random_samples
from torch import nn

from nni_udc.evaluators import CostProfiler, exact_costs
from nni_udc.nn import MutableQuantConv2d, bits_choice
from nni_udc.spaces import DsCnnSpace, EdsrSpace, MobileNetV2CifarSpace, ResNetCifarSpace, VggCifarSpace
from nni_udc.spaces.mobilenetv2_cifar import MOBILENETV2_STAGES
from nni_udc.spaces.registry import SPACES
from nni_udc.spaces.resnet_cifar import RESNET20_WIDTHS
from nni_udc.spaces.vgg_cifar import VGG16
from nni_udc.strategies import DASS, HALOC, UDC, ChannelMixedPrecision, ExpectedCost
from nni_udc.strategies.supernet import MixedRepeat
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

#: (params, memory_bits) of the smallest and largest sample at default arguments, as the docstrings' tables say.
#: memory_bits counts a 32-bit bias per kept channel of every bias-free conv that a BatchNorm follows (export folds
#: the BatchNorm into it): resnet-cifar +84 / +280 channels × 32 bits (was 4 680 / 355 360), vgg-cifar +56 / +56
#: (was 6 160 / 51 744), mobilenetv2-cifar +276 / +552 (was 11 000 / 108 064), ds-cnn +48 / +112 (stem and 2 convs per
#: block at width 16; was 3 808 / 18 624). edsr-sr has no BatchNorm.
COST_TABLES: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "resnet-cifar": ((1342, 7368), (43810, 364320)),
    "vgg-cifar": ((2306, 7952), (6306, 53536)),
    "mobilenetv2-cifar": ((3938, 19832), (12354, 125728)),
    "ds-cnn": ((1244, 5344), (2044, 22208)),
    "edsr-sr": ((2852, 7728), (13788, 114624)),
}


def extreme(space: Any, large: bool, op: str | None) -> dict[str, Any]:
    """The smallest (``large=False``) or largest sample: fewest/most blocks and channels, fewest/most bits and rank,
    most/no sparsity, and ``op`` (or the last dense candidate) in every ``LayerChoice``; the smallest keeps one group
    of a per-channel layer's channels."""
    sample: dict[str, Any] = {}
    for label, choice in space.simplify().items():
        values = list(choice.values)
        if re.search(r"_g\d+$", label) and not large:  # per-channel bits: keep one group, at the fewest bits
            sample[label] = min(v for v in values if v) if label.endswith("_g0") else 0
        elif all(isinstance(v, (int, float)) for v in values):
            sparse = label.startswith("s")
            sample[label] = (min(values) if large == sparse else max(values))
        else:
            dense = [v for v in values if v != "sparse"]
            sample[label] = op if op is not None else dense[-1]
    return sample


def _samples(space: Any, n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` random samples that keep a group of every per-channel layer (removing all is no model)."""
    def keeps(sample: dict[str, Any]) -> bool:
        layers: dict[str, bool] = {}
        for label, value in sample.items():
            if re.search(r"_g\d+$", label):
                layer = label.rsplit("_g", 1)[0]
                layers[layer] = layers.get(layer, False) or bool(value)
        return all(layers.values())
    return random_samples(space, n, seed=seed, keep=keeps)


def _output_shape(name: str, batch: int) -> tuple[int, ...]:
    """Logits of 10 classes, 12 keywords (``ds-cnn``), or the image at twice the resolution (``edsr-sr``)."""
    _, h, w = SPACES[name][1]
    return {"ds-cnn": (batch, 12), "edsr-sr": (batch, 3, 2 * h, 2 * w)}.get(name, (batch, 10))


@pytest.mark.parametrize("name", ZOO)
def test_random_samples_freeze_and_run_with_the_right_output_shape(name):
    space_cls, shape = SPACES[name]
    space = space_cls()
    for sample in _samples(space, 3, seed=1):
        model = space.freeze(sample).eval()
        assert model(torch.randn(2, *shape)).shape == _output_shape(name, 2), sample


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "mobilenetv2-cifar" else n
                                  for n in ZOO])  # mobilenetv2-cifar: 15 s on one core
def test_exact_cost_equals_nni_expression_and_expected_cost_at_one_hot(name):
    space_cls, shape = SPACES[name]
    space = space_cls()
    x = torch.zeros(1, *shape)
    for cost in ("memory_bits", "bitops"):
        expression = CostProfiler(space, x, cost).expression
        expected = ExpectedCost(expression)
        samples = _samples(space, 3, seed=2) + [extreme(space, large, op) for large, op in
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
    for sample in _samples(space, 4, seed=3):
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


def _supernet(space: Any, x: torch.Tensor, **kwargs: Any) -> UDC:
    strategy = UDC(**kwargs)
    strategy.prepare_cost(space, x)
    strategy.mutate_model(space)
    space.eval()
    space(x)  # initialise the activation clips
    return strategy


@pytest.mark.parametrize("name, make", [
    ("resnet-cifar", lambda: ResNetCifarSpace(widths=((4,), (8,), (8,)))),
    pytest.param("mobilenetv2-cifar", lambda: MobileNetV2CifarSpace(stem=4, stages=((4, 2, 1), (8, 1, 2)), last_channels=8,
                                                                     last_groups=2), marks=pytest.mark.slow),  # 12-30 s
    ("ds-cnn", lambda: DsCnnSpace(width=8)),
    ("edsr-sr", lambda: EdsrSpace(widths=(4, 8))),  # with its bicubic skip: the freeze keeps the supernet's tail
])
def test_supernet_at_one_hot_computes_the_frozen_model(name, make):
    torch.manual_seed(0)
    space = make()
    x = torch.randn(2, *SPACES[name][1])
    strategy = _supernet(space, x)
    for sample in _samples(make(), 3, seed=4):
        strategy.distribution.set(sample)
        frozen = space.freeze(sample).eval()
        assert torch.allclose(space(x), frozen(x), atol=1e-4), sample


@pytest.mark.parametrize("preset, names", [(HALOC, ["resnet-cifar", "vgg-cifar"]), (DASS, ["mobilenetv2-cifar"]),
                                           (ChannelMixedPrecision, ["mobilenetv2-cifar"])])
def test_presets_accept_the_spaces_of_their_papers(preset, names):
    for name in names:
        preset().check_space(SPACES[name][0]())
    with pytest.raises(ValueError, match="DsCnnSpace has no"):  # DS-CNN has no rank, sparse op or channel choice
        preset().check_space(DsCnnSpace())


# ----- NNI 3.0's differentiable Repeat leaves depth 0 out (nni_udc.strategies.supernet.MixedRepeat) ------------

class ShallowOrDeep(ModelSpace, label_prefix=None):  # type: ignore[call-arg]
    """A ``Repeat`` that may hold no block: NNI's mutables and ours."""

    def __init__(self) -> None:
        super().__init__()
        width = nni.choice("width", [4, 8])
        self.stem = MutableConv2d(1, width, 3, padding=1)
        self.blocks = Repeat(lambda i: nn.Sequential(
            MutableQuantConv2d(width, width, 3, padding=1, weight_bits=bits_choice(f"b{i}", [4, 8])), nn.ReLU()),
            (0, 2), label="depth")
        self.fc = MutableLinear(width, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.blocks(torch.relu(self.stem(x))).mean((2, 3)))


def test_supernet_at_one_hot_depth_zero_computes_the_model_without_blocks():
    torch.manual_seed(0)
    space, x = ShallowOrDeep(), torch.randn(2, 1, 8, 8)
    strategy = _supernet(space, x)
    assert type(space.blocks) is MixedRepeat
    for depth in (0, 1, 2):
        sample = {"width": 8, "depth": depth, "b0": 4, "b1": 8}
        strategy.distribution.set(sample)
        frozen = space.freeze(sample).eval()
        assert len(frozen.blocks) == depth
        assert torch.allclose(space(x), frozen(x), atol=1e-5), depth
    # NNI's own mixed Repeat (a hook run before ours), at the same one-hot depth 0, drops the input: the bug fixed here
    torch.manual_seed(0)
    nni_space = ShallowOrDeep()
    nni_strategy = _supernet(nni_space, x, mutation_hooks=[DifferentiableMixedRepeat.mutate])
    assert type(nni_space.blocks) is DifferentiableMixedRepeat
    nni_strategy.distribution.set({"width": 8, "depth": 0, "b0": 4, "b1": 8})
    frozen = nni_space.freeze({"width": 8, "depth": 0, "b0": 4, "b1": 8}).eval()
    assert not torch.allclose(nni_space(x), frozen(x), atol=1e-3)


# ----- a search on each kind of space ------------------------------------------------------------------------------

@pytest.mark.slow  # about 10 s each on one core
@pytest.mark.parametrize("name, make, num_classes", [
    ("resnet-cifar", lambda: ResNetCifarSpace(widths=((4,), (4, 8), (8,))), 10),
    ("ds-cnn", lambda: DsCnnSpace(width=8), 12),
])
def test_one_epoch_udc_search_exports_a_model_within_target(tmp_path, name, make, num_classes):
    shape = SPACES[name][1]
    model, strategy = udc_search_one_epoch(make(), shape, 0.3, tmp_path, num_classes=num_classes)
    result = strategy.result
    assert result.costs["memory_bits"] <= 0.3 * result.reference_costs["memory_bits"]
    assert exact_costs(model, torch.zeros(1, *shape), ["memory_bits"]) == {"memory_bits": result.costs["memory_bits"]}
    assert model(torch.randn(2, *shape)).shape == (2, num_classes)


# ----- the papers' networks are samples of the spaces at their arguments ------------------------------------------

def _largest(space: Any, op: str | None) -> Any:
    return space.freeze(extreme(space, True, op))


def test_resnet20_is_a_sample_of_resnet_cifar():
    model = _largest(ResNetCifarSpace(widths=RESNET20_WIDTHS, max_depth=3), "conv")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert sum(m.kernel_size == (3, 3) for m in convs) == 19 and len(convs) == 21  # + two 1×1 shortcuts
    # stem 3·16·9, stage 1: 6 × 16·16·9, stage 2: 16·32·9 + 5 × 32·32·9 + 16·32, stage 3 likewise, classifier 64·10 + 10
    params = 432 + 6 * 2304 + (4608 + 5 * 9216 + 512) + (18432 + 5 * 36864 + 2048) + 650
    assert params == 270906 and exact_costs(model, torch.zeros(1, 3, 32, 32), ["params"]) == {"params": params}


def test_paper_scale_networks_run_with_their_sizes():
    vgg = _largest(VggCifarSpace(config=VGG16), "conv")
    convs = 3 * 64 + 64 * 64 + 64 * 128 + 128 * 128 + 128 * 256 + 2 * 256 * 256 + 256 * 512 + 5 * 512 * 512
    assert exact_costs(vgg, torch.zeros(1, 3, 32, 32), ["params"])["params"] == 9 * convs + 512 * 10 + 10
    mobilenet = _largest(MobileNetV2CifarSpace(stem=32, stages=MOBILENETV2_STAGES, expansions=(6,), last_channels=1280),
                         None)
    assert mobilenet.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    ds_cnn = _largest(DsCnnSpace(width=64, max_depth=4), None)
    # stem 64·10·4, four blocks of a 3×3 depthwise (64·9) and a pointwise (64·64), classifier 64·12 + 12
    assert exact_costs(ds_cnn, torch.zeros(1, 1, 49, 10), ["params"])["params"] == 2560 + 4 * (576 + 4096) + 780
    edsr = _largest(EdsrSpace(scale=4, widths=(64,), max_depth=16), None)
    assert edsr.eval()(torch.zeros(1, 3, 12, 12)).shape == (1, 3, 48, 48)
