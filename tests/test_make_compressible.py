"""make_compressible: any model becomes a model space of compressible layers that keeps the model's weights."""
from __future__ import annotations

import logging
import warnings

import pytest
import torch
import torchvision
from nni.nas.nn.pytorch import LayerChoice
from searches import udc_search_one_epoch
from torch import nn

import nni_udc
from nni_udc.compressible import CompressionPolicy, make_compressible
from nni_udc.evaluators import CostProfiler, exact_costs, model_specs
from nni_udc.nn import MutableQuantConv1d, MutableQuantConv2d, MutableQuantLinear

warnings.filterwarnings("ignore")
logging.getLogger("nni").setLevel(logging.ERROR)


class Net(nn.Module):
    """A user's model: conv-bn-relu, a depthwise conv, a 1×1 conv, a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pw = nn.Conv2d(8, 16, 1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.stem(x)))
        x = torch.relu(self.pw(self.dw(x)))
        return self.fc(x.mean((2, 3)))


X = torch.randn(2, 3, 8, 8)


def _net() -> Net:
    torch.manual_seed(0)
    return Net().eval()


def test_every_conv_and_linear_is_converted_with_one_label_per_layer_and_the_ends_fixed():
    space = make_compressible(_net(), weight_bits=[4, 8], sparsity=[0.0, 0.5])
    assert space.converted == ["stem", "dw", "pw", "fc"]
    assert [type(space.model.get_submodule(p)) for p in space.converted] == \
        [MutableQuantConv2d, MutableQuantConv2d, MutableQuantConv2d, MutableQuantLinear]
    assert sorted(space.simplify()) == ["bits_dw", "bits_pw", "sparsity_dw", "sparsity_pw"]
    assert space.model.stem.weight_bits == 8 and space.model.fc.weight_bits == 8
    assert nni_udc.make_compressible is make_compressible


def test_shared_labels_skips_and_no_fixed_ends():
    policy = CompressionPolicy(ends_bits=None, skip=("p*", nn.Linear), shared=True)
    space = make_compressible(_net(), weight_bits=[2, 4], act_bits=[4, 8], policy=policy)
    assert space.converted == ["stem", "dw"]
    assert type(space.model.pw) is nn.Conv2d and type(space.model.fc) is nn.Linear
    assert sorted(space.simplify()) == ["act_bits", "bits"]


def test_frozen_model_keeps_the_weights_and_computes_the_original_at_float_bits():
    net = _net()
    space = make_compressible(net, weight_bits=[4, 32], policy=CompressionPolicy(ends_bits=32))
    frozen = space.freeze({"bits_dw": 32, "bits_pw": 32}).eval()
    torch.testing.assert_close(frozen(X), net(X))
    low = space.freeze({"bits_dw": 4, "bits_pw": 4})
    assert torch.equal(low.model.dw.weight, net.dw.weight) and low.model.dw.weight_bits == 4
    assert torch.equal(low.model.bn.running_var, net.bn.running_var)
    # the user's model is not changed
    assert type(net.dw) is nn.Conv2d


def test_low_rank_candidates_are_the_svd_of_the_weights():
    net = _net()
    space = make_compressible(net, weight_bits=[32], rank=[4, 8], policy=CompressionPolicy(ends_bits=32))
    assert isinstance(space.model.pw, LayerChoice) and not isinstance(space.model.dw, LayerChoice)  # depthwise: none
    assert sorted(space.simplify()) == ["op_pw", "rank_pw"]
    full = space.freeze({"op_pw": "lowrank", "rank_pw": 8}).eval()  # rank 8 = full rank of an 8 → 16 1×1 conv
    assert type(full.model.pw).__name__ == "LowRankConv2d"
    torch.testing.assert_close(full(X), net(X), atol=1e-4, rtol=1e-4)


def test_costs_equal_hand_computed_ones():
    space = make_compressible(_net(), weight_bits=[4, 8], sparsity=[0.0, 0.5])
    sample = {"bits_dw": 4, "bits_pw": 8, "sparsity_dw": 0.5, "sparsity_pw": 0.0}
    frozen = space.freeze(sample)
    specs = {s.name: s for s in model_specs(frozen, X)}
    # stem: 3·8·9 = 216 weights at 8 bits, no bias; dw: 8·9 = 72 weights at 4 bits, half pruned, 8 bias;
    # pw: 8·16 = 128 weights at 8 bits, 16 bias; fc: 160 weights at 8 bits, 10 bias. Biases are 32-bit.
    # dw is stored sparse: its 36 kept weights at 4 bits and a 72-bit bitmap (216 < 288 dense bits).
    # Every channel of these quantised layers stores a 16-bit scale: 8 + 8 + 16 + 10 of them. The stem has no bias,
    # but the BatchNorm after it is folded into it on export, which gives it a bias: 8 more 32-bit biases.
    assert specs["model.dw"].groups == 8 and specs["model.dw"].positions == 64
    assert specs["model.stem"].batchnorm and not specs["model.stem"].bias
    memory = (216 * 8 + 8 * 32 + (36 * 4 + 72) + 8 * 32 + 128 * 8 + 16 * 32 + 160 * 8 + 10 * 32
              + (8 + 8 + 16 + 10) * 16)
    macs = 216 * 64 + 72 * 64 + 128 * 64 + 160
    costs = exact_costs(frozen, X)
    assert costs["macs"] == macs
    assert costs["memory_bits"] == memory
    assert CostProfiler(space, X, "memory_bits").profile(sample) == pytest.approx(costs["memory_bits"])
    assert CostProfiler(space, X, "macs").profile(sample) == macs


def test_conv1d_and_linear_models_convert():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv1d(1, 4, 5), nn.ReLU(), nn.Conv1d(4, 4, 3), nn.Flatten(), nn.Linear(4 * 34, 10))
    space = make_compressible(net, weight_bits=[4, 8])
    assert type(space.model[2]) is MutableQuantConv1d and sorted(space.simplify()) == ["bits_2"]
    x = torch.randn(2, 1, 40)
    assert space.freeze({"bits_2": 8})(x).shape == (2, 10)


def test_unsupported_layers_are_named():
    class MyConv(nn.Conv2d):
        pass

    with pytest.raises(TypeError, match=r"'1' is a MyConv, a subclass of Conv2d"):
        make_compressible(nn.Sequential(nn.Conv2d(1, 2, 3), MyConv(2, 2, 3)))
    make_compressible(nn.Sequential(nn.Conv2d(1, 2, 3), MyConv(2, 2, 3)), policy=CompressionPolicy(skip=(MyConv,)))
    with pytest.raises(TypeError, match=r"'0' \(LSTM\)"):
        make_compressible(nn.Sequential(nn.LSTM(4, 4), nn.Linear(4, 2)))
    with pytest.raises(ValueError, match=r"allowed only per output channel"):
        make_compressible(_net(), weight_bits=[0, 4])
    with pytest.raises(ValueError, match=r"weight_bits candidate must be one of"):
        make_compressible(_net(), weight_bits=[4, 9])
    with pytest.raises(ValueError, match=r"skip must be a tuple"):
        CompressionPolicy(skip="fc")


def test_per_channel_bits_remove_channels():
    space = make_compressible(_net(), weight_bits=[0, 8], per_channel=8)
    assert sorted(space.simplify()) == ["bits_dw_g0", "bits_pw_g0", "bits_pw_g1"]
    frozen = space.freeze({"bits_dw_g0": 8, "bits_pw_g0": 0, "bits_pw_g1": 8})
    assert frozen.model.pw.weight_bits == [0] * 8 + [8] * 8


# ----- torchvision ---------------------------------------------------------------------------------------

def _mobilenet() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.mobilenet_v3_small(weights=None, num_classes=10)


def test_mobilenet_v3_small_converts_and_costs_agree():
    net = _mobilenet()
    layers = sum(type(m) in (nn.Conv2d, nn.Linear) for m in net.modules())
    space = make_compressible(net, weight_bits=[4, 8])
    assert len(space.converted) == layers == 54
    assert len(space.simplify()) == layers - 2
    x = torch.randn(1, 3, 32, 32)  # one sample: costs are profiled in eval mode, BatchNorm is happy
    for value in (4, 8):
        sample = {label: value for label in space.simplify()}
        exact = exact_costs(space.freeze(sample), x)
        for cost in ("memory_bits", "macs"):
            assert CostProfiler(space, x, cost).profile(sample) == pytest.approx(exact[cost])


@pytest.mark.slow
def test_udc_search_on_mobilenet_exports_a_model_within_target(tmp_path):
    space = make_compressible(_mobilenet(), weight_bits=[2, 4, 8])
    model, strategy = udc_search_one_epoch(space, (3, 32, 32), 0.5, tmp_path)
    result = strategy.result
    assert result.costs["memory_bits"] <= 0.5 * result.reference_costs["memory_bits"]
    assert exact_costs(model, torch.zeros(1, 3, 32, 32), ["memory_bits"]) == {"memory_bits": result.costs["memory_bits"]}
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


# ----- the forward code such models use: the profiler sees through it, or names what it cannot ---------------

class _Block(nn.Module):
    def __init__(self, op: object) -> None:
        super().__init__()
        self.c, self.op, self.c2, self.fc = nn.Conv2d(3, 4, 3, padding=1), op, nn.Conv2d(4, 4, 3, padding=1), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.op(self.c(x))  # type: ignore[operator]
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.c2(x), 1), 1))


def _residual(x: torch.Tensor) -> torch.Tensor:
    y = x.clone()
    y += x
    return y


F_ = nn.functional
OPS = {
    "F.relu6": F_.relu6, "F.hardswish": F_.hardswish, "F.hardsigmoid": F_.hardsigmoid, "F.silu": F_.silu,
    "nn.ReLU6": nn.ReLU6(), "nn.Hardswish": nn.Hardswish(), "nn.Hardsigmoid": nn.Hardsigmoid(), "nn.SiLU": nn.SiLU(),
    "x += y": _residual, "x + y": lambda x: x + x,
    "squeeze-excite": lambda x: x * F_.hardsigmoid(F_.adaptive_avg_pool2d(x, 1)),
    "unsqueeze": lambda x: x.mean(3).unsqueeze(3).expand_as(x), "None index": lambda x: x.mean((2, 3))[:, :, None, None] * x,
    "view": lambda x: x.view(x.size(0), 4, 8, 8), "cat": lambda x: torch.cat([x, x], 1)[:, :4],
}


@pytest.mark.parametrize("op", sorted(OPS))
def test_profiler_understands_common_forward_code(op):
    space = make_compressible(_Block(OPS[op]), weight_bits=[4, 8])
    # 3·4·9 and 4·4·9 weights at 64 positions, a 4 → 2 classifier
    assert CostProfiler(space, torch.randn(1, 3, 8, 8), "macs").profile({"bits_c2": 4}) == 108 * 64 + 144 * 64 + 8


def test_profiler_names_the_operation_it_cannot_trace():
    space = make_compressible(_Block(lambda x: torch.roll(x, 1, 2)), weight_bits=[4, 8])
    with pytest.raises(TypeError, match=r"cannot infer shapes through aten\.roll"):
        CostProfiler(space, torch.randn(1, 3, 8, 8), "macs")


@pytest.mark.parametrize("name, layers", [("resnet18", 21), ("mobilenet_v2", 53), ("efficientnet_b0", 82),
                                          ("regnet_x_400mf", 72)])
def test_torchvision_models_convert_and_their_costs_agree(name, layers):
    """The other torchvision models of issue 11 (built with weights=None: nothing downloads), at 32x32."""
    net = getattr(torchvision.models, name)(weights=None, num_classes=10)
    assert sum(type(m) in (nn.Conv2d, nn.Linear) for m in net.modules()) == layers
    space = make_compressible(net, weight_bits=[4, 8], sparsity=[0.0, 0.5])
    assert len(space.converted) == layers
    x = torch.randn(1, 3, 32, 32)
    for bits, sparsity in ((4, 0.5), (8, 0.0)):
        sample = {label: (bits if label.startswith("bits") else sparsity) for label in space.simplify()}
        exact = exact_costs(space.freeze(sample), x)
        for cost in ("memory_bits", "macs"):
            assert CostProfiler(space, x, cost).profile(sample) == pytest.approx(exact[cost])


# ----- the experiment file's form: space: {model: ..., args: ..., compress: ...} -----------------------------------

NET = """
from torch import nn


def build(num_classes=10, in_channels=1):
    return nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes))
"""


def _own_model_file(tmp_path, monkeypatch, space: str) -> str:
    (tmp_path / "my_net.py").write_text(NET)
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / "own.yaml"
    path.write_text(f"name: own\nspace: {space}\ntraining: {{epochs: 1, finetune_epochs: 1}}\n"
                    f"search: {{target: 0.3}}\noutput: {tmp_path / 'run'}\n")
    return str(path)


def test_an_experiment_file_makes_your_own_network_searchable(tmp_path, monkeypatch):
    from nni_udc.config import load_config
    from nni_udc.experiment import _space, check_space

    path = _own_model_file(tmp_path, monkeypatch, "{model: 'my_net:build', args: {num_classes: 10}, "
                                                  "compress: {weight_bits: [2, 4], policy: {ends_bits: null}}}")
    config = load_config(path)
    check_space(config)  # builds it and runs it once on digits' (1, 8, 8) inputs
    space = _space(config, (1, 8, 8))
    assert sorted(space.simplify()) == ["bits_0", "bits_3", "bits_7"]  # ends_bits: null searches the ends too
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("space, message", [
    ("{name: digits, model: 'my_net:build'}", "space.name: .*left out when space.model"),
    ("{model: my_net}", "space.model: .*'package.module:callable'"),
    ("{name: digits, compress: {weight_bits: [4]}}", "space.compress: .*empty unless space.model"),
])
def test_own_network_mistakes_name_the_field(tmp_path, monkeypatch, space, message):
    from nni_udc.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=message):
        load_config(_own_model_file(tmp_path, monkeypatch, space))


@pytest.mark.parametrize("space, message", [
    ("{model: 'my_net:nothing'}", "space.model: cannot import 'my_net:nothing'"),
    ("{model: 'my_net:build', args: {depth: 3}}", r"space.args: my_net:build rejects \{'depth': 3\}"),
    ("{model: 'my_net:build', compress: {weight_bits: [3, 99]}}", "space.compress: make_compressible rejects"),
    ("{model: 'my_net:build', args: {in_channels: 3}}", r"does not run on data set 'digits'.s inputs of shape \(1, 8, 8\)"),
])
def test_own_network_that_does_not_build_or_fit_fails_before_anything_is_written(tmp_path, monkeypatch, space,
                                                                                   message):
    from nni_udc.config import ConfigError, load_config
    from nni_udc.experiment import check_space

    config = load_config(_own_model_file(tmp_path, monkeypatch, space))
    with pytest.raises(ConfigError, match=message):
        check_space(config)
    assert not (tmp_path / "run").exists()


def test_a_network_module_that_fails_while_imported_is_a_config_error(tmp_path, monkeypatch):
    from nni_udc.config import ConfigError, load_config
    from nni_udc.experiment import check_space

    path = _own_model_file(tmp_path, monkeypatch, "{model: 'broken_net:build'}")
    (tmp_path / "broken_net.py").write_text("import torch\nraise RuntimeError('no GPU here')\n")
    with pytest.raises(ConfigError, match=r"space.model: cannot import 'broken_net:build': its module raised "
                                          r"RuntimeError: no GPU here"):
        check_space(load_config(path))


@pytest.mark.parametrize("name, message", [
    ("tests_nowhere:Space", r"cannot import 'tests_nowhere:Space': No module named 'tests_nowhere'"),
    ("nni_udc.spaces:NoSpace", r"cannot import 'nni_udc.spaces:NoSpace': module 'nni_udc.spaces' has no attribute"),
    ("torch.nn:Linear", r"space 'torch.nn:Linear' is not an NNI ModelSpace subclass"),
])
def test_a_space_by_module_and_class_name_that_is_not_one(name, message):
    from nni_udc.spaces import DigitsSpace
    from nni_udc.spaces.registry import resolve_space

    assert resolve_space("nni_udc.spaces:DigitsSpace") == (DigitsSpace, None)
    with pytest.raises(ValueError, match=message):
        resolve_space(name)


@pytest.mark.slow
def test_a_search_of_your_own_network_from_an_experiment_file(tmp_path, monkeypatch):
    from nni_udc.config import load_config
    from nni_udc.experiment import run_search

    path = _own_model_file(tmp_path, monkeypatch, "{model: 'my_net:build', compress: {weight_bits: [2, 4, 8], "
                                                  "sparsity: [0.0, 0.5]}}")
    outcome = run_search(load_config(path), progress=False, logger=False)
    assert outcome.relative_cost <= 0.3
    assert set(outcome.sample) == {"bits_3", "sparsity_3"}  # first and last layers stay at 8 bits


class _OneOp(nn.Module):
    """conv → the operation under test → 1×1 conv → mean → linear."""

    def __init__(self, op):
        super().__init__()
        self.first, self.point, self.head, self.op = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 1), nn.Linear(8, 4), op

    def forward(self, x):
        return self.head(self.point(self.op(self.first(x))).mean((2, 3)))


@pytest.mark.parametrize("name", ["hardswish", "hardsigmoid", "relu6", "silu", "none_index", "view_reshape",
                                  "flatten", "cat", "squeeze_excite", "residual"])
def test_the_profiler_follows_the_forward_code_of_edge_networks(name):
    import torch.nn.functional as F

    op = {"hardswish": F.hardswish, "hardsigmoid": nn.Hardsigmoid(), "relu6": F.relu6, "silu": nn.SiLU(),
          "none_index": lambda y: y[:, :, None].squeeze(2), "view_reshape": lambda y: y.view(y.shape).reshape(y.shape),
          "flatten": lambda y: torch.flatten(y, 2).view(y.shape), "cat": lambda y: torch.cat([y[:, :4], y[:, 4:]], 1),
          "squeeze_excite": lambda y: y * torch.sigmoid(F.adaptive_avg_pool2d(y, 1)),
          "residual": lambda y: y + F.relu(y)}[name]
    space = make_compressible(_OneOp(op), weight_bits=[4, 8])
    x = torch.randn(1, 3, 16, 16)
    for bits in (4, 8):
        sample = {label: bits for label in space.simplify()}
        assert CostProfiler(space, x, "memory_bits").profile(sample) == exact_costs(space.freeze(sample), x)["memory_bits"]


@pytest.mark.slow
def test_the_own_model_example_runs_start_to_finish_within_its_budget(tmp_path, capsys):
    """examples/own_model.py (the README's "Bring your own model"), on the smallest budget."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "examples" / "own_model.py"
    spec = importlib.util.spec_from_file_location("own_model_example", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    example.main(["--epochs", "1", "--finetune-epochs", "1", "--target", "0.1", "--out", str(tmp_path)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "mobilenet_v3_small: 54 layers made compressible, 104 choices"
    memory = next(line.split() for line in lines if line.startswith("memory_bits"))
    float_bits, found_bits = (float(v.replace(",", "")) for v in memory[1:3])
    assert found_bits <= 0.1 * float_bits
