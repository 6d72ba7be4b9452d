"""The Ethos-U weight-size model against Arm's real encoder on held-out layers, per layer family; the frozen-model
cost is the encoder's bytes; the model stays differentiable."""
from __future__ import annotations

import nni
import numpy as np
import pytest
import torch
from ethosu.vela.api import NpuAccelerator, NpuBlockTraversal, npu_encode_bias, npu_encode_weights
from nni.nas.nn.pytorch import ModelSpace

from nni_udc.evaluators import CostProfiler, LayerSpec, exact_costs
from nni_udc.evaluators.exact import cost_source
from nni_udc.evaluators.npu import SCALE_BYTES_PER_CHANNEL, encoded_weight_bytes, npu_encoded_size, vela_traversal
from nni_udc.evaluators.npu_calibration import HELD_OUT_SHAPES, Shape, family_errors, measure, network_shapes, unique
from nni_udc.evaluators.targets import load_target
from nni_udc.nn import MutableQuantConv2d, QuantConv2d, QuantLinear, bits_choice, sparsity_choice
from nni_udc.strategies import ExpectedCost

X = torch.zeros(1, 1, 8, 8)


def _held_out_layers() -> list[Shape]:
    """Small held-out shapes (none of them calibrated the model): the DS-CNN, MobileNetV3-small's layers under
    40,000 weights, and the synthetic held-out ones under 100,000."""
    shapes = network_shapes("ds_cnn") + [s for s in network_shapes("mobilenet_v3_small") if s.out * s.fan_in < 40_000]
    return unique(shapes + [s for s in HELD_OUT_SHAPES if s.out * s.fan_in < 100_000])


@pytest.fixture(scope="module")
def held_out_errors():
    cases = measure(_held_out_layers(), (2, 4, 8), (0.0, 0.5, 0.9), "ethos-u55", seed=11)
    return family_errors(load_target("ethos-u55").cost("npu_weight_bytes"), cases)


@pytest.mark.parametrize("family", ["depthwise", "grouped", "pointwise", "k×k", "linear", "tiny"])
def test_model_error_per_family_on_held_out_layers(held_out_errors, family):
    """Targets of the model: total within 5 % and median layer within 10 % of the encoder (a margin for the few
    cases here: the calibration script measures the whole set)."""
    errors = held_out_errors[family]
    assert errors["cases"] >= 9
    assert abs(errors["total"]) <= 0.07, errors
    assert errors["median"] <= 0.10, errors
    assert errors["spearman"] >= 0.97, errors


def test_model_ranks_held_out_layers_like_the_encoder(held_out_errors):
    assert held_out_errors["all layers"]["spearman"] >= 0.99


def test_vela_traversal_is_the_encoders_cheaper_or_vela_choice():
    """A conv of few input channels is encoded part-kernel-first, as Vela streams it."""
    rng = np.random.default_rng(0)
    weights = rng.integers(-7, 8, size=(16, 3, 3, 4)).astype(np.int8)
    accelerator = NpuAccelerator.Ethos_U55_128
    part_kernel = len(npu_encode_weights(accelerator, weights, (1, 1), 8, 16, False, NpuBlockTraversal.PART_KERNEL_FIRST))
    assert vela_traversal(4, 9) == "part_kernel_first" and encoded_weight_bytes(weights) == part_kernel
    assert vela_traversal(64, 9) == "depth_first" and vela_traversal(64, 1, linear=True) == "depth_first"
    assert vela_traversal(1, 9, depthwise=True) == "depthwise"


def test_bias_and_scale_take_ten_bytes_per_channel_in_the_encoders_format():
    assert len(npu_encode_bias(np.int64(-5), 1 << 30, 12)) == SCALE_BYTES_PER_CHANNEL


def test_frozen_model_cost_is_the_encoders_bytes():
    torch.manual_seed(0)
    model = torch.nn.Sequential(QuantConv2d(1, 16, 3, weight_bits=4, sparsity=0.5),
                                QuantConv2d(16, 16, 3, groups=16, weight_bits=8),
                                torch.nn.Flatten(), QuantLinear(16 * 16, 10, weight_bits=[2] * 6 + [0] * 4))
    cost = load_target("ethos-u55").cost("npu_weight_bytes")
    (reported,) = exact_costs(model, X, [cost]).values()
    assert reported == sum(npu_encoded_size(model, "ethos-u55").values())
    assert cost_source(cost) == "Arm's Ethos-U encoder (ethos-u-vela, ethos-u55)"
    assert cost_source("memory_bits") == "formula"
    u65 = load_target("ethos-u65").cost("npu_weight_bytes")
    assert exact_costs(model, X, [u65])["npu_weight_bytes"] == sum(npu_encoded_size(model, "ethos-u65").values())


@pytest.mark.slow
def test_a_search_reports_the_encoders_bytes_of_its_fine_tuned_model(tmp_path):
    """report.json and the front show, for an Ethos-U cost, the encoder's count on the model as fine-tuned."""
    from nni.nas.experiment import NasExperiment, NasExperimentConfig

    from nni_udc.evaluators.lightning import classification_evaluator
    from nni_udc.spaces import DigitsSpace
    from nni_udc.strategies import UDC

    torch.manual_seed(0)
    strategy = UDC(hardware="ethos-u55", target=0.3, seed=0, finetune_epochs=1)
    config = NasExperimentConfig("sequential", "raw")
    config.experiment_working_directory = str(tmp_path)
    space = DigitsSpace(widths=[8], weight_bits=[4, 8], sparsity=[0.0, 0.5], head_bits=[8], stem_bits=[8])
    NasExperiment(space, classification_evaluator("digits", epochs=1), strategy, config).run(debug=False)
    before = strategy.export_result().costs["npu_weight_bytes"]
    strategy.finetune()
    model = strategy.result.model
    assert strategy.result.costs["npu_weight_bytes"] == sum(npu_encoded_size(model, "ethos-u55").values())
    assert before > 0  # measured on the supernet's weights first, then again on the fine-tuned ones


class _TwoLayers(ModelSpace, label_prefix=None):
    def __init__(self):
        super().__init__()
        width = nni.choice("width", [8, 16])
        self.first = MutableQuantConv2d(1, width, 3, weight_bits=bits_choice("b1", [2, 4, 8]),
                                        sparsity=sparsity_choice("s1", [0.0, 0.5]))
        self.second = MutableQuantConv2d(width, 8, 3, weight_bits=bits_choice("b2", [2, 8]))

    def forward(self, x):
        return self.second(self.first(x))


def test_gradients_flow_through_the_model_to_bits_and_sparsity():
    cost = load_target("ethos-u55").cost("npu_weight_bytes")
    expected = ExpectedCost(CostProfiler(_TwoLayers(), X, cost).expression)
    logits = {label: torch.zeros(len(c.values), requires_grad=True) for label, c in expected.labels.items()}
    expected({label: torch.softmax(a, 0) for label, a in logits.items()}).backward()
    for label in ("width", "b1", "s1", "b2"):
        assert logits[label].grad is not None and logits[label].grad.abs().sum() > 0, label
    # and through the formula itself: density and bits as tensors (effective density included)
    density = torch.tensor(0.6, requires_grad=True)
    bits = torch.tensor(4.0)
    value = cost(LayerSpec("c", "conv", 32, 32, (3, 3), weight_bits=bits, density=density))
    value.backward()
    assert density.grad is not None and density.grad > 0


def test_two_bit_rounding_leaves_fewer_weights_than_nominal():
    model = load_target("ethos-u55").cost("npu_weight_bytes").model
    assert float(model.effective_density(2, 1.0, 576)) < 0.3       # most 2-bit weights round to zero
    assert float(model.effective_density(8, 1.0, 576)) > 0.95
    assert float(model.effective_density(8, 0.25, 576)) == pytest.approx(0.25, abs=0.01)  # pruning decides at 8 bits


def test_depthwise_layers_are_costed_as_depthwise():
    cost = load_target("ethos-u55").cost("npu_weight_bytes")
    depthwise = float(cost(LayerSpec("dw", "conv", 64, 64, (3, 3), groups=64, weight_bits=8)))
    rng = np.random.default_rng(3)
    from nni_udc.evaluators.npu import encoded_layer_bytes
    from nni_udc.evaluators.npu_calibration import sample_weights

    shape = Shape("x", "conv", 64, 64, (3, 3), 64)
    truth = np.mean([encoded_layer_bytes(sample_weights(shape, 8, 1.0, rng), depthwise=True) for _ in range(5)])
    assert abs(depthwise / truth - 1) < 0.05, (depthwise, truth)


def test_a_layer_whose_inputs_are_all_removed_upstream_costs_no_weight_bytes():
    """mobilenetv2-cifar's classifier takes `in_channel_bits` from the last conv: with every group of it at 0 bits
    the classifier has no inputs. The model divided by its zero stored weights per channel and the whole space
    could not be costed for Ethos-U."""
    from nni.mutable import MutableList

    from nni_udc.nn import MutableQuantLinear, channel_bits_choice

    class Net(ModelSpace, label_prefix=None):
        def __init__(self):
            super().__init__()
            kept = channel_bits_choice("last", 16, [0, 8], group_size=8)
            assert isinstance(kept, MutableList)
            self.last = MutableQuantConv2d(4, 16, 1, weight_bits=kept)
            self.head = MutableQuantLinear(16, 10, weight_bits=8, in_channel_bits=kept)

        def forward(self, x):
            return self.head(self.last(x).mean((2, 3)))

    cost = load_target("ethos-u55").cost()
    expression = CostProfiler(Net(), torch.zeros(1, 4, 4, 4), cost).expression
    removed = expression.freeze({"last_g0": 0, "last_g1": 0})
    half = expression.freeze({"last_g0": 8, "last_g1": 0})
    assert np.isfinite(removed) and 0 < removed < half
