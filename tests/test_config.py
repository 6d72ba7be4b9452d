"""Experiment files: every example loads; malformed files give their own clear error and exit status 2."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nni_udc.cli import main
from nni_udc.config import ConfigError, load_config, parse_config

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.yaml"))

GOOD = """\
name: mine
space: {name: digits}
training: {epochs: 2, finetune_epochs: 1}
strategy: {name: udc}
hardware: {target: generic, cost: memory_bits}
pareto: {trials: 3, low: 0.05, high: 0.5}
"""

# (what is changed, the message expected: file, field, bad value and what is allowed)
MALFORMED = [
    ("name: [unclosed", r"not valid YAML"),
    ("- just\n- a list", r"\(top level\): must be a mapping, but got \['just', 'a list'\]"),
    ("name: x\n", r"space: missing field; give a registered space name"),
    (GOOD + "colour: blue\n", r"colour: unknown field; allowed fields: name, space, data"),
    (GOOD.replace("name: digits}", "name: imagenet-giant}"),
     r"space\.name: must be a registered space \(digits, ds-cnn, edsr-sr, mnist1d, mobilenetv2-cifar, resnet-cifar, sparse-cell, "
     r"vgg-cifar\) or 'package.module:Class', but got 'imagenet-giant'"),
    (GOOD.replace("epochs: 2", "epochs: 0"), r"training\.epochs: must be an integer >= 1, but got 0"),
    (GOOD.replace("epochs: 2", "epochs: two"), r"training\.epochs: must be an integer >= 1, but got 'two'"),
    (GOOD.replace("name: udc", "name: darts"),
     r"strategy\.name: must be one of udc, haloc, channel-mixed-precision, dass, regularized-evolution, random, "
     r"tpe, grid-search, uniform, but got 'darts'"),
    (GOOD.replace("target: generic", "target: ethos-u99"), r"hardware\.target: unknown hardware target 'ethos-u99'; known targets:"),
    (GOOD.replace("cost: memory_bits", "cost: joules"),
     r"hardware\.cost: must be one of bitops, macs, memory_bits, params \(the costs of target 'generic'\), but got 'joules'"),
    (GOOD.replace("low: 0.05", "low: 0.9"), r"pareto\.low: must be smaller than pareto\.high \(0\.5\), but got 0\.9"),
    (GOOD.replace("high: 0.5", "high: 1.5"), r"pareto\.high: must be a number > 0 and <= 1, but got 1\.5"),
    (GOOD.replace("trials: 3", "trials: 3, sampler: cmaes"),
     r"pareto\.sampler: must be one of tpe, gp, random, qmc, nsga2, but got 'cmaes'"),
    (GOOD.replace("trials: 3", "trials: 3, storage: 'mongodb://x'"), r"pareto\.storage: must be an SQLAlchemy URL"),
    (GOOD + "data: {name: cifar1000}\n",
     r"data\.name: must be one of digits, mnist1d, cifar10, cifar100, folder, speech-commands, sr, but got 'cifar1000'"),
    (GOOD + "search: {target: null, weight: 0}\n", r"search: give a target .* or a weight > 0"),
    (GOOD.replace("trials: 3", "trials: 3, reference_point: [1.5, 1]"),
     r"pareto\.reference_point: must be \[accuracy, relative cost\]"),
    (GOOD.replace("strategy: {name: udc}", "strategy: udc"), r"strategy: must be a mapping, but got 'udc'"),
    (GOOD.replace("trials: 3", "trials: 3, baseline: 1"), r"pareto\.baseline: must be true or false, but got 1"),
]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_file_loads(path):
    config = load_config(path)
    assert config.name and config.hardware.cost


def test_defaults_and_overrides():
    config = parse_config({"space": "digits"}, "inline")
    assert (config.strategy.name, config.hardware.target, config.hardware.cost) == ("udc", "generic", "memory_bits")
    assert config.pareto.sampler == "tpe" and config.pareto.variable == "target"
    mpic = parse_config({"space": "digits", "hardware": {"target": "mpic"}}, "inline")
    assert mpic.hardware.cost == "energy_uj"  # the target's own cost to optimise


def test_a_user_target_file_is_found_next_to_the_experiment_file(tmp_path):
    (tmp_path / "mine.yaml").write_text("name: mine\ndescription: d\noptimise: m\n"
                                        "costs: {m: {kind: builtin, cost: macs, unit: MACs}}\n")
    path = tmp_path / "exp.yaml"
    path.write_text("space: digits\nhardware: {target: mine.yaml}\n")
    config = load_config(path)
    assert config.hardware.target == str(tmp_path / "mine.yaml") and config.hardware.cost == "m"


@pytest.mark.parametrize("text, match", MALFORMED)
def test_malformed_files_name_the_file_field_and_value(tmp_path, text, match):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match) as error:
        load_config(path)
    assert str(error.value).startswith(f"{path}: ")


def test_each_malformed_file_has_its_own_message(tmp_path):
    messages = set()
    for i, (text, _) in enumerate(MALFORMED):
        path = tmp_path / f"bad{i}.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError) as error:
            load_config(path)
        messages.add(str(error.value).split(": ", 1)[1])
    assert len(messages) == len(MALFORMED)


def _exit_2(path, text: str, capsys, command: str) -> str:
    """Run ``nni-udc COMMAND path`` on a file holding ``text``; assert exit status 2; return stderr."""
    path.write_text(text)
    with pytest.raises(SystemExit) as exit_info:
        main([command, str(path)])
    assert exit_info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("command", ["search", "pareto"])
@pytest.mark.parametrize("text, match", MALFORMED[:6])
def test_cli_exits_2_with_one_line(tmp_path, capsys, command, text, match):
    path = tmp_path / "bad.yaml"
    err = _exit_2(path, text, capsys, command)
    assert err.startswith(f"nni-udc {command}: error: {path}: ") and err.count("\n") == 1


def test_pareto_refuses_a_multi_trial_strategy(tmp_path, capsys):
    err = _exit_2(tmp_path / "evo.yaml", "space: digits\nstrategy: {name: random}\n", capsys, "pareto")
    assert "strategy.name: the outer loop varies the one-shot search's cost target" in err


def test_space_arguments_are_checked_when_the_search_starts(tmp_path, capsys):
    err = _exit_2(tmp_path / "args.yaml", "space: {name: digits, args: {depth: 3}}\n", capsys, "search")
    assert "space.args: digits rejects {'depth': 3}" in err


def test_the_installed_command_prints_no_traceback(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD.replace("epochs: 2", "epochs: -3"))
    run = subprocess.run([str(Path(sys.executable).parent / "nni-udc"), "search", str(path)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    assert run.stderr.strip() == f"nni-udc search: error: {path}: training.epochs: must be an integer >= 1, but got -3"
