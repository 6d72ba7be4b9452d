"""Runs that survive kills and bad training, and leave nothing outside their output directory (issue 10).

Fast tests drive the outer loop with an analytic stand-in for the search; the ``slow`` ones run the installed
``nni-udc`` on real (tiny) searches: a kill -9 and an immediate restart, a learning rate that diverges, and a
search with ``HOME`` pointing at an empty directory.
"""
from __future__ import annotations

import csv
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState
from sqlalchemy.exc import OperationalError

import nni_udc.experiment as experiment
from nni_udc.config import load_config
from nni_udc.evaluators.divergence import DivergedError
from nni_udc.experiment import SearchOutcome, run_pareto, storage_url
from nni_udc.pareto.owners import FAILURE, OWNER, retry_dead, this_process
from nni_udc.pareto.study import open_study, requeue, run_until_complete

NNI_UDC = str(Path(sys.executable).parent / "nni-udc")


def _config(directory: Path, *, trials: int = 2, initial: int = 2, learning_rate: float = 0.003,
            heartbeat: str = "") -> Path:
    path = directory / "exp.yaml"
    path.write_text(f"""\
name: tiny
space: digits
training: {{epochs: 1, finetune_epochs: 0, learning_rate: {learning_rate}}}
search: {{target: 0.1}}
pareto: {{trials: {trials}, low: 0.03, high: 0.3, initial: {initial}, baseline: false{heartbeat}}}
output: {directory / 'run'}
""")
    return path


def _dead_pid() -> int:
    """The id of a process that has ended (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _study(tmp_path: Path) -> optuna.Study:
    return open_study(storage=f"sqlite:///{tmp_path / 'study.db'}", name="s", low=0.03, high=0.3, initial=0)


def _running(study: optuna.Study, value: float, owner: dict) -> optuna.Trial:
    """A RUNNING trial of ``value``, as ``owner`` would have started it."""
    study.enqueue_trial({"target": value})
    trial = study.ask()
    trial.suggest_float("target", 0.03, 0.3, log=True)
    trial.set_user_attr(OWNER, owner)
    return trial


# ----- 1. resume right after a kill: the dead trial is retried ------------------------------------------------

def test_a_trial_whose_process_died_on_this_host_is_failed_and_queued_again(tmp_path):
    study = _study(tmp_path)
    me = this_process()
    _running(study, 0.05, {**me, "pid": _dead_pid()})
    _running(study, 0.1, me)                                      # alive: this very process
    _running(study, 0.2, {**me, "host": "another-machine"})       # elsewhere: left to the heartbeat
    _running(study, 0.25, {**me, "started": me["started"] - 100})  # a reused process id
    _running(study, 0.28, {**me, "pid": _dead_pid(), "pid_namespace": "pid:[1]"})  # another container on this host

    assert retry_dead(study) == [0, 3]
    assert retry_dead(study) == []  # once only
    trials = study.get_trials()
    assert [t.state for t in trials[:5]] == [TrialState.FAIL, TrialState.RUNNING, TrialState.RUNNING, TrialState.FAIL,
                                             TrialState.RUNNING]
    assert f"{socket.gethostname()}:" in trials[0].user_attrs[FAILURE]
    assert "ended while it ran" in trials[0].user_attrs[FAILURE]
    retries = trials[5:]
    assert [t.state for t in retries] == [TrialState.WAITING, TrialState.WAITING]
    assert [RetryHeartbeatStaleTrialCallback.retried_trial_number(t) for t in retries] == [0, 3]
    assert [t.params["target"] for t in retries] == [0.05, 0.25]  # the same values
    assert all(OWNER not in t.user_attrs and FAILURE not in t.user_attrs for t in retries)


def test_the_loop_retries_a_dead_trial_and_ends_only_with_every_search_complete(tmp_path):
    study = _study(tmp_path)
    _running(study, 0.05, {**this_process(), "pid": _dead_pid()})
    study.tell(study.ask({"target": optuna.distributions.FloatDistribution(0.03, 0.3, log=True)}), [0.8, 0.1])
    seen = []

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        value = trial.suggest_float("target", 0.03, 0.3, log=True)
        seen.append(value)
        return 1 - value, value

    run_until_complete(study, objective, 3)
    states = [t.state for t in study.get_trials()]
    assert states.count(TrialState.COMPLETE) == 3 and states.count(TrialState.FAIL) == 1
    assert seen[0] == 0.05  # the dead trial's value first, then one new search
    assert len(seen) == 2


def test_a_queued_value_pruned_by_a_worker_that_came_too_late_goes_back_to_the_queue(tmp_path):
    study = _study(tmp_path)
    retry = _running(study, 0.05, this_process())
    study.tell(retry, state=TrialState.FAIL)
    RetryHeartbeatStaleTrialCallback()(study, study.get_trials()[0])  # queues 0.05 again, as a retry of trial 0
    for _ in range(2):  # the retry, then a value the sampler proposes
        trial = study.ask()
        trial.suggest_float("target", 0.03, 0.3, log=True)
        requeue(study, trial)
        study.tell(trial, state=TrialState.PRUNED)
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [(t.params, RetryHeartbeatStaleTrialCallback.retried_trial_number(t)) for t in waiting] == [
        ({"target": 0.05}, 0)]


def test_the_loop_waits_for_a_search_another_worker_still_runs(tmp_path):
    study = _study(tmp_path)
    other = _running(study, 0.1, this_process())  # alive, as another worker's trial would be

    def finish_later() -> None:
        time.sleep(1.5)
        study.tell(other, [0.9, 0.1])

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        raise AssertionError("no extra search while the last one runs elsewhere")

    threading.Thread(target=finish_later).start()
    started = time.time()
    run_until_complete(study, objective, 1, poll=0.2)
    assert time.time() - started >= 1.4
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE]


def _start(config_path: Path) -> subprocess.Popen:
    return subprocess.Popen([NNI_UDC, "pareto", str(config_path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def _trials(storage: str) -> list[optuna.trial.FrozenTrial]:
    if not Path(storage[len("sqlite:///"):]).exists():
        return []
    try:
        return optuna.load_study(study_name="tiny", storage=storage).get_trials()
    except (KeyError, OperationalError):  # the worker has not created the study (or its tables) yet
        return []


@pytest.mark.slow
def test_a_run_restarted_at_once_after_kill_9_completes_every_search(tmp_path):
    # Optuna's heartbeat would fail the killed trial only after 60 s: the restart must not depend on it.
    config_path = _config(tmp_path, trials=2, heartbeat=", heartbeat_interval: 20, grace_period: 60")
    storage = storage_url(load_config(config_path))
    worker = _start(config_path)
    deadline, killed = time.time() + 300, None
    while killed is None:
        assert worker.poll() is None, worker.stderr.read() if worker.stderr else ""
        assert time.time() < deadline, "the worker never ran its second search"
        trials = _trials(storage)
        running = [t for t in trials if t.state == TrialState.RUNNING]
        if any(t.state == TrialState.COMPLETE for t in trials) and running and OWNER in running[0].user_attrs:
            time.sleep(1)  # inside the search
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
            killed = running[0]
        time.sleep(0.2)

    restarted = _start(config_path)  # at once
    try:
        _, err = restarted.communicate(timeout=300)
    finally:
        if restarted.poll() is None:
            os.killpg(restarted.pid, signal.SIGKILL)
    assert restarted.returncode == 0, err
    trials = _trials(storage)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 2
    assert [t.state for t in trials if t.number == killed.number] == [TrialState.FAIL]
    assert str(killed.user_attrs[OWNER]["pid"]) in trials[killed.number].user_attrs[FAILURE]
    retry = [t for t in complete if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == killed.number]
    assert len(retry) == 1 and retry[0].params == killed.params  # the dead search, run again with its value
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.PRUNED)]
    assert len(json.loads((tmp_path / "run" / "front.json").read_text())["points"]) == 2


# ----- 2. diverged training is a failed trial -------------------------------------------------------------------

def _analytic_search(diverging: set[float]):
    """A stand-in for run_search: accuracy 1 - target at cost target; the values in ``diverging`` diverge."""
    def run_search(config, *, output, target, **_):
        if target in diverging:
            raise DivergedError(f"{config.path}: the search diverged: epoch 0, step 3: the training loss is nan")
        return SearchOutcome(sample={"width": 8}, accuracy=1 - target, test_accuracy=1 - target,
                             costs={"memory_bits": 1000 * target}, reference_costs={"memory_bits": 1000.0},
                             cost="memory_bits", seconds=0.0)
    return run_search


def test_a_diverged_search_fails_its_trial_and_the_study_goes_on(tmp_path, monkeypatch):
    monkeypatch.setattr(experiment, "run_search", _analytic_search({0.3}))  # 0.3: the last initial value
    config = load_config(_config(tmp_path, trials=3, initial=3))
    outcome = run_pareto(config, progress=False)

    trials = optuna.load_study(study_name="tiny", storage=storage_url(config)).get_trials()
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len([t for t in trials if t.state == TrialState.COMPLETE]) == 3 == len(outcome.points)
    assert [t.params["target"] for t in failed] == [0.3]
    assert "the training loss is nan" in failed[0].user_attrs[FAILURE] and failed[0].user_attrs["diverged"]
    with open(tmp_path / "run" / "front.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and all(math.isfinite(float(row[k])) for row in rows for k in ("accuracy", "relative_cost"))
    assert 0.3 not in [p.value for p in outcome.points]


def test_a_study_whose_every_search_diverges_gives_up_with_one_line(tmp_path, monkeypatch, capsys):
    from nni_udc.cli import main

    monkeypatch.setattr(experiment, "run_search", _analytic_search({0.03, 0.3}))  # both initial values
    config_path = _config(tmp_path, trials=2, initial=2)
    with pytest.raises(SystemExit) as stopped:
        main(["pareto", str(config_path)])
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("nni-udc pareto: error: 2 searches of the study diverged and 0 of 2 completed")
    assert "the training loss is nan" in err[-1] and "Traceback" not in "\n".join(err)
    trials = optuna.load_study(study_name="tiny", storage=storage_url(load_config(config_path))).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL]  # gave up after `trials` of them
    assert json.loads((tmp_path / "run" / "front.json").read_text())["points"] == []


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e999"])
def test_the_command_line_refuses_a_non_finite_weight(tmp_path, value):
    result = subprocess.run([NNI_UDC, "search", str(_config(tmp_path)), f"--weight={value}"], capture_output=True,
                            text=True)
    assert result.returncode == 2
    last = result.stderr.splitlines()[-1]
    assert last.startswith("nni-udc search: error: argument --weight: must be a finite number") and f"'{value}'" in last


@pytest.mark.slow
def test_a_search_that_diverges_exits_2_with_one_line(tmp_path):
    config_path = _config(tmp_path, learning_rate=1e6)
    result = subprocess.run([NNI_UDC, "search", str(config_path)], capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert result.returncode == 2, result.stderr
    [last] = result.stderr.strip().splitlines()  # one line: no NNI log lines, no traceback
    assert last.startswith(f"nni-udc search: error: {config_path}: the search diverged: ")
    assert "not finite" in last and last.endswith("lower training.learning_rate (1e+06) or the penalty weight")
    assert not (tmp_path / "run" / "model.pt").exists()


# ----- 5. nothing written outside the run -----------------------------------------------------------------------

@pytest.mark.slow
def test_a_search_leaves_home_untouched(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    # matplotlib (imported by NNI) keeps its font cache in HOME unless told otherwise: not the run's bookkeeping
    env = {**os.environ, "HOME": str(home), "MPLCONFIGDIR": str(tmp_path / "matplotlib"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([NNI_UDC, "search", str(_config(tmp_path))], capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert list(home.rglob("*")) == []
    manifest = json.loads((tmp_path / "run" / "nni-experiments" / ".experiment").read_text())
    assert [entry["status"] for entry in manifest.values()] == ["STOPPED"]  # NNI's record, kept in the run
