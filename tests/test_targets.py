"""Hardware targets: one definition gives the exact cost, the NNI expression and the expected cost."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from nni_udc.evaluators import CostProfiler, LayerSpec, model_specs, total
from nni_udc.evaluators.npu import encoded_layer_bytes, npu_encoded_size
from nni_udc.evaluators.npu_calibration import Shape, sample_weights
from nni_udc.evaluators.targets import TargetError, load_target, target_names
from nni_udc.nn import QuantConv2d, QuantLinear
from nni_udc.spaces import DigitsSpace
from nni_udc.strategies import UDC, ExpectedCost

X = torch.zeros(1, 1, 8, 8)


def test_shipped_targets():
    assert set(target_names()) == {"ethos-u55", "ethos-u65", "generic", "mpic"}
    mpic = load_target("mpic")
    assert mpic.optimise == "energy_uj" and mpic.units["latency_ms"] == "ms" and "PLiNIO" in mpic.sources["cycles"]


@pytest.mark.parametrize("name", ["generic", "mpic", "ethos-u55", "ethos-u65"])
def test_exact_equals_expression_equals_expected_at_one_hot(name):
    target = load_target(name)
    torch.manual_seed(0)
    space = DigitsSpace(head_bits=(0, 4, 8))
    rng = random.Random(0)
    for cost_name, fn in target.costs.items():
        expression = CostProfiler(space, X, fn).expression
        expected = ExpectedCost(expression)
        for _ in range(2 if name.startswith("ethos") else 4):
            sample = {label: rng.choice(c.values) for label, c in space.simplify().items()}
            if not (sample["head_g0"] or sample["head_g1"]):
                continue
            value = float(total(model_specs(space.freeze(sample), X), fn))  # the formula (exact_costs may measure)
            assert float(expression.freeze(sample)) == pytest.approx(value, rel=1e-9), (cost_name, sample)
            assert float(expected(ExpectedCost.one_hot(sample, expected.labels))) == pytest.approx(value, rel=1e-9)


def test_mpic_cycles_follow_the_table():
    cycles = load_target("mpic").costs["cycles"]
    fc = LayerSpec("fc", "linear", 100, 10, weight_bits=4, act_bits=8)
    # 100 MACs and one bias addition per output channel, as PLiNIO's MPIC model counts them
    assert cycles(fc) == pytest.approx(10 * 101 / 2.3, rel=1e-5)
    # 3 bits use the 4-bit entry, 16/32 bits the 8-bit one; a removed channel costs nothing
    assert cycles(LayerSpec("fc", "linear", 100, 10, weight_bits=3, act_bits=8)) == pytest.approx(cycles(fc))
    assert cycles(LayerSpec("fc", "linear", 100, 1, weight_bits=32, act_bits=32)) == pytest.approx(101 / 2.1, rel=1e-5)
    per_channel = LayerSpec("fc", "linear", 100, 3, weight_bits=(0, 2, 8), act_bits=2)
    assert cycles(per_channel) == pytest.approx(101 / 6.5 + 101 / 2.2, rel=1e-5)
    depthwise = LayerSpec("dw", "conv", 16, 16, (3, 3), groups=16, positions=64, weight_bits=8, act_bits=8)
    assert cycles(depthwise) == pytest.approx(64 * 16 * (9 + 1) / 2.1, rel=1e-5)  # the bias: 10 % of a 3x3 depthwise
    energy = load_target("mpic").costs["energy_uj"]
    assert energy(fc) == pytest.approx(cycles(fc) / 250e6 * 5.3825e-3 * 1e6, rel=1e-3)


def test_unknown_target_lists_the_known_ones():
    with pytest.raises(TargetError, match="unknown hardware target 'ethos-u99'; known targets: .*generic.*mpic"):
        load_target("ethos-u99")
    with pytest.raises(TargetError, match="does not exist"):
        load_target("/nowhere/target.yaml")


GOOD = """
name: mine
optimise: cycles
costs:
  cycles: {kind: mac_lut, unit: cycles, cycles_per_mac: {8: {8: 0.5}}}
"""


@pytest.mark.parametrize("text, match", [
    ("name: [unclosed", "not valid YAML"),
    ("- a list", "must be a mapping"),
    (GOOD.replace("name: mine", ""), "missing field 'name'"),
    (GOOD.replace("optimise: cycles", "optimise: joules"), r"field 'optimise' must be one of the costs \['cycles'\], but got 'joules'"),
    (GOOD.replace("kind: mac_lut", "kind: magic"),
     r"costs.cycles: field 'kind' must be one of \['builtin', 'latency_table', 'mac_lut', 'npu_weights'\], but got 'magic'"),
    (GOOD.replace("{8: {8: 0.5}}", "{8: {eight: 0.5}}"), r"cycles_per_mac\[8\]: keys must be bit-widths .* got 'eight'"),
    (GOOD.replace("{8: {8: 0.5}}", "{8: {8: -1}}"), r"cycles_per_mac\[8\]\[8\] must be a number >= 0, but got -1"),
    (GOOD.replace("unit: cycles,", "unit: cycles, scale: 0,"), "field 'scale' must be a positive number, but got 0"),
    (GOOD.replace("kind: mac_lut, unit: cycles, cycles_per_mac: {8: {8: 0.5}}", "kind: builtin, cost: joules"),
     r"field 'cost' must be one of \['bitops', 'macs', 'memory_bits', 'params'\], but got 'joules'"),
    ("name: x\noptimise: a\ncosts: {}", "must define at least one cost"),
    ("name: x\noptimise: a\ncosts: {a: {kind: npu_weights, coefficients: {pointwise: {2: []}}}}",
     r"costs.a.coefficients: field 'density_knots' must be an increasing list"),
    ("name: x\noptimise: a\ncosts: {a: {kind: npu_weights, accelerator: ethos-u99}}",
     r"costs.a: field 'accelerator' must be one of \['ethos-u55', 'ethos-u65'\]"),
    (GOOD.replace("cycles_per_mac: {8: {8: 0.5}}", "cycles_per_mac: {8: {8: 0.5}}, bias_additions: 1"),
     "field 'bias_additions' must be true or false, but got 1"),
])
def test_malformed_target_files_name_the_file_and_field(tmp_path, text, match):
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    with pytest.raises(TargetError, match=match) as error:
        load_target(str(path))
    assert str(path) in str(error.value)


def test_user_target_file_by_path_drives_udc(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(GOOD)
    strategy = UDC(hardware=str(path))
    assert strategy.cost_name == "cycles"
    assert set(strategy.report_costs) == {"params", "macs", "bitops", "memory_bits", "cycles"}
    strategy.prepare_cost(DigitsSpace(), X)
    assert strategy._reference_costs["cycles"] == pytest.approx(strategy._reference_costs["macs"] * 0.5)


def test_arm_encoder_ground_truth():
    rng = np.random.default_rng(0)
    shape = Shape("x", "conv", 64, 64, (3, 3))
    dense8 = encoded_layer_bytes(sample_weights(shape, 8, 1.0, rng))
    sparse4 = encoded_layer_bytes(sample_weights(shape, 4, 0.1, rng))
    assert 0.8 < dense8 / 36864 < 1.0  # 8-bit dense barely compresses (640 of it are biases and scales)
    assert sparse4 / 36864 < 0.15       # 4-bit at 90 % zeros compresses ~10x
    model = torch.nn.Sequential(QuantConv2d(1, 16, 3, weight_bits=[8] * 8 + [0] * 8), QuantLinear(16, 10, weight_bits=2))
    half = QuantConv2d(1, 8, 3, weight_bits=8)
    with torch.no_grad():
        half.weight.copy_(model[0].weight[:8])
    sizes = npu_encoded_size(model)
    assert set(sizes) == {"0", "1"} and 112 < sizes["1"] < 112 + 160  # 10 channels' biases and scales: 112 B
    assert sizes["0"] == npu_encoded_size(torch.nn.Sequential(half))["0"]  # removed channels are not stored


def test_ethos_u_model_of_a_found_model_tracks_the_encoder():
    cost = load_target("ethos-u55").cost()
    torch.manual_seed(0)
    space = DigitsSpace(stem_bits=None)  # the first release's float stem: the samples below are of that space
    for sample in ({"width": 24, "op": "conv", "b_block": 8, "s_block": 0.0, "rank": 8, "s_dass": 0.5, "b_down": 8,
                    "s_down": 0.0, "head_g0": 8, "head_g1": 8},
                   {"width": 16, "op": "conv", "b_block": 4, "s_block": 0.5, "rank": 8, "s_dass": 0.5, "b_down": 2,
                    "s_down": 0.75, "head_g0": 4, "head_g1": 8}):
        model = space.freeze(sample)
        modelled = float(total(model_specs(model, X), cost))
        true = sum(npu_encoded_size(model).values())
        assert abs(modelled - true) / true < 0.15, (modelled, true)


def test_npu_size_command_reports_the_encoder_bytes(tmp_path, capsys):
    from nni_udc.cli import main

    torch.manual_seed(0)
    model = torch.nn.Sequential(QuantConv2d(1, 16, 3, weight_bits=4, sparsity=0.5), QuantLinear(16, 10, weight_bits=8))
    torch.save(model, tmp_path / "model.pt")
    assert main(["npu-size", str(tmp_path / "model.pt"), "--target", "ethos-u65"]) == 0
    out = capsys.readouterr().out
    assert f"{sum(npu_encoded_size(model, 'ethos-u65').values()):,} B" in out.splitlines()[-1]
    (tmp_path / "junk.pt").write_text("not a model")
    with pytest.raises(SystemExit) as exit_info:
        main(["npu-size", str(tmp_path / "junk.pt")])
    assert exit_info.value.code == 2


def test_npu_size_costs_1d_convs_and_refuses_layers_it_cannot_cost(tmp_path, capsys):
    from nni_udc.cli import main
    from nni_udc.nn import QuantConv1d

    torch.manual_seed(0)
    conv = torch.nn.Conv1d(4, 8, 5)
    sizes = npu_encoded_size(torch.nn.Sequential(conv, QuantConv1d(8, 8, 3, weight_bits=4)))
    assert set(sizes) == {"0", "1"}
    # a 1-D kernel is encoded as a K×1 one: the same bytes as the equal Conv2d (its kernel is (5, 1))
    as_2d = torch.nn.Conv2d(4, 8, (5, 1))
    with torch.no_grad():
        as_2d.weight.copy_(conv.weight[..., None])
    assert sizes["0"] == npu_encoded_size(torch.nn.Sequential(as_2d))["0"]
    torch.save(torch.nn.Sequential(torch.nn.LSTM(4, 4), torch.nn.Linear(4, 2)), tmp_path / "lstm.pt")
    with pytest.raises(SystemExit) as exit_info:
        main(["npu-size", str(tmp_path / "lstm.pt")])
    assert exit_info.value.code == 2
    assert "'0' (LSTM)" in capsys.readouterr().err
