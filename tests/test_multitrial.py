"""End-to-end tests of multi-trial search (nni_udc.strategies.run_multitrial) through a real NasExperiment."""
from __future__ import annotations

import json
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import torch
from nni.mutable import Mutable
from nni.nas.nn.pytorch import LayerChoice, MutableModule, ParametrizedModule
from nni.nas.strategy import Random, RegularizedEvolution
from torch import nn

from nni_udc.data.traced import BundledSplit
from nni_udc.evaluators import exact_costs
from nni_udc.evaluators.lightning import FreshTrainerClassification, classification_evaluator
from nni_udc.nn import LowRankConv2d, QuantConv2d, QuantLinear, SparseConv2d
from nni_udc.spaces import DigitsSpace
from nni_udc.strategies import TrialResult, run_multitrial
from nni_udc.strategies import multitrial as multitrial_module

X = torch.zeros(1, 1, 8, 8)
COST_NAMES = {"params", "macs", "bitops", "memory_bits"}
N_VAL = len(BundledSplit("digits", "val"))
#: the frozen class of each LayerChoice candidate of DigitsSpace.block
BLOCK_CLASS = {"conv": QuantConv2d, "lowrank": LowRankConv2d, "sparse": SparseConv2d}


def small_space() -> DigitsSpace:
    """One stem width: the space stays large (many bits/sparsity/op labels) but every model trains fast."""
    return DigitsSpace(widths=(8,))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nni_processes() -> dict[int, str]:
    """pid -> command line of this user's NNI manager (node) and NAS trial processes."""
    found = {}
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if "nni_node" in cmd or "nni.nas.execution.training_service" in cmd:
            found[proc.info["pid"]] = cmd
    return found


def check_sample(space: DigitsSpace, sample: dict[str, Any]) -> None:
    mutables = space.simplify()
    assert set(sample) == set(mutables)
    for label, mutable in mutables.items():
        assert sample[label] in mutable.values, (label, sample[label])
    assert all(m.contains({label: sample[label]}) for label, m in mutables.items())


def check_frozen_model(space: DigitsSpace, sample: dict[str, Any]) -> nn.Module:
    model = space.freeze(sample)
    # The root keeps the space's class (NNI freezes children only), but nothing is left to search.
    assert model.simplify() == {}
    for name, module in model.named_modules():
        if name == "":
            continue
        assert not isinstance(module, (ParametrizedModule, LayerChoice, MutableModule, Mutable)), name
    assert type(model.block) is BLOCK_CLASS[sample["op"]]
    assert type(model.down) is QuantConv2d
    assert type(model.head) is QuantLinear
    assert type(model.stem[0]) is QuantConv2d
    assert model.stem[0].out_channels == sample["width"]
    assert model.stem[0].weight_bits == sample["b_stem"]
    assert model.down.weight_bits == sample["b_down"]
    assert model.down.sparsity == sample["s_down"]
    with torch.no_grad():
        out = model.eval()(torch.randn(3, 1, 8, 8))
    assert out.shape == (3, 10)
    assert torch.isfinite(out).all()
    return model


def check_results(space: DigitsSpace, results: list[TrialResult], n: int) -> None:
    assert len(results) == n
    for r in results:
        assert isinstance(r, TrialResult)
        check_sample(space, r.sample)
        # the validation accuracy NNI recorded is a count of the 359 validation digits, not a batch mean or a loss
        assert r.accuracy * N_VAL == pytest.approx(round(r.accuracy * N_VAL), abs=1e-3), r.accuracy
        assert set(r.costs) == COST_NAMES
        model = check_frozen_model(space, r.sample)
        assert r.costs == exact_costs(model, X)
        assert all(v > 0 for v in r.costs.values())
    accuracies = [r.accuracy for r in results]
    assert accuracies == sorted(accuracies, reverse=True)


@pytest.mark.slow  # a real NNI experiment
def test_sequential_random(tmp_path: Path) -> None:
    space = small_space()
    results = run_multitrial(space, classification_evaluator("digits", epochs=1), Random(seed=0),
                             example_input=X, max_trials=3, workdir=tmp_path, progress=False)
    check_results(space, results, 3)
    # Random deduplicates: three different architectures.
    assert len({json.dumps(r.sample, sort_keys=True) for r in results}) == 3
    # NNI wrote its experiment (checkpoint) under workdir, not ~/nni-experiments.
    assert list(tmp_path.glob("*/checkpoint"))


@pytest.mark.slow  # a real NNI experiment
def test_sequential_random_is_seeded(tmp_path: Path) -> None:
    def samples(seed: int, sub: str) -> list[str]:
        results = run_multitrial(small_space(), classification_evaluator("digits", epochs=1), Random(seed=seed),
                                 example_input=X, max_trials=2, workdir=tmp_path / sub, progress=False)
        return sorted(json.dumps(r.sample, sort_keys=True) for r in results)

    assert samples(1, "a") == samples(1, "b")


@pytest.mark.slow  # a real NNI experiment
def test_sequential_regularized_evolution(tmp_path: Path) -> None:
    space = small_space()
    strategy = RegularizedEvolution(population_size=3, sample_size=2, seed=0)
    results = run_multitrial(space, classification_evaluator("digits", epochs=1), strategy,
                             example_input=X, max_trials=5, workdir=tmp_path, progress=False)
    check_results(space, results, 5)


@pytest.mark.slow  # a real NNI experiment
def test_costs_subset(tmp_path: Path) -> None:
    space = small_space()
    results = run_multitrial(space, classification_evaluator("digits", epochs=1), Random(seed=3),
                             example_input=X, max_trials=1, workdir=tmp_path, costs=["params", "bitops"],
                             progress=False)
    assert len(results) == 1
    r = results[0]
    assert set(r.costs) == {"params", "bitops"}
    full = exact_costs(space.freeze(r.sample), X)
    assert r.costs == {"params": full["params"], "bitops": full["bitops"]}


@pytest.mark.slow  # a real NNI experiment
def test_experiment_is_stopped_when_a_trial_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stops = []
    original_stop = multitrial_module.NasExperiment.stop

    def spy_stop(self: Any) -> None:
        stops.append(self)
        original_stop(self)

    def boom(self: Any, model: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(multitrial_module.NasExperiment, "stop", spy_stop)
    monkeypatch.setattr(FreshTrainerClassification, "evaluate", boom)
    with pytest.raises(RuntimeError, match="boom"):
        run_multitrial(small_space(), classification_evaluator("digits", epochs=1), Random(seed=0),
                       example_input=X, max_trials=2, workdir=tmp_path, progress=False)
    assert len(stops) >= 1


def _db_accuracy_by_sample(workdir: Path) -> dict[str, float]:
    """Final metric of every trial, keyed by its sample, from NNI's own database (metric's parameterId)."""
    # NNI also links workdir/_latest to the experiment's folder.
    (db,) = (p for p in workdir.glob("*/db/nni.sqlite") if not p.parent.parent.is_symlink())
    con = sqlite3.connect(db)
    try:
        samples = {}
        for (data,) in con.execute("SELECT data FROM TrialJobEvent WHERE data IS NOT NULL AND data != ''"):
            param = json.loads(data)
            samples[int(param["parameter_id"])] = json.dumps(param["parameters"]["sample"], sort_keys=True)
        metrics = {}
        for pid, data in con.execute("SELECT parameterId, data FROM MetricData WHERE type = 'FINAL'"):
            value = json.loads(data)
            value = json.loads(value) if isinstance(value, str) else value
            metrics[samples[int(pid)]] = float(value["default"] if isinstance(value, dict) else value)
    finally:
        con.close()
    return metrics


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_training_service_random(tmp_path: Path) -> None:
    before = nni_processes()
    space = small_space()
    try:
        results = run_multitrial(space, classification_evaluator("digits", epochs=1), Random(seed=0),
                                 example_input=X, max_trials=2, engine="ts", workdir=tmp_path,
                                 port=free_port(), progress=False)
        check_results(space, results, 2)
        assert len({json.dumps(r.sample, sort_keys=True) for r in results}) == 2
        # Every accuracy recorded in this process is the one its own trial process reported.
        db = _db_accuracy_by_sample(tmp_path)
        assert len(db) == 2
        for r in results:
            assert r.accuracy == pytest.approx(db[json.dumps(r.sample, sort_keys=True)])
    finally:
        # The NNI manager and the trial processes are gone (give the node process a moment to exit).
        deadline = time.monotonic() + 20
        while (stray := set(nni_processes()) - set(before)) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not stray, {pid: cmd for pid, cmd in nni_processes().items() if pid in stray}
