"""Latency tables: nni-udc profile writes a target file that is read back and used by a search."""
from __future__ import annotations

import random

import pytest
import torch
import yaml

from nni_udc.cli import main
from nni_udc.evaluators import CostProfiler, LayerSpec, exact_costs
from nni_udc.evaluators.latency import LatencyEntry, latency_cost, latency_steps
from nni_udc.evaluators.targets import TargetError, load_target
from nni_udc.spaces import DigitsSpace
from nni_udc.strategies import UDC, ExpectedCost

X = torch.zeros(1, 1, 8, 8)


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    path = tmp_path_factory.mktemp("latency") / "latency.yaml"
    assert main(["profile", "--space", "digits", "--out", str(path), "--repeats", "5", "--warmup", "2"]) == 0
    return path


def test_profile_times_every_layer_configuration_and_the_target_reads_it_back(table):
    target = load_target(str(table))
    assert target.optimise == "latency_ms" and target.units["latency_ms"] == "ms"
    torch.manual_seed(0)
    space = DigitsSpace()
    expression = CostProfiler(space, X, target.cost()).expression
    expected = ExpectedCost(expression)
    rng = random.Random(0)
    for _ in range(3):
        sample = {label: rng.choice(c.values) for label, c in space.simplify().items()}
        model = space.freeze(sample)
        (exact,) = exact_costs(model, X, [target.cost()]).values()
        assert exact > 0
        assert float(expression.freeze(sample)) == pytest.approx(exact, rel=1e-9)
        assert float(expected(ExpectedCost.one_hot(sample, expected.labels))) == pytest.approx(exact, rel=1e-9)


def test_timed_layers_cost_their_measurement_and_others_are_interpolated():
    entries = [LatencyEntry("conv", 8, c, 3, 1, 64, 0.01 * c) for c in (8, 16, 32)]
    cost = latency_cost(entries)
    assert cost(entries[1].spec()) == pytest.approx(0.16)
    untimed = LayerSpec("x", "conv", 8, 24, (3, 3), positions=64)  # between 16 and 32 channels: linear in MACs
    assert cost(untimed) == pytest.approx(0.24, rel=1e-6)


def test_rank_candidates_thinned_to_latency_steps():
    entries = [LatencyEntry("conv", 16, r, 3, 1, 64, ms) for r, ms in ((2, 1.0), (4, 1.01), (8, 1.5), (12, 1.52), (16, 2.0))]
    assert latency_steps(entries, [2, 4, 8, 12, 16], {"in_channels": 16, "kernel": 3}) == [2, 8, 16]
    with pytest.raises(ValueError, match="out_channels=6 was not timed"):
        latency_steps(entries, [2, 6], {"in_channels": 16, "kernel": 3})


@pytest.mark.parametrize("cost, match", [
    ("{kind: latency_table}", "needs 'entries'"),
    ("{kind: latency_table, table: missing.yaml}", "missing.yaml', which does not exist"),
    ("{kind: latency_table, entries: [{kind: conv, ms: 1}]}", "malformed entry"),
])
def test_malformed_latency_targets(tmp_path, cost, match):
    path = tmp_path / "bad.yaml"
    path.write_text(f"name: bad\noptimise: latency_ms\ncosts:\n  latency_ms: {cost}\n")
    with pytest.raises(TargetError, match=match):
        load_target(str(path))


@pytest.mark.slow
def _steady_table(table, path):
    """The measured table with each entry's time replaced by one that grows with its MACs.

    Times measured on a busy CI machine can make a wider layer cheaper than a narrower one; the search below must
    not depend on that noise, only on reading a latency table back and using it.
    """
    document = yaml.safe_load(table.read_text())
    for entry in document["costs"]["latency_ms"]["entries"]:
        macs = entry["in_channels"] * entry["out_channels"] * entry["kernel"] ** 2 // entry["groups"] * entry["positions"]
        entry["ms"] = 0.01 + macs * 1e-6
    path.write_text(yaml.safe_dump(document))
    return path


def test_search_uses_the_latency_table(table, tmp_path):
    from nni.nas.experiment import NasExperiment, NasExperimentConfig

    from nni_udc.evaluators.lightning import classification_evaluator

    table = _steady_table(table, tmp_path / "steady.yaml")

    config = NasExperimentConfig("sequential", "raw")
    config.experiment_working_directory = str(tmp_path)
    torch.manual_seed(0)
    strategy = UDC(hardware=str(table), weight=1.0, seed=0, arc_learning_rate=0.05)
    assert strategy.cost_name == "latency_ms"
    NasExperiment(DigitsSpace(), classification_evaluator("digits", epochs=1), strategy, config).run(debug=False)
    model = strategy.list_models().__next__().executable_model()
    measured = load_target(str(table)).cost()
    assert strategy.result.costs["latency_ms"] == pytest.approx(exact_costs(model, X, [measured])["latency_ms"])
    assert strategy.result.costs["latency_ms"] < strategy.result.reference_costs["latency_ms"]
