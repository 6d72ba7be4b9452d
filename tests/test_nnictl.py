"""The nnictl route: the Optuna tuner driven directly, registration, the trial body, and a real ``nnictl create``."""
from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from nni_udc.cli import main as cli_main
from nni_udc.cli import nnictl as cli_nnictl
from nni_udc.pareto import TrialRecord, initial_values, nnictl
from nni_udc.pareto.record import USER_ATTRS
from nni_udc.pareto.tuner import OptunaTuner

ARCH = {"width": 8, "op": "conv", "b_block": 4}


def result(accuracy: float = 0.9, cost: float = 0.05, **extra: Any) -> dict[str, Any]:
    return {"default": accuracy, "relative_cost": cost, "test_accuracy": accuracy - 0.01, "memory_bits": 1000.0,
            "params": 300.0, "arch": json.dumps(ARCH, sort_keys=True), **extra}


# ----- the tuner, driven as NNI's dispatcher drives it --------------------------------------------------

def test_generate_receive_tells_the_study() -> None:
    tuner = OptunaTuner(low=0.03, high=0.3, initial=2)
    tuner.update_search_space({})
    params = tuner.generate_parameters(7)
    assert params == {"target": 0.03}
    tuner.receive_trial_result(7, params, result(0.85, 0.028, target=0.03), trial_job_id="abcde")
    (trial,) = tuner.study.get_trials(states=(TrialState.COMPLETE,))
    assert trial.values == [0.85, 0.028]
    assert trial.params == {"target": 0.03}
    assert trial.user_attrs["architecture"] == ARCH
    assert trial.user_attrs["costs"] == {"memory_bits": 1000.0, "params": 300.0}
    assert trial.user_attrs["test_accuracy"] == pytest.approx(0.84)
    assert trial.user_attrs["nni_parameter_id"] == 7 and trial.user_attrs["nni_trial_job_id"] == "abcde"
    assert tuner.study.directions == [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]


def test_the_tuner_stores_the_trials_record_as_the_pareto_loop_does() -> None:
    tuner = OptunaTuner(low=0.03, high=0.3, initial=1)
    params = tuner.generate_parameters(0)
    record = TrialRecord(variable="target", value=params["target"], accuracy=0.85, relative_cost=0.06,
                         test_accuracy=0.8, costs={"memory_bits": 60.0}, reference_costs={"memory_bits": 1000.0},
                         cost="memory_bits", architecture=ARCH, output="runs/nnictl/exp-trial", seconds=3.0)
    tuner.receive_trial_result(0, params, record.to_nni_metric())
    (trial,) = tuner.study.get_trials(states=(TrialState.COMPLETE,))
    assert TrialRecord.from_trial(trial) == replace(record, number=trial.number)
    assert set(trial.user_attrs) == {*USER_ATTRS, "nni_parameter_id"}


def test_initial_values_come_first_then_the_sampler() -> None:
    tuner = OptunaTuner(low=0.02, high=0.5, initial=3, sampler="random", seed=1)
    got = []
    for i in range(6):
        value = tuner.generate_parameters(i)["target"]
        got.append(value)
        tuner.receive_trial_result(i, {"target": value}, result(0.5 + value, value))
    assert got[:3] == initial_values(0.02, 0.5, 3)
    assert all(0.02 <= v <= 0.5 for v in got[3:]) and len(set(got)) == 6
    assert len(tuner.study.get_trials(states=(TrialState.COMPLETE,))) == 6


@pytest.mark.parametrize("sampler", ["tpe", "nsga2", "gp"])
def test_weight_variable_and_samplers(sampler: str) -> None:
    tuner = OptunaTuner(low=0.01, high=10.0, variable="weight", sampler=sampler, initial=1)
    for i in range(3):
        params = tuner.generate_parameters(i)
        assert list(params) == ["weight"] and 0.01 <= params["weight"] <= 10.0
        tuner.receive_trial_result(i, params, result(0.8, 1 / (1 + params["weight"])))
    assert len(tuner.study.best_trials) >= 1


def test_failures() -> None:
    tuner = OptunaTuner(low=0.03, high=0.3, initial=0)
    for i in range(5):
        tuner.generate_parameters(i)
    tuner.trial_end(0, success=False)                               # crashed before reporting
    tuner.receive_trial_result(1, {}, {"default": 0.9})             # no relative_cost
    tuner.receive_trial_result(2, {}, 0.9)                          # not a dict
    tuner.receive_trial_result(3, {}, result())
    tuner.trial_end(3, success=True)                                # already told: nothing changes
    tuner.trial_end(4, success=True)                                # succeeded, result still to come: stays open
    tuner.receive_trial_result(99, {}, result())                    # unknown parameter id: ignored
    tuner.trial_end(99, success=False)
    states = [t.state for t in tuner.study.trials]
    assert states == [TrialState.FAIL, TrialState.FAIL, TrialState.FAIL, TrialState.COMPLETE, TrialState.RUNNING]
    tuner.receive_trial_result(4, {}, result())
    assert tuner.study.trials[4].state == TrialState.COMPLETE


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"low": 0.3, "high": 0.03}, "classArgs.low must be smaller than classArgs.high"),
    ({"low": 0.0, "high": 0.3}, "classArgs.low must be > 0"),
    ({"low": "a", "high": 0.3}, "classArgs.low must be a finite number"),
    ({"low": 0.1, "high": 2.0}, "classArgs.high must be <= 1 for variable 'target'"),
    ({"low": 0.1, "high": 0.3, "variable": "lambda"}, "classArgs.variable must be one of target, weight"),
    ({"low": 0.1, "high": 0.3, "sampler": "cmaes"}, "classArgs.sampler: unknown sampler 'cmaes'"),
    ({"low": 0.1, "high": 0.3, "initial": -1}, "classArgs.initial must be an integer >= 0"),
    ({"low": 0.1, "high": 0.3, "seed": 1.5}, "classArgs.seed must be an integer >= 0"),
    ({"low": 0.1, "high": 0.3, "storage": ""}, "classArgs.storage must be an Optuna storage URL"),
    ({"low": 0.1, "high": 0.3, "study_name": ""}, "classArgs.study_name must be a non-empty string"),
])
def test_bad_class_args(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        OptunaTuner(**kwargs)
    OptunaTuner(low=0.1, high=20.0, variable="weight")  # weight has no upper limit


def test_any_search_space_is_accepted() -> None:
    tuner = OptunaTuner(low=0.03, high=0.3, initial=1)
    tuner.update_search_space({"placeholder": {"_type": "choice", "_value": [0]}})
    tuner.update_search_space(None)
    assert tuner.generate_parameters(0) == {"target": pytest.approx(math.sqrt(0.03 * 0.3), rel=1e-3)}


def test_import_data_for_a_resumed_experiment() -> None:
    tuner = OptunaTuner(low=0.03, high=0.3, initial=2)
    tuner.update_search_space({})
    tuner.import_data([
        # the reported target wins over NNI's stored hyperParameters (which can be swapped)
        {"parameter": {"target": 0.2}, "value": result(0.8, 0.029, target=0.03)},
        {"parameter": {"target": 0.1}, "value": result(0.82, 0.09)},
        {"parameter": {"target": 0.1}, "value": {"default": 0.8}},    # unusable: skipped
        {"parameter": {"target": 5.0}, "value": result(0.9, 0.5)},    # outside [low, high]: skipped
    ])
    done = tuner.study.get_trials(states=(TrialState.COMPLETE,))
    assert [(t.params["target"], t.values) for t in done] == [(0.03, [0.8, 0.029]), (0.1, [0.82, 0.09])]
    assert done[0].user_attrs["architecture"] == ARCH
    # the imported initial value 0.03 is not run again; 0.3 still is
    assert tuner.generate_parameters(10) == {"target": 0.3}


def test_persistent_storage(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    tuner = OptunaTuner(low=0.03, high=0.3, initial=2, storage=url, study_name="s")
    params = tuner.generate_parameters(0)
    tuner.receive_trial_result(0, params, result(0.8, 0.03, **params))
    again = OptunaTuner(low=0.03, high=0.3, initial=2, storage=url, study_name="s")
    again.import_data([{"parameter": params, "value": result(0.8, 0.03, **params)}])  # already there: no duplicate
    assert len(again.study.get_trials(states=(TrialState.COMPLETE,))) == 1
    assert again.generate_parameters(1) == {"target": 0.3}  # 0.03 is done, 0.3 comes next
    assert optuna.load_study(study_name="s", storage=url).trials[0].values == [0.8, 0.03]


# ----- registration and the command line ------------------------------------------------------------

@pytest.fixture
def nni_config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """NNI's algorithm registry in a temporary directory (never the virtual environment's)."""
    path = tmp_path / "nni-config"
    monkeypatch.setenv("NNI_CONFIG_DIR", str(path))
    return path


def registered(config_dir: Path) -> dict[str, str]:
    data = yaml.safe_load((config_dir / "registered_algorithms.yml").read_text()) or {}
    return {t["builtinName"]: t["className"] for t in data.get("tuners", [])}


def test_register_and_register_again(nni_config_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nnictl.register()
    assert registered(nni_config_dir) == {"nni_udc_optuna": nnictl.TUNER_CLASS}
    assert cli_main(["nnictl-register", "--name", "other"]) == 0
    assert cli_main(["nnictl-register"]) == 0  # the existing name is replaced, not refused
    assert registered(nni_config_dir) == {"nni_udc_optuna": nnictl.TUNER_CLASS, "other": nnictl.TUNER_CLASS}
    assert "registered tuner 'nni_udc_optuna'" in capsys.readouterr().out


def test_register_errors(nni_config_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="built-in NNI algorithm"):
        nnictl.register("TPE")
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["nnictl-register", "--name", "bad name"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error:" in err
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["nnictl-register", "--bogus"])
    assert exit_info.value.code == 2


def test_trial_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["nnictl-trial", str(tmp_path / "missing.yaml")])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "cannot read the experiment file" in lines[-1]
    done = subprocess.run([sys.executable, "-m", "nni_udc.cli", "nnictl-trial"], capture_output=True, text=True)
    assert done.returncode == 2 and "config" in done.stderr


def test_trial_restores_the_clobbered_parameters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The inner NAS run overwrites ``nni.trial._params``; the final result must carry the outer parameter id."""
    import nni
    import nni.trial

    import nni_udc.experiment as experiment
    from nni_udc.experiment import SearchOutcome

    config = tmp_path / "search.yaml"
    config.write_text(yaml.safe_dump({"space": "digits", "output": str(tmp_path / "runs")}))
    outer = {"parameter_id": 5, "parameter_source": "algorithm", "parameters": {"target": 0.07}}
    calls: dict[str, Any] = {}

    def get_next_parameter() -> dict[str, Any]:
        nni.trial._params = outer
        return outer["parameters"]

    def run_search(cfg: Any, **kwargs: Any) -> SearchOutcome:
        calls["search"] = kwargs
        nni.get_next_parameter()  # what the sequential engine does
        nni.trial._params = {"parameter_id": 0, "parameters": "inner model"}
        return SearchOutcome(sample={"width": 8, "op": "conv"}, accuracy=0.8, test_accuracy=0.7,
                             costs={"memory_bits": 70.0, "params": 10.0}, reference_costs={"memory_bits": 1000.0},
                             cost="memory_bits", seconds=1.0)

    def report_final_result(metric: Any) -> None:
        calls["report"] = (metric, nni.trial._params)

    monkeypatch.setattr(nni, "get_next_parameter", get_next_parameter)
    monkeypatch.setattr(nni, "report_final_result", report_final_result)
    monkeypatch.setattr(experiment, "run_search", run_search)
    monkeypatch.setattr(experiment, "quiet", contextlib.nullcontext)
    monkeypatch.setattr(nni.trial, "_params", None)
    got = cli_nnictl.trial(config)
    metric, params_at_report = calls["report"]
    assert params_at_report is outer
    out = tmp_path / "runs" / "nnictl" / "STANDALONE-STANDALONE"
    assert metric == got == {"default": 0.8, "relative_cost": 0.07, "test_accuracy": 0.7, "memory_bits": 70.0,
                             "params": 10.0, "arch": '{"op": "conv", "width": 8}',
                             "reference_costs": '{"memory_bits": 1000.0}', "cost": "memory_bits", "seconds": 1.0,
                             "output": str(out), "target": 0.07}
    assert calls["search"]["target"] == 0.07
    assert calls["search"]["output"] == out


# ----- the real thing ---------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://localhost:{port}/api/v1/nni/{path}", timeout=30) as response:
        return json.loads(response.read())


def _decode(data: Any) -> Any:
    """NNI's metric data is JSON of (JSON of) the reported value."""
    while isinstance(data, str):
        data = json.loads(data)
    return data


def _logs(work: Path) -> str:
    files = sorted(work.glob("*/log/dispatcher.log")) + sorted(work.glob("*/environments/*/trials/*/trial.*"))
    return "\n".join(f"--- {f}\n{f.read_text(errors='replace')[-3000:]}" for f in files)


@pytest.mark.slow
def test_nnictl_create_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config_dir = tmp_path / "nni-config"
    monkeypatch.setenv("NNI_CONFIG_DIR", str(config_dir))  # for register() and every nnictl subprocess
    env = {**os.environ, "NNI_CONFIG_DIR": str(config_dir)}
    nnictl.register()

    search = yaml.safe_load((Path(__file__).parents[1] / "examples/nnictl/search.yaml").read_text())
    search["training"].update(epochs=1, finetune_epochs=1)
    search["output"] = str(tmp_path / "runs")
    (tmp_path / "search.yaml").write_text(yaml.safe_dump(search))
    work = tmp_path / "nni-experiments"
    experiment = {
        "searchSpace": {},
        "trialCommand": f"{sys.executable} -m nni_udc.cli nnictl-trial search.yaml",
        "trialCodeDirectory": str(tmp_path),
        "trialConcurrency": 1,
        "maxTrialNumber": 2,
        "experimentWorkingDirectory": str(work),
        "tuner": {"name": "nni_udc_optuna", "classArgs": {"low": 0.03, "high": 0.3, "initial": 2}},
        "trainingService": {"platform": "local"},
    }
    (tmp_path / "experiment.yml").write_text(yaml.safe_dump(experiment))
    port = _free_port()
    command = nnictl.nnictl_command()
    try:
        created = subprocess.run([*command, "create", "--config", str(tmp_path / "experiment.yml"), "--port",
                                  str(port)], env=env, capture_output=True, text=True, timeout=180)
        assert created.returncode == 0, created.stdout + created.stderr
        experiment_id = _get(port, "experiment")["id"]
        deadline = time.monotonic() + 300
        while True:
            jobs = _get(port, "trial-jobs")
            status = _get(port, "check-status")
            assert status["status"] != "ERROR" and not any(j["status"] in ("FAILED", "SYS_CANCELED") for j in jobs), \
                f"{status}\n{jobs}\n{_logs(work)}"
            if len(jobs) == 2 and all(j["status"] == "SUCCEEDED" for j in jobs):
                break
            assert time.monotonic() < deadline, f"trials not done in time: {jobs}\n{_logs(work)}"
            time.sleep(3)
        metrics = [m for m in _get(port, "metric-data") if m["type"] == "FINAL"]
    finally:
        subprocess.run([*command, "stop", "--port", str(port)], env=env, capture_output=True, timeout=120)

    assert len(metrics) == 2
    by_job = {m["trialJobId"]: _decode(m["data"]) for m in metrics}
    targets = []
    for job in jobs:
        value = by_job[job["trialJobId"]]
        assert {"default", "relative_cost", "arch", "test_accuracy", "memory_bits"} <= set(value)
        parameter = _decode(job["hyperParameters"][0])
        out = tmp_path / "runs" / "nnictl" / f"{experiment_id}-{job['trialJobId']}"
        assert json.loads(value["arch"]) == json.loads((out / "architecture.json").read_text())
        report = json.loads((out / "report.json").read_text())
        assert report["target"] == parameter["parameters"]["target"] == value["target"]
        assert report["accuracy"] == value["default"] and report["relative_cost"] == value["relative_cost"]
        assert (out / "model.pt").is_file()
        targets.append(parameter["parameters"]["target"])
    assert sorted(targets) == initial_values(0.03, 0.3, 2)  # the two enqueued values, each run once
