"""The baked torch model (nni_udc.export.bake, torch_files, api, cli export): same predictions as the searched model,
plain torch only, removed channels physically removed, files that load with torch alone."""
from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import pytest
import torch
import torchvision
from spaces import CHANNEL_GROUPS, EveryModule, keeps_a_channel, random_samples
from torch import nn

from nni_udc import make_compressible
from nni_udc.data import load_dataset
from nni_udc.evaluators.training import train_classifier
from nni_udc.export import BakeError, bake, integer_layers
from nni_udc.export.api import export
from nni_udc.export.torch_files import save_torch
from nni_udc.nn import ActivationQuantizer
from nni_udc.spaces import DigitsSpace

SPLITS = load_dataset("digits", seed=0)
TEST_X = SPLITS.test.tensors[0]

# op, head bits: every block operator, a head with a removed group of class logits and one without
DIGITS_CASES = [("conv", (0, 8)), ("lowrank", (4, 0)), ("sparse", (8, 4))]


def digits_model(op: str, head: tuple[int, int], seed: int) -> nn.Module:
    """A random architecture of the digits space (head bits may be 0), trained one epoch (clips and statistics set)."""
    space = DigitsSpace(head_bits=(0, 4, 8))
    (sample,) = random_samples(space, 1, seed=seed)
    sample.update(op=op, head_g0=head[0], head_g1=head[1])
    torch.manual_seed(seed)
    model = space.freeze(sample)
    train_classifier(model, SPLITS, epochs=1, seed=seed)
    return model.eval()


@pytest.fixture(scope="module")
def digits_models() -> list[nn.Module]:
    return [digits_model(op, head, seed) for seed, (op, head) in enumerate(DIGITS_CASES)]


def agreement(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    return float((a.argmax(1) == b.argmax(1)).float().mean()), float((a - b).abs().max())


def calibrated(model: nn.Module, clip: float = 2.0) -> nn.Module:
    """Every activation clip set as training would set it (for spaces that are not trained here)."""
    for m in model.modules():
        if isinstance(m, ActivationQuantizer):
            with torch.no_grad():
                m.log_clip.fill_(math.log(clip))
                m.initialized.fill_(True)
    return model.eval()


@torch.no_grad()
def test_baked_digits_models_predict_as_the_searched_models(digits_models):
    for model in digits_models:
        searched = model(TEST_X)
        exact = bake(model, TEST_X[:4], scale_bits=32)  # float32 scales: the searched weights themselves
        assert agreement(exact.module(TEST_X), searched)[0] == 1.0
        assert agreement(exact.module(TEST_X), searched)[1] < 5e-3  # BatchNorm folding reorders float arithmetic
        stored = bake(model, TEST_X[:4])  # scales rounded to fp16, as the packed file stores them
        agree, diff = agreement(stored.module(TEST_X), searched)
        assert agree >= 0.99 and diff < 0.05, (agree, diff)
        modules = {type(m).__module__.split(".")[0] for m in stored.module.modules()}
        assert modules == {"torch"}, modules


@torch.no_grad()
def test_baked_weights_are_the_integer_form_and_removed_logits_output_nothing(digits_models):
    model = digits_models[0]  # head_g0 = 0: logits 0..4 removed, the model's output: kept as zeros
    baked = bake(model, TEST_X[:4])
    head = integer_layers(model)["head"]
    assert torch.equal(baked.module.head.weight, head.dequantize())  # no BatchNorm after the head: no folding
    assert not baked.module.head.bias[:5].any() and model.head.bias[:5].any()  # the searched layer outputs 0 there too
    assert not model(TEST_X[:4])[:, :5].any()
    entry = baked.record["layers"]["head"]["tensors"]["head"]
    assert entry["removed_channels"] == [0, 1, 2, 3, 4] and entry["kept_channels"] is None
    assert baked.record["layers"]["stem.0"]["folded_batchnorm"] == ["stem.1"]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in baked.module.modules())


@torch.no_grad()
def test_removed_channels_leave_the_tensors_where_the_next_layer_is_unambiguous():
    space = EveryModule()
    (sample,) = random_samples(space, 1, seed=3, keep=keeps_a_channel)
    sample.update({CHANNEL_GROUPS[0]: 0, CHANNEL_GROUPS[1]: 4, "op": "sparse"})
    torch.manual_seed(0)
    model = calibrated(space.freeze(sample))
    x = torch.randn(16, 1, 8, 8)
    baked = bake(model, x[:2], scale_bits=32)
    kept = [c for c in range(8) if sample[CHANNEL_GROUPS[c // 2]] > 0]
    assert baked.module.q2.weight.shape[0] == len(kept) < 8  # q2's removed outputs are gone ...
    assert baked.module.q3.weight.shape[1] == len(kept)  # ... and so are q3's inputs (declared in_channel_bits)
    assert baked.record["layers"]["q2"]["tensors"]["q2"]["kept_channels"] == kept
    assert baked.record["layers"]["q3"]["inputs_kept"] == {"q2": kept}
    assert torch.allclose(baked.module(x), model(x), atol=1e-4)


@pytest.fixture(scope="module")
def mobilenet() -> tuple[nn.Module, torch.Tensor]:
    """torchvision's mobilenet_v3_small made compressible, with 0 bits on 8 channels of classifier.0."""
    torch.manual_seed(0)
    net = torchvision.models.mobilenet_v3_small(weights=None, num_classes=10)
    space = make_compressible(net, weight_bits=[0, 4, 8], per_channel=128, act_bits=8)
    sample = {label: 8 for label in space.simplify()}
    sample.update({label: 4 for label in space.simplify() if label.startswith("bits_features.1")})
    sample["bits_classifier.0_g0"] = 0  # channels 0..127 of classifier.0 (1024 outputs) removed
    model = calibrated(space.freeze(sample), clip=6.0)
    with torch.no_grad():  # torchvision starts linear biases at 0; a trained one is not
        model.model.classifier[0].bias.uniform_(0.2, 1.0)
    x = torch.randn(4, 3, 32, 32)
    return model, x


@torch.no_grad()
def test_a_torchvision_model_bakes_with_its_removed_channels_gone(mobilenet):
    model, x = mobilenet
    baked = bake(model, x[:2], scale_bits=32)
    assert baked.module.get_submodule("model.classifier.0").weight.shape == (1024 - 128, 576)
    assert baked.module.get_submodule("model.classifier.3").weight.shape == (10, 1024 - 128)
    entry = baked.record["layers"]["model.classifier.0"]["tensors"]["model.classifier.0"]
    # the removed channels output 0 (no weights, no bias) and hardswish(0) = 0: nothing to fold downstream
    assert entry["bias_from_removed_inputs"] == []
    agree, diff = agreement(baked.module(x), model(x))
    assert agree == 1.0 and diff < 1e-3, diff
    assert not any(isinstance(m, nn.BatchNorm2d) for m in baked.module.modules())  # every BatchNorm followed a conv


def test_bake_refuses_an_activation_clip_that_was_never_trained():
    model = DigitsSpace().freeze({label: m.default() for label, m in DigitsSpace().simplify().items()})
    with pytest.raises(BakeError, match=r"layer 'block'.*never set by training"):
        bake(model.eval(), torch.zeros(2, 1, 8, 8))


BLOCKED = "import sys; sys.modules['nni'] = None; sys.modules['nni_udc'] = None\n"


def run_without_nni(code: str) -> dict:
    """Run ``code`` in a fresh interpreter in which ``nni`` and ``nni_udc`` cannot be imported; returns its JSON."""
    script = BLOCKED + textwrap.dedent(code)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", [0, pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow),
                                  pytest.param("mobilenet", marks=pytest.mark.slow)])
@torch.no_grad()
def test_saved_files_load_and_predict_with_torch_alone(case, digits_models, mobilenet, tmp_path):
    """Each case ~15 s (torch.export, then a fresh interpreter); the digits cases share one architecture each."""
    model, x = mobilenet if case == "mobilenet" else (digits_models[case], TEST_X)
    for i in [0]:
        baked = bake(model, x[:2])
        files = save_torch(baked, tmp_path / str(i))
        torch.save(x, tmp_path / f"{i}.x.pt")
        expected = baked.module(x)
        torch.save(expected, tmp_path / f"{i}.expected.pt")
        out = run_without_nni(f"""
            import json, torch
            try:
                import nni_udc
                raise SystemExit("nni_udc importable")
            except ImportError:
                pass
            x = torch.load({str(tmp_path / f"{i}.x.pt")!r}, weights_only=True)
            model = torch.export.load({str(files["pt2"])!r}).module()
            y = model(x)
            state = torch.load({str(files["state_dict"])!r}, weights_only=True)
            expected = torch.load({str(tmp_path / f"{i}.expected.pt")!r}, weights_only=True)
            print(json.dumps({{"diff": float((y - expected).abs().max()), "keys": sorted(state),
                              "one": list(model(x[:1]).shape)}}))
        """)
        assert out["diff"] == 0.0 and out["one"] == [1, 10]
        record = json.loads(files["record"].read_text())
        assert sorted(record["state_dict"]) == out["keys"] == sorted(baked.module.state_dict())
        searched_agree, _ = agreement(expected, model(x))
        assert searched_agree >= 0.99


def test_export_command_writes_every_format_and_prints_the_table(digits_models, tmp_path, capsys):
    from nni_udc.cli import main

    torch.save(digits_models[1], tmp_path / "model.pt")  # a model file as nni-udc search writes it
    assert main(["export", str(tmp_path / "model.pt"), "--format", "all", "--input-shape", "1,8,8",
                 "--out", str(tmp_path / "out")]) == 0
    table = capsys.readouterr().out
    for name in ("model.pt2", "model.state_dict.pt", "model.record.json", "model.onnx", "model.nupk"):
        assert (tmp_path / "out" / name).is_file() and name in table
    packed_row = next(line for line in table.splitlines() if line.startswith("packed"))
    assert len(packed_row.split()) == 4  # format, file, bytes, claimed bytes
    files = export(tmp_path / "model.pt", ["torch"], tmp_path / "api", input_shape=(1, 8, 8))
    assert [f.path.name for f in files] == ["model.pt2", "model.state_dict.pt", "model.record.json"]
    with pytest.raises(SystemExit) as exit_info:  # no input shape: nothing beside the file says it
        main(["export", str(tmp_path / "model.pt"), "--out", str(tmp_path / "x")])
    assert exit_info.value.code == 2
    assert "input shape is unknown" in capsys.readouterr().err
    save_torch(bake(digits_models[1], TEST_X[:2]), tmp_path)  # as a search writes beside model.pt: the shape is there
    assert main(["export", str(tmp_path), "--format", "packed"]) == 0  # a run directory, default out: export/
    assert (tmp_path / "export" / "model.nupk").is_file()


@torch.no_grad()
def test_the_packed_file_reads_back_as_the_baked_layers_bit_exactly(digits_models, tmp_path):
    """What ``export --format packed`` writes is the baked model: BatchNorms folded into its scales and biases."""
    from nni_udc.evaluators.exact import exact_costs
    from nni_udc.export.packed import read_packed

    model = digits_models[0]
    baked = bake(model, TEST_X[:4])
    (written,) = export(model, ["packed"], tmp_path, input_shape=(1, 8, 8), baked=baked)
    packed = read_packed(written.path)
    assert packed.layers.keys() == baked.integer.keys() and "stem.0" in packed.layers
    for name, layer in packed.layers.items():
        plain = baked.module.get_submodule(name)
        assert torch.equal(layer.dequantize(), plain.weight), name
        assert torch.equal(layer.bias, plain.bias), name
    assert baked.record["layers"]["stem.0"]["folded_batchnorm"] == ["stem.1"]  # so stem.0's scales are folded ones
    assert packed.payload_bits == exact_costs(model, TEST_X[:1], ["memory_bits"])["memory_bits"]
