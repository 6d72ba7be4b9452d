"""``nni-udc search``: one search from an experiment file, one-shot or NNI multi-trial, and what it writes."""
from __future__ import annotations

import json

import pytest
import torch

from nni_udc.cli import main
from nni_udc.config import load_config
from nni_udc.data.traced import BundledSplit
from nni_udc.evaluators import exact_costs
from nni_udc.evaluators.training import accuracy

X = torch.zeros(1, 1, 8, 8)


def _write(tmp_path, strategy: str, extra: str = "") -> str:
    path = tmp_path / "exp.yaml"
    path.write_text(f"""\
name: tiny
space: digits
training: {{epochs: 1, finetune_epochs: 1}}
strategy: {strategy}
search: {{target: 0.1}}
output: {tmp_path / 'out'}
{extra}""")
    return str(path)


@pytest.mark.slow  # a real NNI experiment
def test_one_shot_search_writes_model_architecture_report_and_logs(tmp_path, capsys):
    path = _write(tmp_path, "{name: udc, arc_learning_rate: 0.05}")
    assert main(["search", path, "--target", "0.08"]) == 0
    out = tmp_path / "out"
    model = torch.load(out / "model.pt", weights_only=False)
    report = json.loads((out / "report.json").read_text())
    assert json.loads((out / "architecture.json").read_text()) == report["sample"]
    # the saved model is the compressed one whose exact cost the report states, within the target
    assert exact_costs(model, X, ["memory_bits"])["memory_bits"] == report["costs"]["memory_bits"]
    assert report["relative_cost"] <= 0.08 and report["target"] == 0.08
    # the accuracies reported are the saved model's, on the validation and the test split
    assert report["accuracy"] == accuracy(model, BundledSplit("digits", "val"))
    assert report["test_accuracy"] == accuracy(model, BundledSplit("digits", "test"))
    assert list((out / "tensorboard").glob("events.out.tfevents.*")), "no TensorBoard log"
    assert "found: val acc" in capsys.readouterr().out


@pytest.mark.slow  # a real NNI experiment
def test_the_report_records_the_budget_read_from_the_file(tmp_path):
    path = _write(tmp_path, "{name: udc, arc_learning_rate: 0.05}")
    assert main(["search", path]) == 0  # no --target: the file's search.target steers the search
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert (report["target"], report["weight"]) == (0.1, 0.0)  # search: {target: 0.1}; weight: the file's default
    assert report["relative_cost"] <= 0.1


@pytest.mark.slow  # a real NNI experiment
def test_hardware_target_costs_are_reported_and_optimised(tmp_path):
    path = _write(tmp_path, "{name: channel-mixed-precision, arc_learning_rate: 0.05}",
                  "hardware: {target: mpic}\n")
    assert main(["search", path, "--target", "0.3"]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["cost"] == "energy_uj"
    assert {"cycles", "latency_ms", "energy_uj", "memory_bits"} <= set(report["costs"])
    assert report["costs"]["energy_uj"] <= 0.3 * report["reference_costs"]["energy_uj"]
    assert report["cost_sources"]["energy_uj"] == report["cost_sources"]["memory_bits"] == "formula"


@pytest.mark.slow
def test_a_multi_trial_search_on_ethos_u_reports_the_encoders_bytes_of_its_trained_model(tmp_path):
    from nni_udc.evaluators.npu import npu_encoded_size

    path = _write(tmp_path, "{name: random, max_trials: 2, args: {seed: 0}}", "hardware: {target: ethos-u55}\n")
    assert main(["search", path, "--target", "0.9"]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    model = torch.load(tmp_path / "out" / "model.pt", weights_only=False)
    assert report["costs"]["npu_weight_bytes"] == sum(npu_encoded_size(model, "ethos-u55").values())
    assert report["cost_sources"]["npu_weight_bytes"] == "Arm's Ethos-U encoder (ethos-u-vela, ethos-u55)"


@pytest.mark.slow
def test_nni_multi_trial_strategy_from_the_file(tmp_path):
    path = _write(tmp_path, "{name: random, max_trials: 3, args: {seed: 0}}")
    config = load_config(path)
    assert config.strategy.name == "random" and not config.strategy.one_shot
    assert main(["search", path, "--target", "0.5"]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    model = torch.load(tmp_path / "out" / "model.pt", weights_only=False)
    assert report["strategy"] == "random"
    assert report["costs"]["memory_bits"] == exact_costs(model, X, ["memory_bits"])["memory_bits"]
    assert report["relative_cost"] <= 0.5


@pytest.mark.slow  # a real NNI experiment
def test_a_target_no_architecture_fits_is_a_clear_error(tmp_path):
    path = _write(tmp_path, "{name: random, max_trials: 1, args: {seed: 0}}")
    with pytest.raises(RuntimeError, match="none of the 1 architectures fits the target 1e-05"):
        main(["search", path, "--target", "0.00001"])
