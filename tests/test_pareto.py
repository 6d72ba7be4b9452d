"""The Optuna outer loop on real searches: front files, hypervolume, resume after a kill, several workers."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState
from sqlalchemy.exc import IntegrityError, OperationalError

from nni_udc.cli import main
from nni_udc.config import load_config
from nni_udc.experiment import quiet, run_pareto, storage_url, study_points
from nni_udc.pareto import Point, TrialRecord, hypervolume, initial_values, non_dominated
from nni_udc.pareto.front import write_points_csv
from nni_udc.pareto.record import USER_ATTRS

NNI_UDC = str(Path(sys.executable).parent / "nni-udc")


def _write_config(directory: Path, *, trials: int, initial: int = 2, storage: str | None = None,
                  study: str = "tiny") -> Path:
    storage_line = f", storage: '{storage}', study_name: {study}" if storage else ""
    path = directory / "exp.yaml"
    path.write_text(f"""\
name: tiny
space: digits
training: {{epochs: 1, finetune_epochs: 0}}
search: {{target: 0.1}}
pareto: {{trials: {trials}, low: 0.03, high: 0.3, initial: {initial}, heartbeat_interval: 1, grace_period: 3,
         baseline: false{storage_line}}}
output: {directory / 'run'}
""")
    return path


# ----- pure front math -----------------------------------------------------------------------------------------

def _union_area(points: list[tuple[float, float]], reference: tuple[float, float]) -> float:
    """Area of the union of the boxes [cost, cost_ref] x [acc_ref, acc], slab by slab over every cost breakpoint."""
    acc_ref, cost_ref = reference
    xs = sorted({c for _, c in points if c < cost_ref} | {cost_ref})
    area = 0.0
    for left, right in zip(xs, xs[1:]):
        height = max((a - acc_ref for a, c in points if c <= left and a > acc_ref), default=0.0)
        area += (right - left) * height
    return area


def test_front_and_hypervolume_on_hand_made_points():
    pts = [Point(0, 0.9, 0.5), Point(1, 0.8, 0.2), Point(2, 0.7, 0.3), Point(3, 0.95, 1.2), Point(4, 0.8, 0.2)]
    front = non_dominated(pts)
    assert [p.number for p in front] == [1, 0, 3]  # 2 is dominated by 1; 4 duplicates 1
    assert hypervolume(pts, (0.0, 1.0)) == pytest.approx(0.8 * 0.3 + 0.9 * 0.5)  # 3 lies beyond the reference
    assert hypervolume(pts, (0.85, 1.0)) == pytest.approx(0.05 * 0.5)
    assert hypervolume([], (0.0, 1.0)) == 0.0


def test_the_csv_names_a_searchs_cheaper_exports_in_a_column_of_their_own(tmp_path):
    points = [Point(0, 0.9, 0.1), Point(0, 0.85, 0.08, export=1)]
    write_points_csv(points, tmp_path / "all.csv")
    write_points_csv(points[:1], tmp_path / "one.csv")
    with (tmp_path / "all.csv").open() as f:
        assert [(r["number"], r["export"]) for r in csv.DictReader(f)] == [("0", "0"), ("0", "1")]
    with (tmp_path / "one.csv").open() as f:
        assert "export" not in next(csv.reader(f))  # no ladder, no column (as files written before it)
    assert [p.label for p in points] == ["0", "0.1"]


def test_initial_values_are_log_spaced():
    values = initial_values(0.02, 0.5, 5)
    assert values[0] == 0.02 and values[-1] == 0.5
    ratios = [b / a for a, b in zip(values, values[1:])]
    assert max(ratios) == pytest.approx(min(ratios), rel=1e-3)


# ----- one record of a trial ----------------------------------------------------------------------------------

RECORD = TrialRecord(number=0, variable="target", value=0.1, accuracy=0.9, relative_cost=0.08, test_accuracy=0.875,
                     costs={"memory_bits": 800.0, "params": 96.0}, reference_costs={"memory_bits": 1e4, "params": 96.0},
                     cost="memory_bits", architecture={"bits": 4, "op": "conv"}, output="runs/trials/0000",
                     seconds=12.5)
#: a search that exported one cheaper model beside its own (UDC's exports: 2), as TrialRecord reads it back
LADDERED = replace(RECORD, ladder=(replace(RECORD, accuracy=0.85, relative_cost=0.06, test_accuracy=0.86,
                                           costs={"memory_bits": 600.0, "params": 96.0},
                                           architecture={"bits": 3, "op": "conv"},
                                           output="runs/trials/0000/ladder/1", seconds=None),))
#: user attributes as run_pareto wrote them before TrialRecord (c1fa189^), worker included
OLD_PARETO_ATTRS = {"architecture": {"bits": 4, "op": "conv"}, "test_accuracy": 0.875,
                    "costs": {"memory_bits": 800.0, "params": 96.0}, "reference_costs": {"memory_bits": 1e4, "params": 96.0},
                    "cost": "memory_bits", "seconds": 12.5, "output": "runs/trials/0000", "worker": "host:123"}


def _told(study: optuna.Study, record: TrialRecord, attrs: dict[str, object]) -> optuna.trial.FrozenTrial:
    """A real trial of a stored study: asked, given ``attrs``, told the record's objectives."""
    trial = study.ask({record.variable: optuna.distributions.FloatDistribution(0.03, 0.3, log=True)})
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    study.tell(trial, [record.accuracy, record.relative_cost])
    return study.trials[-1]


def test_a_record_round_trips_through_an_optuna_trial(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}", directions=["maximize", "minimize"])
    study.enqueue_trial({"target": 0.1})
    _told(study, LADDERED, LADDERED.to_user_attrs())
    reloaded = optuna.load_study(study_name=study.study_name, storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert TrialRecord.from_trial(reloaded.trials[0]) == LADDERED
    assert set(RECORD.to_user_attrs()) == set(USER_ATTRS) == set(OLD_PARETO_ATTRS) - {"worker"} | {"ladder"}
    # every export is a point of the study: the search's own, then its ladder's, under the trial's number
    assert [(p.label, p.relative_cost, p.output) for p in study_points(reloaded)] == [
        ("0", 0.08, "runs/trials/0000"), ("0.1", 0.06, "runs/trials/0000/ladder/1")]


def test_user_attrs_written_before_the_record_still_read():
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.enqueue_trial({"target": 0.1})
    assert TrialRecord.from_trial(_told(study, RECORD, OLD_PARETO_ATTRS)) == RECORD
    # the nnictl tuner stored only these three, and test_accuracy only when reported
    study.enqueue_trial({"target": 0.1})
    tuner_trial = _told(study, RECORD, {"architecture": {"bits": 4}, "costs": {"memory_bits": 800.0},
                                        "nni_parameter_id": 7})
    assert TrialRecord.from_trial(tuner_trial) == TrialRecord(
        number=1, variable="target", value=0.1, accuracy=0.9, relative_cost=0.08, costs={"memory_bits": 800.0},
        architecture={"bits": 4})
    assert TrialRecord.from_trial(tuner_trial).point() == Point(1, 0.9, 0.08, value=0.1, costs={"memory_bits": 800.0},
                                                                 architecture={"bits": 4})


def test_a_record_round_trips_through_an_nni_metric():
    metric = RECORD.to_nni_metric()
    assert json.loads(json.dumps(metric)) == metric  # what NNI's manager stores
    assert TrialRecord.from_nni_metric(metric, variable="target", number=0) == RECORD
    assert "ladder" not in metric
    laddered = LADDERED.to_nni_metric()
    assert json.loads(json.dumps(laddered)) == laddered
    assert TrialRecord.from_nni_metric(laddered, variable="target", number=0) == LADDERED
    # the metric the nnictl trial reported before the record: no output, seconds, cost or reference costs
    old = {"default": 0.9, "relative_cost": 0.08, "test_accuracy": 0.875, "memory_bits": 800.0, "params": 96.0,
           "arch": '{"bits": 4, "op": "conv"}', "target": 0.1}
    assert TrialRecord.from_nni_metric(old, variable="target", number=0) == replace(
        RECORD, reference_costs={}, cost="", output="", seconds=None)


@pytest.mark.parametrize("metric, message", [
    ({"relative_cost": 0.1}, "'default' must be a finite number, but got None"),
    ({"default": 0.9, "relative_cost": float("nan")}, "'relative_cost' must be a finite number, but got nan"),
    ({"default": 0.9, "relative_cost": 0.1, "arch": "not json"}, "'arch' must be a JSON object, but got 'not json'"),
    ({"default": 0.9, "relative_cost": 0.1, "arch": "[1]"}, "'arch' must be a mapping"),
    ({"default": 0.9, "relative_cost": 0.1, "test_accuracy": "high"}, "'test_accuracy' (when given) must be a finite"),
    ([0.9, 0.1], "must be a dict with 'default' and 'relative_cost', but got [0.9, 0.1]"),
    ({"default": 0.9, "relative_cost": 0.1, "ladder": "[{"}, "'ladder' must be a JSON list, but got '[{'"),
    ({"default": 0.9, "relative_cost": 0.1, "ladder": '{"accuracy": 0.8}'}, "'ladder' must be a list of exports"),
    ({"default": 0.9, "relative_cost": 0.1, "ladder": '[{"accuracy": 0.8}]'},
     "'ladder'[0]['relative_cost'] must be a finite number, but got None"),
])
def test_a_metric_the_record_cannot_hold_is_refused_with_its_key(metric, message):
    with pytest.raises(ValueError) as error:
        TrialRecord.from_nni_metric(metric, variable="target")
    assert message in str(error.value)


def test_a_cost_named_like_a_metric_key_is_refused():
    with pytest.raises(ValueError, match=r"must not be one of the metric's own keys .* but got \['seconds'\]"):
        replace(RECORD, costs={"seconds": 1.0}).to_nni_metric()


# ----- a real outer loop in this process ------------------------------------------------------------------

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    directory = tmp_path_factory.mktemp("pareto")
    config = load_config(_write_config(directory, trials=4, initial=3))
    with quiet():
        outcome = run_pareto(config, progress=False)
    return config, outcome


@pytest.mark.slow  # a real NNI experiment
def test_the_study_holds_every_search_with_its_attributes(finished_run):
    config, outcome = finished_run
    study = optuna.load_study(study_name="tiny", storage=storage_url(config))
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 4 == len(outcome.points)
    assert [t.params["target"] for t in trials[:3]] == initial_values(0.03, 0.3, 3)  # the enqueued grid first
    for t in trials:
        report = json.loads((Path(t.user_attrs["output"]) / "report.json").read_text())
        assert t.values[0] == pytest.approx(report["accuracy"])
        assert t.values[1] == pytest.approx(report["costs"]["memory_bits"] / report["reference_costs"]["memory_bits"])
        assert t.user_attrs["architecture"] == report["sample"]
        assert set(t.user_attrs["costs"]) == {"params", "macs", "bitops", "memory_bits"}
        record = TrialRecord.from_trial(t)  # the whole record was stored: its relative cost is its costs'
        assert record.cost == "memory_bits" and record.seconds > 0 and record.output == t.user_attrs["output"]
        assert record.relative_cost == pytest.approx(record.costs["memory_bits"] / record.reference_costs["memory_bits"])


@pytest.mark.slow  # a real NNI experiment
def test_the_csv_front_is_non_dominated_and_its_hypervolume_checks_out(finished_run):
    config, outcome = finished_run
    study = optuna.load_study(study_name="tiny", storage=storage_url(config))
    every = [(t.values[0], t.values[1]) for t in study.get_trials(states=(TrialState.COMPLETE,))]
    with (config.output / "front.csv").open() as f:
        rows = list(csv.DictReader(f))
    front = [(float(r["accuracy"]), float(r["relative_cost"])) for r in rows]
    assert front, "the front cannot be empty"
    for acc, cost in front:  # no search of the study dominates a front point...
        assert not any(a >= acc and c <= cost and (a > acc or c < cost) for a, c in every)
    for acc, cost in every:  # ...and every search is on the front or dominated by (or equal to) a front point
        assert any(a >= acc and c <= cost for a, c in front)
    assert [float(r["relative_cost"]) for r in rows] == sorted(float(r["relative_cost"]) for r in rows)
    expected = _union_area(every, config.pareto.reference_point)
    saved = json.loads((config.output / "front.json").read_text())
    assert saved["hypervolume"] == pytest.approx(expected) == pytest.approx(outcome.hypervolume)
    assert expected > 0


@pytest.mark.slow  # a real NNI experiment
def test_plots_are_written(finished_run):
    config, _ = finished_run
    assert (config.output / "front.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (config.output / "front.html").read_text()
    assert "plotly" in html and "Pareto front" in html


@pytest.mark.slow  # a real NNI experiment
def test_show_prints_the_front(finished_run, capsys):
    config, outcome = finished_run
    assert main(["show", str(config.output)]) == 0
    out = capsys.readouterr().out
    assert f"hypervolume {outcome.hypervolume:.4f}" in out
    assert len([line for line in out.splitlines() if line[:1].isdigit()]) == len(outcome.front)


@pytest.mark.slow  # a real NNI experiment
def test_a_finished_study_is_not_run_again(finished_run):
    config, outcome = finished_run
    again = run_pareto(config, progress=False)
    assert [p.number for p in again.points] == [p.number for p in outcome.points]


@pytest.mark.slow  # a real NNI experiment
def test_journal_storage(tmp_path):
    config = load_config(_write_config(tmp_path, trials=1, initial=1, storage=f"journal:{tmp_path / 'journal.log'}"))
    with quiet():
        outcome = run_pareto(config, progress=False)
    assert len(outcome.points) == 1 and (tmp_path / "journal.log").stat().st_size > 0


# ----- killed workers --------------------------------------------------------------------------------------

def _start(config_path: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([NNI_UDC, "pareto", str(config_path), *extra], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _trials(storage: str, study: str = "tiny") -> list[optuna.trial.FrozenTrial]:
    if storage.startswith("sqlite:///") and not Path(storage[len("sqlite:///"):]).exists():
        return []  # the worker has not created it yet
    try:
        return optuna.load_study(study_name=study, storage=storage).get_trials()
    # the study, or its tables, not there yet; IntegrityError: this reader and the worker both stamped the new
    # SQLite schema's alembic_version at once (the worker's stamp wins, the next poll reads it)
    except (KeyError, OperationalError, IntegrityError):
        return []


def _kill_when_running(process: subprocess.Popen, storage: str, *, completed: int, study: str = "tiny",
                       timeout: float = 300) -> int:
    """Wait until ``completed`` trials are done and another one has run for a second; kill the worker mid-trial."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        trials = _trials(storage, study)
        done = [t for t in trials if t.state == TrialState.COMPLETE]
        running = [t for t in trials if t.state == TrialState.RUNNING]
        if len(done) >= completed and running and time.time() - running[0].datetime_start.timestamp() > 1:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return running[0].number
        time.sleep(0.3)
    os.killpg(process.pid, signal.SIGKILL)
    raise AssertionError("the worker never ran a trial")


def _finish(process: subprocess.Popen, timeout: float = 400) -> None:
    try:
        _, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise
    assert process.returncode == 0, err


def _check_retried(trials: list[optuna.trial.FrozenTrial], killed: int, total: int) -> None:
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(complete) == total
    assert [t.number for t in failed] == [killed]  # the only trial not completed is the killed one
    retries = [t for t in complete if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == killed]
    assert len(retries) == 1 and retries[0].params == failed[0].params  # re-run once, with the same target
    assert len(trials) == total + 1  # no other work was done twice
    assert len({t.params["target"] for t in complete}) == total


@pytest.mark.slow
def test_a_killed_run_resumes_with_its_finished_trials_kept(tmp_path):
    config_path = _write_config(tmp_path, trials=3)
    storage = storage_url(load_config(config_path))
    killed = _kill_when_running(_start(config_path), storage, completed=1)
    before = {t.number: (t.values, (Path(t.user_attrs["output"]) / "report.json").stat().st_mtime)
              for t in _trials(storage) if t.state == TrialState.COMPLETE}
    time.sleep(4)  # longer than the grace period: the killed trial's heartbeat is now stale
    _finish(_start(config_path))
    trials = _trials(storage)
    _check_retried(trials, killed, total=3)
    for number, (values, mtime) in before.items():  # kept as they were, not run again
        trial = trials[number]
        assert trial.values == values
        assert (Path(trial.user_attrs["output"]) / "report.json").stat().st_mtime == mtime
    assert json.loads((tmp_path / "run" / "front.json").read_text())["front"]


@pytest.mark.slow
def test_two_workers_share_a_postgresql_study(tmp_path, postgres_url):
    config_path = _write_config(tmp_path, trials=4, storage=postgres_url, study="shared")
    workers = [_start(config_path) for _ in range(2)]
    for worker in workers:
        _finish(worker)
    trials = _trials(postgres_url, "shared")
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4, [(t.number, t.state.name, t.params, t.user_attrs.get("worker")) for t in trials]  # no fifth search
    assert len({t.user_attrs["worker"] for t in complete}) == 2  # both workers completed searches
    assert len({t.params["target"] for t in complete}) == len(complete)  # no target searched twice


@pytest.mark.slow
def test_workers_run_searches_side_by_side_in_processes_of_this_machine(tmp_path):
    config_path = _write_config(tmp_path, trials=6, initial=6)
    _finish(_start(config_path, "--workers", "2"))
    trials = _trials(storage_url(load_config(config_path)))
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 6, [(t.number, t.state.name, t.user_attrs.get("worker")) for t in trials]  # no 7th search
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}  # a late ask is pruned, nothing fails
    assert len({t.user_attrs["worker"] for t in complete}) == 2  # the helper process searched too
    assert sorted(t.params["target"] for t in complete) == initial_values(0.03, 0.3, 6)  # each target once
    assert json.loads((tmp_path / "run" / "front.json").read_text())["front"]


@pytest.mark.slow
def test_a_killed_postgresql_worker_trial_is_retried_by_another(tmp_path, postgres_url):
    config_path = _write_config(tmp_path, trials=3, storage=postgres_url, study="killed")
    killed = _kill_when_running(_start(config_path), postgres_url, completed=0, study="killed")
    time.sleep(4)  # longer than the grace period
    _finish(_start(config_path))
    _check_retried(_trials(postgres_url, "killed"), killed, total=3)


# ----- what the README promises: Ctrl-C, `variable: weight`, the qmc sampler ------------------------------------

@pytest.mark.slow  # a real NNI experiment
def test_ctrl_c_queues_the_interrupted_value_again_and_the_next_run_searches_it(tmp_path):
    config_path = _write_config(tmp_path, trials=2)
    storage = storage_url(load_config(config_path))
    process = _start(config_path)
    deadline = time.time() + 300
    while not [t for t in _trials(storage) if t.state == TrialState.RUNNING
               and time.time() - t.datetime_start.timestamp() > 1]:
        assert process.poll() is None and time.time() < deadline, process.stderr.read() if process.stderr else ""
        time.sleep(0.3)
    os.kill(process.pid, signal.SIGINT)  # Ctrl-C reaches the command itself
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("nni-udc pareto: interrupted;")
    trials = _trials(storage)
    (interrupted,) = [t for t in trials if t.state == TrialState.FAIL]
    queued = [t.system_attrs["fixed_params"]["target"] for t in trials if t.state == TrialState.WAITING]
    assert interrupted.params["target"] in queued
    _finish(_start(config_path))
    complete = [t for t in _trials(storage) if t.state == TrialState.COMPLETE]
    assert len(complete) == 2 and interrupted.params["target"] in [t.params["target"] for t in complete]


@pytest.mark.slow  # a real NNI experiment
def test_a_study_over_the_penalty_weight_with_the_qmc_sampler(tmp_path, monkeypatch):
    proposed = []
    original = optuna.samplers.QMCSampler.sample_relative

    def sample_relative(self, study, trial, search_space):
        values = original(self, study, trial, search_space)
        proposed.extend(values.values())
        return values

    monkeypatch.setattr(optuna.samplers.QMCSampler, "sample_relative", sample_relative)
    path = tmp_path / "exp.yaml"
    path.write_text(f"""\
name: tiny
space: digits
training: {{epochs: 1, finetune_epochs: 0}}
pareto: {{variable: weight, sampler: qmc, trials: 3, low: 0.1, high: 10, initial: 1, baseline: false}}
output: {tmp_path / 'run'}
""")
    config = load_config(path)
    with quiet():
        outcome = run_pareto(config, progress=False)
    trials = optuna.load_study(study_name="tiny", storage=storage_url(config)).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3 and len(outcome.points) == 3
    weights = [t.params["weight"] for t in trials]
    assert all(set(t.params) == {"weight"} for t in trials) and all(0.1 <= w <= 10 for w in weights)
    assert len(proposed) == 2 and proposed == weights[1:]  # after the one initial value, QMC proposed the rest
    for trial, weight in zip(trials, weights):  # each search ran with its λ and no cost target
        report = json.loads((Path(trial.user_attrs["output"]) / "report.json").read_text())
        assert report["weight"] == weight and report["target"] is None
