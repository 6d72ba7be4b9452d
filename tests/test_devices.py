"""Training follows ``training.accelerator`` / ``devices`` / ``precision`` (issue 14, item 4).

On a machine without a GPU, ``auto`` must train exactly as the CPU did before; a GPU the machine lacks is a
one-line error. ``CUDA_VISIBLE_DEVICES=""`` hides any GPU, so the error case runs on every machine.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from nni_udc.config import ConfigError, parse_config
from nni_udc.data import load_digits_splits
from nni_udc.evaluators.devices import DeviceUnavailable, torch_device
from nni_udc.evaluators.lightning import classification_evaluator
from nni_udc.evaluators.training import train_classifier
from nni_udc.experiment import run_search, training_device
from nni_udc.strategies.finetune import finetune

NNI_UDC = str(Path(sys.executable).parent / "nni-udc")


def test_defaults_are_auto_one_device_and_full_precision():
    t = parse_config({"space": "digits"}, "inline").training
    assert (t.accelerator, t.devices, t.precision) == ("auto", 1, "32-true")


@pytest.mark.parametrize("field, value, allowed", [
    ("accelerator", "tpu9", "one of auto, cpu, cuda, gpu, mps"),
    ("accelerator", 1, "one of auto, cpu, cuda, gpu, mps"),
    ("devices", 0, "an integer >= 1"),
    ("devices", "2", "an integer >= 1"),
    ("precision", 16, "one of 32-true, 16-mixed, bf16-mixed, 64-true"),
    ("precision", "half", "one of 32-true, 16-mixed, bf16-mixed, 64-true"),
])
def test_a_bad_value_names_file_field_value_and_what_is_allowed(field, value, allowed):
    with pytest.raises(ConfigError) as error:
        parse_config({"space": "digits", "training": {field: value}}, "exp.yaml")
    assert str(error.value) == f"exp.yaml: training.{field}: must be {allowed}, but got {value!r}"


def test_auto_is_cuda_when_there_is_one_else_cpu():
    assert torch_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert torch_device("cpu") == torch.device("cpu")
    config = parse_config({"space": "digits"}, "inline")
    assert training_device(config) == torch_device("auto")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error_in_process():
    with pytest.raises(DeviceUnavailable, match=r"needs a CUDA GPU, but torch .* sees none"):
        torch_device("cuda")
    config = parse_config({"space": "digits", "training": {"accelerator": "gpu"}}, "exp.yaml")
    with pytest.raises(ConfigError, match=r"^exp\.yaml: training\.accelerator: accelerator 'gpu' needs a CUDA GPU"):
        training_device(config)


def test_cuda_without_a_gpu_from_the_cli_is_one_line_and_status_2(tmp_path):
    (tmp_path / "exp.yaml").write_text(
        f"name: tiny\nspace: digits\ntraining: {{epochs: 1, finetune_epochs: 0, accelerator: cuda}}\n"
        f"output: {tmp_path / 'out'}\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}  # no GPU, whatever the machine
    done = subprocess.run([NNI_UDC, "search", "exp.yaml"], capture_output=True, text=True, timeout=300, env=env,
                          cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("nni-udc search: error: exp.yaml: training.accelerator: accelerator 'cuda' needs a CUDA GPU")
    assert not (tmp_path / "out" / "report.json").exists()


def _tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))


def test_train_classifier_on_cpu_equals_the_default_here():
    splits = load_digits_splits()
    default, explicit = _tiny_net(), _tiny_net()
    scores = train_classifier(default, splits, epochs=1, seed=3)
    assert train_classifier(explicit, splits, epochs=1, seed=3, device="cpu") == scores
    if not torch.cuda.is_available():  # auto is the CPU here: bit-identical weights
        for a, b in zip(default.parameters(), explicit.parameters()):
            assert torch.equal(a, b)
    assert next(explicit.parameters()).device.type == "cpu"


def test_finetune_runs_with_the_evaluators_precision():
    # 64-true makes Lightning train the module in double precision: the fine-tune took the evaluator's setting
    evaluator = classification_evaluator("digits", epochs=1, accelerator="cpu", precision="64-true")
    model = _tiny_net()
    accuracy = finetune(model, evaluator, epochs=1)
    assert 0.0 <= accuracy <= 1.0
    assert next(model.parameters()).dtype == torch.float64


def test_a_search_with_accelerator_cpu_runs(tmp_path):
    config = parse_config({"space": "digits", "training": {"epochs": 1, "finetune_epochs": 1, "accelerator": "cpu"},
                           "output": str(tmp_path / "out")}, str(tmp_path / "exp.yaml"))
    outcome = run_search(config, target=0.1, logger=False)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["relative_cost"] <= 0.1 and 0.0 < outcome.accuracy <= 1.0
    assert all(p.device.type == "cpu" for p in outcome.model.parameters())


@pytest.mark.slow  # two DDP processes, each importing torch and NNI
def test_two_cpu_processes_search_one_model_with_ddp(tmp_path):
    (tmp_path / "exp.yaml").write_text(
        "name: tiny\nspace: digits\n"
        "training: {epochs: 2, finetune_epochs: 1, accelerator: cpu, devices: 2}\n"
        f"output: {tmp_path / 'out'}\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([NNI_UDC, "search", "exp.yaml"], capture_output=True, text=True, timeout=600, env=env,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    found = [line for line in done.stdout.splitlines() if line.startswith("found:")]
    # Lightning relaunches the command as rank 1 (gloo), which searches in step with rank 0 and reports nothing
    assert len(found) == 1 and done.stdout.count("Searching ") == 1, done.stdout
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert f"val acc {report['accuracy']:.3f}" in found[0]


def test_several_devices_are_refused_for_a_multi_trial_search(tmp_path):
    config = parse_config({"space": "digits", "strategy": {"name": "random"}, "training": {"devices": 2}},
                          "exp.yaml")
    with pytest.raises(ConfigError, match=r"^exp\.yaml: training\.devices: 2 devices \(DDP\) work for the one-shot"):
        run_search(config, output=tmp_path / "out", logger=False)
