"""`nni-udc retrain`: a finished pareto run's comparison again, every model retrained from scratch under several
seeds (means), resumable, refusing a file trained otherwise."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import yaml

from nni_udc.cli import main
from nni_udc.config import ConfigError, load_config
from nni_udc.experiment import RETRAINED_JSON, run_retrain
from nni_udc.pareto import Point, write_baseline, write_front
from nni_udc.pareto.files import RunFileError
from nni_udc.spaces import SparseCellSpace
from nni_udc.strategies import uniform_grid

SPACE = {"name": "sparse-cell", "args": {"channels": 4, "num_cells": 1}}  # 4 edges of 4 channels: fast to train


def _config_file(tmp_path: Path, **training: float) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({
        "name": "retrain-test", "space": SPACE, "data": {"name": "digits"},
        "training": {"epochs": 1, "finetune_epochs": 0, "learning_rate": 0.01, **training},
        "strategy": {"name": "dass"}, "output": str(tmp_path / "run")}))
    return path


def _finished_run(directory: Path) -> tuple[list[dict], list[dict]]:
    """front.json and baseline.json as a pareto run leaves them: 3 uniform models (all-conv is dominated by
    all-sparse50 on test accuracy and by all-sparse90 on validation accuracy) and 3 searches, two of which chose
    the same architecture (all-sparse50)."""
    space = SparseCellSpace(**SPACE["args"])
    grid = uniform_grid(space)  # all conv, all sparse50, all sparse90
    costs = [0.9, 0.5, 0.2]
    uniform = [Point(i, 0.9, c, test_accuracy=t, architecture=a)
               for i, (a, c, t) in enumerate(zip(grid, costs, [0.95, 0.96, 0.80]))]
    labels = sorted(space.simplify())
    mixed = {lb: ("sparse90" if i % 2 else "skip") for i, lb in enumerate(labels)}
    searched = [Point(0, 0.9, 0.1, test_accuracy=0.85, architecture=mixed),
                Point(1, 0.9, 0.5, test_accuracy=0.97, architecture=grid[1]),
                Point(2, 0.9, 0.5, test_accuracy=0.96, architecture=grid[1])]
    write_baseline(uniform, directory, cost="memory_bits", reference_costs={"memory_bits": 1.0}, settings={})
    write_front(searched, directory, cost="memory_bits", hv=0.0, reference=(0.0, 1.0), variable="target",
                points=searched)
    return [p.architecture for p in uniform], [p.architecture for p in searched]


def test_retrain_averages_every_seed_and_resumes(tmp_path):
    config = load_config(_config_file(tmp_path))
    uniform, searched = _finished_run(config.output)
    outcome = run_retrain(config, seeds=2, progress=False, workers=1)

    # retrained: the uniform front by test or validation accuracy (sparse50, sparse90; not the dominated all-conv)
    # and the 2 distinct searched architectures, one of them sparse50 again: 3 models x 2 seeds
    distinct = {json.dumps(a, sort_keys=True) for a in uniform[1:] + searched}
    assert [p.architecture for p in outcome.uniform] == uniform[1:]
    assert outcome.trained == len(distinct) * 2 == 6
    saved = json.loads((config.output / RETRAINED_JSON).read_text())
    assert set(saved["results"]) == distinct
    assert all(set(runs) == {"0", "1"} for runs in saved["results"].values())
    assert any(runs["0"] != runs["1"] for runs in saved["results"].values())  # the seeds are really different runs
    for point in outcome.uniform + outcome.searched:
        runs = saved["results"][json.dumps(point.architecture, sort_keys=True)].values()
        assert point.test_accuracy == pytest.approx(statistics.mean(t for _, t in runs))
        assert point.accuracy == pytest.approx(statistics.mean(v for v, _ in runs))
    # the comparison is made from the means, not from the single run's accuracies in the files
    assert [m.baseline.test_accuracy for m in outcome.comparison.matches] != [0.80, 0.96]
    assert outcome.searched[1].test_accuracy == outcome.searched[2].test_accuracy  # one architecture, one mean

    again = run_retrain(config, seeds=2, progress=False, workers=1)
    assert again.trained == 0 and again.comparison == outcome.comparison
    more = run_retrain(config, seeds=3, progress=False, workers=1)
    assert more.trained == len(distinct)  # only seed 2 was missing


def test_retrain_refuses_other_settings_and_a_missing_run(tmp_path):
    config = load_config(_config_file(tmp_path))
    with pytest.raises(ConfigError, match=r"front\.json: not found; run 'nni-udc pareto"):
        run_retrain(config, seeds=1, progress=False)
    _finished_run(config.output)
    run_retrain(config, seeds=1, progress=False, workers=1)
    other = load_config(_config_file(tmp_path, learning_rate=0.02))
    with pytest.raises(ConfigError, match=r"retrained\.json: settings\.learning_rate: .* 0\.01, but .* 0\.02"):
        run_retrain(other, seeds=1, progress=False)
    (config.output / RETRAINED_JSON).write_text('{"settings": {}, "results": [')  # a run killed mid-write elsewhere
    with pytest.raises(RunFileError, match=r"retrained\.json: not valid JSON"):
        run_retrain(config, seeds=1, progress=False)


def test_retrain_command_prints_the_comparison_and_exits_2_on_a_missing_run(tmp_path, capsys):
    path = _config_file(tmp_path)
    with pytest.raises(SystemExit) as exited:
        main(["retrain", str(path)])
    assert exited.value.code == 2
    assert "run/front.json: not found; run 'nni-udc pareto" in capsys.readouterr().err
    _finished_run(tmp_path / "run")
    assert main(["retrain", str(path), "--seeds", "1", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "mean test accuracy over 1 seed:" in out and "median ratio" in out
    assert (tmp_path / "run" / RETRAINED_JSON).is_file()


def test_show_prints_the_retrained_comparison_once_every_model_has_a_seed(tmp_path, capsys):
    from nni_udc.pareto.retrained import architecture_key

    path = _config_file(tmp_path)
    uniform, searched = _finished_run(tmp_path / "run")
    assert main(["show", str(tmp_path / "run")]) == 0
    assert "Retrained" not in capsys.readouterr().out  # no retrained.json yet
    assert main(["retrain", str(path), "--seeds", "2", "--workers", "1"]) == 0
    retrain_out = capsys.readouterr().out
    assert main(["show", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "mean accuracy over seeds 0-1:" in out
    table = retrain_out[retrain_out.index("uniform  test acc"):retrain_out.index("\nwrote")]
    assert table in out  # the same comparison nni-udc retrain printed
    saved = json.loads((tmp_path / "run" / RETRAINED_JSON).read_text())
    del saved["results"][architecture_key(Point(0, 0, 0, architecture=searched[0]))]["1"]
    (tmp_path / "run" / RETRAINED_JSON).write_text(json.dumps(saved))
    assert main(["show", str(tmp_path / "run")]) == 0
    assert "mean accuracy over seed 0:" in capsys.readouterr().out  # the seeds every compared model has
    saved["results"]["{}"] = {"0": [0.5]}
    (tmp_path / "run" / RETRAINED_JSON).write_text(json.dumps(saved))
    with pytest.raises(SystemExit) as exited:
        main(["show", str(tmp_path / "run")])
    assert exited.value.code == 2
    assert "retrained.json: results: {}: expected seed -> [val, test]" in capsys.readouterr().err
