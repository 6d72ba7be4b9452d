"""PSNR through the front, the study and the uniform baseline; the front says where its costs come from; the
outer loop refuses several training devices (issue 14, items 2, 3; issue 13, item 2)."""
from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nni_udc.config import ConfigError, check_pareto, parse_config
from nni_udc.experiment import run_baseline, run_pareto
from nni_udc.pareto import Point, compare, format_comparison, format_front, read_baseline, read_front, write_front
from nni_udc.pareto.files import RunFileError
from nni_udc.pareto.front import plot_front
from nni_udc.pareto.metric import PSNR, metric_of_data

NNI_UDC = str(Path(sys.executable).parent / "nni-udc")


def _psnr_points() -> list[Point]:
    return [Point(0, 27.5, 0.05, test_accuracy=26.0, costs={"memory_bits": 500.0}),
            Point(1, 29.0, 0.2, test_accuracy=28.4, costs={"memory_bits": 2000.0}),
            Point(2, 28.0, 0.3, test_accuracy=27.0, costs={"memory_bits": 3000.0})]


def test_the_metric_follows_the_data_set():
    assert metric_of_data("sr") is PSNR and metric_of_data("digits").name == "accuracy"


def test_psnr_fronts_are_written_read_and_labelled(tmp_path):
    points = _psnr_points()
    csv_path, json_path = write_front(points[:2], tmp_path, cost="memory_bits", hv=1.0, reference=(20.0, 1.0),
                                      variable="target", points=points, metric="psnr",
                                      cost_sources={"memory_bits": "formula", "params": "formula"})
    data = read_front(json_path)
    assert data["metric"] == "psnr" and data["cost_sources"]["memory_bits"] == "formula"
    assert [p.accuracy for p in data["points"]] == [27.5, 29.0, 28.0]
    with csv_path.open() as f:
        rows = list(csv.DictReader(f))
    assert {"psnr", "test_psnr", "cost_source"} <= set(rows[0]) and "accuracy" not in rows[0]
    assert rows[1]["psnr"] == "29.0" and rows[1]["cost_source"] == "formula"
    table = format_front(points[:2], cost="memory_bits", variable=None, metric="psnr")
    assert "val PSNR" in table and "test PSNR" in table and "28.40" in table
    # a front file without a metric is accuracy's: a value of 27.5 is not one
    raw = json.loads(json_path.read_text())
    del raw["metric"]
    json_path.write_text(json.dumps(raw))
    with pytest.raises(RunFileError, match=r"reference_point\.accuracy: must be a number in \[0, 1\], but got 20\.0"):
        read_front(json_path)


def test_the_plot_labels_psnr_and_states_the_cost_source(tmp_path):
    png, html = plot_front(_psnr_points(), tmp_path, cost="memory_bits", title="sr run", metric="psnr",
                           subtitle="memory_bits of the searches: formula")
    text = html.read_text()
    assert png.stat().st_size > 0
    assert "validation PSNR (dB)" in text and "memory_bits of the searches: formula" in text


def test_compare_by_psnr_uses_a_bar_one_db_under_the_best_baseline():
    searched = _psnr_points()
    uniform = [Point(0, 26.0, 0.1, test_accuracy=25.0), Point(1, 28.0, 0.4, test_accuracy=28.0),
               Point(2, 29.0, 0.8, test_accuracy=29.0)]
    result = compare(uniform, searched, reference=(20.0, 1.0), metric="psnr")
    assert result.min_accuracy == 28.0  # best baseline test PSNR 29.0 minus 1 dB
    # uniform 0 (25.0 dB at 0.1) <- searched 0 (26.0 at 0.05): 2x; uniform 1 (28.0 at 0.4) <- searched 1 (28.4 at
    # 0.2): 2x; uniform 2 (29.0) has no searched point as good: 0
    assert [m.ratio for m in result.matches] == [2.0, 2.0, 0.0]
    assert result.median_ratio == 1.0 and result.never_worse is False  # over uniform 1 and 2 (>= 28.0 dB)
    text = format_comparison(result, cost="memory_bits")
    assert "with the same or better test PSNR (* = test PSNR >= 28.00 dB)" in text
    assert "test-PSNR hypervolume (reference point: PSNR 20.00 dB, relative cost 1)" in text
    assert "test PSNR" in text.splitlines()[0]
    assert math.isclose(result.search_hypervolume, 6.0 * 0.15 + 8.4 * 0.8)  # (26-20)(0.2-0.05) + (28.4-20)(1-0.2)


def test_the_reference_point_is_in_db_for_super_resolution():
    sr = parse_config({"space": "edsr-sr", "data": {"name": "sr"}, "pareto": {"reference_point": [25, 1.0]}}, "x.yaml")
    assert sr.pareto.reference_point == (25.0, 1.0)
    with pytest.raises(ConfigError, match=r"pareto\.reference_point: must be \[PSNR in dB, relative cost\]"):
        parse_config({"space": "edsr-sr", "data": {"name": "sr"}, "pareto": {"reference_point": [-1, 1.0]}}, "x.yaml")
    with pytest.raises(ConfigError, match=r"pareto\.reference_point: must be \[accuracy, relative cost\]"):
        parse_config({"space": "digits", "pareto": {"reference_point": [25, 1.0]}}, "x.yaml")


@pytest.mark.parametrize("command, run", [("pareto", lambda c, out: run_pareto(c, progress=False)),
                                          ("baseline", lambda c, out: run_baseline(c, output=out, progress=False))])
def test_the_outer_loop_and_the_baseline_refuse_several_devices(command, run, tmp_path):
    """Without the guard a 2-device study trained two trials as one DDP group; one line and status 2 instead."""
    config = parse_config({"space": "digits", "training": {"devices": 2, "accelerator": "cpu"}}, "exp.yaml")
    message = f"training.devices: nni-udc {command} trains on one device, but got 2; use 1"
    with pytest.raises(ConfigError, match=r"^exp\.yaml: " + message.replace(".", r"\.")):
        check_pareto(config, command=f"nni-udc {command}")
    with pytest.raises(ConfigError, match=r"training\.devices"):
        run(config, tmp_path / "api")
    assert not (tmp_path / "api").exists()
    experiment = tmp_path / "exp.yaml"
    experiment.write_text(f"space: digits\ntraining: {{devices: 2, accelerator: cpu}}\noutput: {tmp_path / 'run'}\n")
    done = subprocess.run([NNI_UDC, command, str(experiment)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"nni-udc {command}: error: {experiment}: {message} (several devices (DDP) serve one search: nni-udc search)")
    assert not (tmp_path / "run").exists()


def test_a_tiny_super_resolution_front_end_to_end(tmp_path):
    """The udc-sr example's code path in miniature: two searches of one epoch on two patches per image, the
    uniform grid of two models, the front and the comparison in PSNR."""
    config = parse_config({
        "name": "tiny-sr",
        "space": {"name": "edsr-sr", "args": {"widths": [4], "max_depth": 1, "weight_bits": [4, 8],
                                              "sparsity": [0.0]}},
        "data": {"name": "sr", "args": {"patches": 2}},
        "training": {"epochs": 1, "finetune_epochs": 1, "batch_size": 8, "learning_rate": 0.01, "accelerator": "cpu"},
        "pareto": {"trials": 2, "initial": 2, "low": 0.3, "high": 0.9, "reference_point": [5.0, 1.0]},
        "output": str(tmp_path / "run")}, "tiny-sr.yaml")
    outcome = run_pareto(config, progress=False)
    assert len(outcome.points) == 2 and outcome.baseline is not None and len(outcome.baseline.points) == 2
    for p in outcome.points + outcome.baseline.points:
        assert p.test_accuracy is not None and 5.0 < p.accuracy < 60.0 and 5.0 < p.test_accuracy < 60.0  # dB
    front = json.loads((tmp_path / "run" / "front.json").read_text())
    assert front["metric"] == "psnr" and front["cost_sources"]["memory_bits"] == "formula"
    assert read_baseline(tmp_path / "run" / "baseline.json")["metric"] == "psnr"
    with (tmp_path / "run" / "front.csv").open() as f:
        header = next(csv.reader(f))
    assert header[:6] == ["number", "target", "psnr", "test_psnr", "relative_cost", "seconds"]
    assert "cost_source" in header
    html = (tmp_path / "run" / "front.html").read_text()
    assert "validation PSNR (dB)" in html and "memory_bits of the searches: formula" in html
    assert outcome.comparison is not None and outcome.comparison.metric == "psnr"
    assert outcome.hypervolume > 0
    report = json.loads((Path(outcome.points[0].output) / "report.json").read_text())
    assert report["accuracy"] == pytest.approx(outcome.points[0].accuracy)


def test_a_multi_trial_search_ranks_and_retrains_by_psnr(tmp_path):
    """NNI's multi-trial strategies read the SR evaluator's only metric (validation PSNR), and the found model is
    retrained with the L1 loss and scored in dB."""
    from nni_udc.experiment import run_search

    config = parse_config({
        "space": {"name": "edsr-sr", "args": {"widths": [4, 8], "max_depth": 1, "weight_bits": [4, 8],
                                              "sparsity": [0.0]}},
        "data": {"name": "sr", "args": {"patches": 2}},
        "training": {"epochs": 1, "finetune_epochs": 1, "batch_size": 8, "accelerator": "cpu"},
        "strategy": {"name": "random", "max_trials": 2}, "search": {"target": 0.9}}, "mt.yaml")
    outcome = run_search(config, output=tmp_path / "run")
    assert 5.0 < outcome.accuracy < 60.0 and 5.0 < outcome.test_accuracy < 60.0  # dB, not a fraction
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["accuracy"] == pytest.approx(outcome.accuracy)
