"""The uniform-compression baseline: its grid, its runs (resumable, deterministic) and the comparison with a search."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nni_udc.cli import main
from nni_udc.config import ConfigError, load_config, parse_config
from nni_udc.data.traced import BundledSplit
from nni_udc.experiment import _cost_probe, quiet, resolve_budget, run_baseline, run_pareto
from nni_udc.pareto import Point, compare, format_comparison, hypervolume, non_dominated
from nni_udc.pareto.compare import match_baseline, median_ratio, never_worse
from nni_udc.spaces import DigitsSpace, SparseCellSpace
from nni_udc.strategies import uniform_grid
from nni_udc.strategies.uniform import uniform_kinds

NNI_UDC = str(Path(sys.executable).parent / "nni-udc")
X = torch.zeros(1, 1, 8, 8)
N = {split: len(BundledSplit("digits", split)) for split in ("val", "test")}
TINY_ARGS = dict(widths=[8], weight_bits=[4], stem_bits=[4], sparsity=[0.0, 0.5], head_bits=[8])
TINY_SPACE = "{name: digits, args: {widths: [8], weight_bits: [4], stem_bits: [4], sparsity: [0.0, 0.5], head_bits: [8]}}"


# ----- the grid ------------------------------------------------------------------------------------------------

def test_digits_grid_size_worked_out_by_hand():
    space = DigitsSpace()
    grid = uniform_grid(space)
    # op conv: bits {2, 4, 8} x sparsity {0, 0.5, 0.75} = 9; op lowrank: bits x rank {2, 4, 8} = 9; op sparse:
    # bits x DASS sparsity {0.5, 0.75} = 6 (b_block quantises every candidate op; s_block is the conv's only, so
    # the sparsity kind holds 0 under the others); x head bits {4, 8} x width {8, 24}
    assert len(grid) == (9 + 9 + 6) * 2 * 2 == 96
    assert len({json.dumps(s, sort_keys=True) for s in grid}) == len(grid)
    assert {s["width"] for s in grid} == {8, 24}  # structural: smallest and largest only
    assert {s["op"] for s in grid} == {"conv", "lowrank", "sparse"}
    for s in grid:
        assert set(s) == set(space.simplify())
        assert s["b_stem"] == s["b_block"] == s["b_down"] and s["s_block"] == s["s_down"]
        assert s["head_g0"] == s["head_g1"]
        if s["op"] != "conv":  # the sparsity kind has s_block inside the conv candidate: held at its first value
            assert s["s_down"] == 0.0
        space.freeze(s)  # every sample is a valid architecture


def test_kinds_group_labels_by_argument_and_candidates():
    kinds = {(k.role, k.labels): k.values for k in uniform_kinds(DigitsSpace(head_bits=[0, 4, 8]))}
    assert kinds[("weight_bits", ("b_stem", "b_block", "b_down"))] == (2, 4, 8)
    assert kinds[("sparsity", ("s_block", "s_down"))] == (0.0, 0.5, 0.75)
    assert kinds[("sparsity", ("s_dass",))] == (0.5, 0.75)  # another candidate list: another kind
    assert kinds[("channel_bits", ("head_g0", "head_g1"))] == (4, 8)  # 0 = removed channel is not used
    assert kinds[("structural", ("width",))] == (8, 24)


def test_sparse_cell_grid_is_one_op_on_every_edge():
    space = SparseCellSpace()
    grid = uniform_grid(space)
    assert len(grid) == 3
    assert [set(s.values()) for s in grid] == [{"conv"}, {"sparse50"}, {"sparse90"}]  # no skip, no pooling


@pytest.mark.parametrize("sample, bits", [
    # (weights x bits + 32-bit biases) stem 1->8 at 4 bits: 72 x 4 + 8 x 32 = 544; block 8->8 at 4 bits, dense:
    # 576 x 4 + 256 = 2,560; down 8->32: 2,304 x 4 + 32 x 32 = 10,240; head 32->10 at 8 bits: 320 x 8 + 320 = 2,880;
    # and a 16-bit scale per output channel: (8 + 8 + 32 + 10) x 16 = 928
    (dict(width=8, op="conv", b_block=4, s_block=0.0, b_down=4, s_down=0.0, head_g0=8, head_g1=8), 17_152),
    # stem 1->24 at 2 bits, dense: 216 x 2 + 768 = 1,200; block 24->24, 2 bits, 75 % sparse, the bitmap encoding
    # is cheaper: 0.25 x 5,184 x 2 + 5,184 (one bit per position) + 768 = 8,544; down 24->32:
    # 0.25 x 6,912 x 2 + 6,912 + 1,024 = 11,392; head at 4 bits: 320 x 4 + 320 = 1,600;
    # scales: (24 + 24 + 32 + 10) x 16 = 1,440
    (dict(width=24, op="conv", b_block=2, s_block=0.75, b_down=2, s_down=0.75, head_g0=4, head_g1=4), 24_176),
])
def test_memory_bits_of_grid_points_worked_out_by_hand(sample, bits):
    space = DigitsSpace()
    full = next(s for s in uniform_grid(space) if all(s[k] == v for k, v in sample.items()))
    config = parse_config({"space": "digits", "strategy": {"name": "uniform"}}, "inline")
    cost, _, costs_of = _cost_probe(config, space, X)  # as run_baseline and the searches measure
    assert cost == "memory_bits" and costs_of(full)["memory_bits"] == bits


# ----- running the grid ----------------------------------------------------------------------------------------

def _write(directory: Path, *, strategy: str = "{name: uniform}", extra: str = "") -> Path:
    path = directory / "exp.yaml"
    path.write_text(f"""\
name: tiny
space: {TINY_SPACE}
training: {{epochs: 1, finetune_epochs: 0}}
strategy: {strategy}
output: {directory / 'run'}
{extra}""")
    return path


@pytest.fixture(scope="module")
def baseline_run(tmp_path_factory):
    directory = tmp_path_factory.mktemp("baseline")
    path = _write(directory)
    run = subprocess.run([NNI_UDC, "baseline", str(path)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return path, directory / "run", run.stdout


def test_the_command_writes_one_row_per_grid_model(baseline_run):
    path, out, stdout = baseline_run
    grid = uniform_grid(DigitsSpace(**TINY_ARGS))
    assert len(grid) == 7  # conv: sparsity {0, 0.5}; lowrank: rank {2, 4, 8}; sparse: DASS sparsity {0.5, 0.75}
    with (out / "baseline.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [json.loads(r["architecture"]) for r in rows] == grid
    saved = json.loads((out / "baseline.json").read_text())
    for row, point in zip(rows, saved["points"]):
        assert float(row["relative_cost"]) == pytest.approx(float(row["memory_bits"]) / saved["reference_costs"]["memory_bits"])
        for split in ("val", "test"):  # accuracies are counts of the 359 digits of each split, not batch means
            value = float(row["accuracy" if split == "val" else "test_accuracy"])
            assert value * N[split] == pytest.approx(round(value * N[split]), abs=1e-6), (split, value)
        assert point["test_accuracy"] == float(row["test_accuracy"])
    assert saved["settings"]["epochs"] == 1 and "7 uniform models (7 trained now" in stdout


def test_running_it_again_trains_nothing(baseline_run):
    path, out, _ = baseline_run
    before = {name: ((out / name).read_bytes(), (out / name).stat().st_mtime_ns) for name in ("baseline.csv", "baseline.json")}
    assert main(["baseline", str(path)]) == 0
    assert {name: ((out / name).read_bytes(), (out / name).stat().st_mtime_ns) for name in before} == before


def test_results_do_not_depend_on_worker_processes_and_missing_models_are_trained(baseline_run, tmp_path):
    path, out, _ = baseline_run
    config = load_config(path)
    saved = json.loads((out / "baseline.json").read_text())
    partial = dict(saved, points=saved["points"][:2] + saved["points"][4:])  # as if killed: two models missing
    (tmp_path / "baseline.json").write_text(json.dumps(partial))
    outcome = run_baseline(config, output=tmp_path, progress=False, workers=2)
    assert outcome.trained == 2
    again = json.loads((tmp_path / "baseline.json").read_text())
    key = ("number", "accuracy", "test_accuracy", "relative_cost", "costs", "architecture")
    assert [{k: p[k] for k in key} for p in again["points"]] == [{k: p[k] for k in key} for p in saved["points"]]


def test_resuming_keeps_the_accuracies_and_measures_the_costs_again(baseline_run, tmp_path):
    """A baseline file written before a cost formula changed (here: costs doubled by hand) is re-costed, not retrained."""
    path, out, _ = baseline_run
    saved = json.loads((out / "baseline.json").read_text())
    stale = dict(saved, points=[dict(p, costs={k: 2 * v for k, v in p["costs"].items()}, relative_cost=2 * p["relative_cost"])
                                for p in saved["points"]])
    (tmp_path / "baseline.json").write_text(json.dumps(stale))
    outcome = run_baseline(load_config(path), output=tmp_path, progress=False, workers=1)
    assert outcome.trained == 0
    assert [p.costs for p in outcome.points] == [p["costs"] for p in saved["points"]]
    assert [p.test_accuracy for p in outcome.points] == [p["test_accuracy"] for p in saved["points"]]


def test_a_file_trained_otherwise_is_not_reused(baseline_run):
    path, out, _ = baseline_run
    other = path.parent / "other.yaml"
    other.write_text(path.read_text().replace("epochs: 1,", "epochs: 2,"))
    with pytest.raises(ConfigError, match=r"baseline\.json: settings\.epochs: its models were trained with 1, but "
                                          r".*other\.yaml gives 2; remove the baseline files"):
        run_baseline(load_config(other), output=out, progress=False)


def test_search_with_the_uniform_strategy_runs_the_grid(baseline_run, capsys):
    path, out, _ = baseline_run
    assert main(["search", str(path)]) == 0
    assert "7 uniform models (0 trained now, 7 kept from before)" in capsys.readouterr().out


# ----- against a search ------------------------------------------------------------------------------------------

@pytest.mark.slow  # a real NNI experiment
def test_pareto_runs_the_baseline_draws_it_and_compares(tmp_path, capsys):
    path = _write(tmp_path, strategy="{name: udc}",
                  extra="search: {target: 0.3}\npareto: {trials: 1, initial: 1, low: 0.2, high: 0.5}\n")
    config = load_config(path)
    assert config.pareto.baseline  # the default
    with quiet():
        outcome = run_pareto(config, progress=False)
    assert outcome.baseline is not None and len(outcome.baseline.points) == 7
    assert outcome.comparison is not None
    assert [m.baseline for m in outcome.comparison.matches] == non_dominated(outcome.baseline.points,
                                                                             accuracy="test_accuracy")
    assert outcome.comparison.search_hypervolume == hypervolume(outcome.points, (0.0, 1.0), accuracy="test_accuracy")
    html = (config.output / "front.html").read_text()
    assert "uniform baseline: Pareto front" in html and "searches: Pareto front" in html
    assert (config.output / "front.png").stat().st_size > 0
    assert main(["show", str(config.output)]) == 0
    shown = capsys.readouterr().out
    assert "The search against the uniform baseline (test accuracy)" in shown
    assert f"search {outcome.comparison.search_hypervolume:.4f}, uniform baseline " in shown


def test_pareto_baseline_can_be_switched_off_and_is_validated(tmp_path):
    assert not parse_config({"space": "digits", "pareto": {"baseline": False}}, "inline").pareto.baseline
    with pytest.raises(ConfigError, match=r"x\.yaml: pareto\.baseline: must be true or false, but got 'yes'"):
        parse_config({"space": "digits", "pareto": {"baseline": "yes"}}, "x.yaml")


def test_uniform_is_a_strategy_name_and_takes_no_arguments():
    with pytest.raises(ConfigError, match=r"strategy\.name: must be one of .*grid-search, uniform, but got 'unifrom'"):
        parse_config({"space": "digits", "strategy": {"name": "unifrom"}}, "x.yaml")
    with pytest.raises(ConfigError, match=r"strategy\.args: must be empty: uniform takes no arguments"):
        parse_config({"space": "digits", "strategy": {"name": "uniform", "args": {"seed": 1}}}, "x.yaml")
    config = parse_config({"space": "digits", "strategy": {"name": "uniform"}}, "x.yaml")
    assert config.strategy.baseline and not config.strategy.one_shot and not config.strategy.multi_trial


def test_pareto_refuses_the_uniform_strategy(tmp_path, capsys):
    path = _write(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["pareto", str(path)])
    assert exit_info.value.code == 2
    assert "'nni-udc baseline' for the uniform grid" in capsys.readouterr().err


def test_the_budget_recorded_is_the_one_resolved():
    config = parse_config({"space": "digits", "search": {"target": 0.06, "weight": 0.5}}, "inline")
    assert resolve_budget(config) == (0.06, 0.5)  # from the file
    assert resolve_budget(config, target=0.1) == (0.1, 0.5)
    assert resolve_budget(config, weight=2.0) == (None, 2.0)  # a weight alone: a λ-only search
    evolution = parse_config({"space": "digits", "strategy": {"name": "random"}, "search": {"target": 0.2}}, "inline")
    assert resolve_budget(evolution) == (0.2, None)


# ----- the comparison on hand-made points ------------------------------------------------------------------------

def _p(number: int, test: float, cost: float, val: float = 0.5) -> Point:
    return Point(number, val, cost, test_accuracy=test, costs={"memory_bits": cost * 1000})


SEARCHED = [_p(0, 0.90, 0.01), _p(1, 0.96, 0.02), _p(2, 0.975, 0.08), _p(3, 0.95, 0.05)]
UNIFORM = [_p(0, 0.93, 0.04), _p(1, 0.96, 0.10), _p(2, 0.98, 0.30), _p(3, 0.95, 0.20), _p(4, 0.97, 0.12)]


def test_matches_ratios_and_median():
    matches = match_baseline(UNIFORM, SEARCHED)
    # uniform front by test accuracy: 0 (0.93, 0.04), 1 (0.96, 0.10), 4 (0.97, 0.12), 2 (0.98, 0.30); 3 is dominated
    assert [(m.baseline.number, m.searched.number if m.searched else None) for m in matches] == [
        (0, 1), (1, 1), (4, 2), (2, None)]
    assert [m.ratio for m in matches] == pytest.approx([2.0, 5.0, 1.5, 0.0])  # 0: no search reaches 0.98
    assert median_ratio(matches) == pytest.approx(1.5)  # of 5.0, 1.5 and 0 (a loss): 0.93 is below the bar
    assert median_ratio(matches, min_accuracy=0.99) is None
    assert median_ratio(matches[:3], min_accuracy=0.9) == pytest.approx(2.0)


def test_never_worse():
    matches = match_baseline(UNIFORM, SEARCHED)
    assert never_worse(matches) is False  # nothing searched reaches 0.98
    assert never_worse(matches[:3]) is True
    assert never_worse(match_baseline(UNIFORM, [_p(0, 0.97, 0.15), _p(1, 0.99, 0.2)])) is False  # 0.96 at 0.10 beats it
    assert never_worse(matches, min_accuracy=0.99) is None


def test_hypervolumes_use_test_accuracy_and_one_reference():
    result = compare(UNIFORM, SEARCHED, reference=(0.0, 1.0))
    # searched test front: (0.01, 0.90), (0.02, 0.96), (0.08, 0.975)
    assert result.search_hypervolume == pytest.approx(0.01 * 0.90 + 0.06 * 0.96 + 0.92 * 0.975)
    assert result.baseline_hypervolume == pytest.approx(0.06 * 0.93 + 0.02 * 0.96 + 0.18 * 0.97 + 0.70 * 0.98)
    text = format_comparison(result, cost="memory_bits")
    assert "median ratio over the 3 uniform front points with test accuracy >= 0.95: 1.50x" in text
    assert "0 (not reached)" in text
    assert "search never worse than uniform there: no" in text
