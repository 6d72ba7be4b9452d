"""One supernet for the whole front: trained once per study, every search starts from its weights."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from nni_udc.config import load_config
from nni_udc.experiment import quiet, run_pareto


def _config(directory: Path) -> Path:
    path = directory / "exp.yaml"
    path.write_text(f"""\
name: shared
space: {{name: digits, args: {{widths: [8], weight_bits: [2, 8], sparsity: [0.0, 0.5], head_bits: [8]}}}}
training: {{epochs: 1, finetune_epochs: 1}}
strategy: {{name: udc, args: {{candidates: 2, refine: 1}}}}
search: {{target: 0.1}}
pareto: {{trials: 2, low: 0.1, high: 0.3, initial: 2, baseline: false, supernet_epochs: 1}}
output: {directory / 'run'}
""")
    return path


@pytest.mark.slow
def test_a_study_trains_its_supernet_once_and_every_search_starts_from_it(tmp_path):
    config = load_config(_config(tmp_path))
    with quiet():
        outcome = run_pareto(config, progress=False)
    supernet = tmp_path / "run" / "supernet.pt"
    assert supernet.exists() and not (tmp_path / "run" / "supernet.pt.partial").exists()
    assert len(outcome.points) == 2
    made = supernet.stat().st_mtime_ns
    saved = torch.load(supernet, weights_only=True)
    assert saved and not any("alpha" in key for key in saved)
    for point in outcome.points:  # every search is within its budget
        report = json.loads((Path(point.output) / "report.json").read_text())
        assert report["relative_cost"] <= report["target"]
        assert report["supernet"] == str(supernet)  # the search started from the shared weights
    # resuming with more searches reuses the supernet: not trained again
    base = load_config(_config(tmp_path))
    more = replace(base, pareto=replace(base.pareto, trials=3))
    assert len(run_pareto(more, progress=False).points) == 3
    assert supernet.stat().st_mtime_ns == made


# ----- single-path training and the sampled candidates ------------------------------------------------------------

def _tiny_supernet():
    from nni_udc.spaces import DigitsSpace
    from nni_udc.strategies import UDC

    space = DigitsSpace(widths=[8], weight_bits=[2, 8], sparsity=[0.0, 0.5], head_bits=[8], stem_bits=[8])
    strategy = UDC(cost="memory_bits", target=0.1)
    strategy.prepare_cost(space, torch.zeros(2, 1, 8, 8))
    return strategy, strategy.mutate_model(space)


def test_sandwich_takes_the_extremes_of_numeric_labels_and_draws_the_rest():
    import random

    from nni.mutable import Categorical

    from nni_udc.strategies.single_path import sandwich

    choices = {"b": Categorical([4, 2, 8], label="b"), "op": Categorical(["conv", "lowrank"], label="op")}
    samples = sandwich(choices, random.Random(1), random_samples=3)
    assert len(samples) == 5
    assert [s["b"] for s in samples[:2]] == [8, 2]
    assert all(s["op"] in ("conv", "lowrank") for s in samples)


def test_single_path_training_lowers_every_sampled_loss_and_keeps_the_architecture_parameters():
    from torch.utils.data import DataLoader

    from nni_udc.data.traced import BundledSplit
    from nni_udc.strategies.single_path import train_single_path
    from nni_udc.strategies.udc import _SupernetScore

    strategy, supernet = _tiny_supernet()
    dist = strategy.distribution
    before = dist.state()
    arch = DataLoader(BundledSplit("digits", "train", part="arch"), batch_size=216)
    score = _SupernetScore(supernet, dist, type("E", (), {"val_dataloaders": arch, "module": None})())
    small = {label: min(c.values) for label, c in dist.choices.items() if label != "op"} | {"op": "conv"}
    untrained = score(small)
    loader = DataLoader(BundledSplit("digits", "train", part="weights"), batch_size=64, shuffle=True)
    losses = train_single_path(supernet, dist, loader, epochs=5, seed=0)
    assert losses[-1] < losses[0]
    score = _SupernetScore(supernet, dist, type("E", (), {"val_dataloaders": arch, "module": None})())  # new weights
    assert score(small) < 0.7 * untrained  # the smallest (all 2-bit) model itself learnt: 2.32 -> 1.32 seen
    assert all(torch.equal(before[label], after) for label, after in dist.state().items())


def test_sampled_candidates_are_within_budget_and_seeded():
    from nni_udc.strategies.udc import _compiled_cost, _random_within

    strategy, _ = _tiny_supernet()
    cost = _compiled_cost(strategy._profiler.expression)
    costs = sorted(cost(s) for s in _random_within(strategy.distribution.choices, cost, float("inf"), 200, seed=0))
    budget = costs[len(costs) // 2]  # about half of all architectures fit
    first = _random_within(strategy.distribution.choices, cost, budget, 20, seed=3)
    assert len(first) == 20 and all(cost(s) <= budget for s in first)
    assert first == _random_within(strategy.distribution.choices, cost, budget, 20, seed=3)
    assert _random_within(strategy.distribution.choices, cost, 0.0, 5, seed=0, tries=10) == []  # nothing fits: none



@pytest.mark.slow
def test_uniform_starts_export_no_model_the_supernet_ranks_below_uniform_compression(tmp_path):
    """With ``uniform=True`` the uniform grid's models within budget are candidates: the export scores at least as well."""
    from nni.nas.experiment import NasExperiment, NasExperimentConfig

    from nni_udc.evaluators.lightning import classification_evaluator
    from nni_udc.spaces import DigitsSpace
    from nni_udc.strategies import UDC, uniform_grid
    from nni_udc.strategies.udc import _compiled_cost, _SupernetScore

    space = DigitsSpace(widths=[8, 16], weight_bits=[2, 8], sparsity=[0.0, 0.5], head_bits=[8], stem_bits=[8])
    torch.manual_seed(0)
    strategy = UDC(target=0.1, seed=0, uniform=True)
    config = NasExperimentConfig("sequential", "raw")
    config.experiment_working_directory = str(tmp_path)
    NasExperiment(space, classification_evaluator("digits", epochs=1), strategy, config).run(debug=False)
    chosen = strategy.export_result().sample
    cost = _compiled_cost(strategy._profiler.expression)
    budget = 0.1 * strategy._rule.reference
    uniform = [s for s in uniform_grid(space) if cost(s) <= budget]
    assert len(uniform) >= 2  # the budget leaves a real choice among uniform models
    score = _SupernetScore(strategy._supernet, strategy.distribution, strategy.model_space.evaluator)
    assert cost(chosen) <= budget
    assert score(chosen) <= min(score(s) for s in uniform) + 1e-9


def test_parsimony_keeps_the_samples_within_that_many_standard_errors_of_the_best():
    """``UDC(parsimony=k)``: the one-standard-error rule on the supernet's paired per-sample losses."""
    from torch.utils.data import DataLoader

    from nni_udc.data.traced import BundledSplit
    from nni_udc.strategies.single_path import train_single_path
    from nni_udc.strategies.udc import _compiled_cost, _random_within, _SupernetScore

    torch.manual_seed(0)
    strategy, supernet = _tiny_supernet()
    dist = strategy.distribution
    loader = DataLoader(BundledSplit("digits", "train", part="weights"), batch_size=64, shuffle=True)
    train_single_path(supernet, dist, loader, epochs=2, seed=0)
    arch = DataLoader(BundledSplit("digits", "train", part="arch"), batch_size=64)
    score = _SupernetScore(supernet, dist, type("E", (), {"val_dataloaders": arch, "module": None})())
    cost = _compiled_cost(strategy._profiler.expression)
    def neighbours(s):  # one label away: some score alike (a label the op does not use: exactly alike)
        return [{**s, label: v} for label, c in dist.choices.items() for v in c.values if v != s[label]]

    samples = _random_within(dist.choices, cost, float("inf"), 12, seed=0)
    for _ in range(3):
        best = min(samples, key=score)
        samples += neighbours(best)
    best = min(samples, key=score)
    means = {tuple(sorted(s.items())): score(s) for s in samples}
    assert len(score.losses[next(iter(score.losses))][1]) == len(arch.dataset)  # one loss per image (216 < 4 batches)

    def key(s):
        return tuple(sorted(s.items()))

    exact = [key(s) for s in score.within(best, 0.0)]  # 0 errors: only as good as the best (itself)
    assert all(means[k] <= score(best) + 1e-6 for k in exact) and key(best) in exact
    assert {key(s) for s in score.within(best, 1e9)} == set(means)  # everything scored is within a huge tolerance
    one = {key(s) for s in score.within(best, 1.0)}
    for s in samples:  # the rule, computed here by hand from the stored per-sample losses
        d = score.losses[frozenset(s.items())][1] - score.losses[frozenset(best.items())][1]
        assert (key(s) in one) == (float(d.mean()) <= float(d.std()) / len(d) ** 0.5)
    assert len(one) > 1 and len(one) < len(means)  # after 2 epochs some are indistinguishable, some clearly worse


@pytest.mark.slow
def test_parsimony_exports_the_cheapest_candidate_scored_within_its_tolerance(tmp_path):
    """Through the budget fitter: a huge tolerance exports the cheapest scored candidate, none exports the best."""
    from nni.nas.experiment import NasExperiment, NasExperimentConfig

    from nni_udc.evaluators.lightning import classification_evaluator
    from nni_udc.spaces import DigitsSpace
    from nni_udc.strategies import UDC
    from nni_udc.strategies.udc import _compiled_cost, _SupernetScore

    space = DigitsSpace(widths=[8, 16], weight_bits=[2, 8], sparsity=[0.0, 0.5], head_bits=[8], stem_bits=[8])
    torch.manual_seed(0)
    strategy = UDC(target=0.2, seed=0, candidates=4, samples=30)
    config = NasExperimentConfig("sequential", "raw")
    config.experiment_working_directory = str(tmp_path)
    NasExperiment(space, classification_evaluator("digits", epochs=1), strategy, config).run(debug=False)
    argmax = strategy.distribution.argmax()
    cost = _compiled_cost(strategy._profiler.expression)
    score = _SupernetScore(strategy._supernet, strategy.distribution, strategy.model_space.evaluator)
    best = strategy._within_budget(argmax)  # parsimony 0: the lowest loss
    strategy.parsimony = 1e9
    cheapest = strategy._within_budget(argmax)
    assert cost(cheapest) < cost(best)  # the budget leaves room: the rule moved the export
    assert cost(cheapest) <= 0.2 * strategy._rule.reference and score(best) < score(cheapest)
    strategy.parsimony = 1.0
    chosen = strategy._within_budget(argmax)
    assert cost(cheapest) <= cost(chosen) <= cost(best)
    assert chosen == best or score(chosen) > score(best)  # a cheaper export gives up some (insignificant) loss
