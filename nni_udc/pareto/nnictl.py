"""``nnictl`` glue: register :class:`~nni_udc.pareto.tuner.OptunaTuner` and run one trial of an NNI experiment.

- :func:`register` puts the tuner into NNI's algorithm registry under a name
  (``nnictl algo register``), so an experiment file can say ``tuner: {name: nni_udc_optuna, ...}``.
  The registry is ``$NNI_CONFIG_DIR/registered_algorithms.yml`` when ``NNI_CONFIG_DIR`` is set, else
  ``<sys.prefix>/nni/`` inside a virtual environment, else ``~/.config/nni/``.
- :func:`trial` is the body of the trial command: it takes the tuner's ``{target: x}`` (or ``{weight: λ}``),
  runs the one-shot search of an experiment file with it, and reports
  ``{'default': accuracy, 'relative_cost': ..., 'test_accuracy': ..., <every cost>..., 'arch': JSON, target: x}``.
  Each trial writes ``model.pt``, ``architecture.json`` and ``report.json`` to
  ``<output>/nnictl/<experiment id>-<trial id>/`` (``output`` of the file, relative to the trial's
  working directory, which is the experiment's ``trialCodeDirectory``).

Command line (``nni-udc nnictl-register`` and ``nni-udc nnictl-trial CONFIG`` do the same)::

    python -m nni_udc.pareto.nnictl register [--name nni_udc_optuna]
    python -m nni_udc.pareto.nnictl trial search.yaml
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_NAME", "TUNER_CLASS", "main", "nnictl_command", "register", "register_main", "trial",
           "trial_main"]

#: the name ``register`` gives the tuner by default (``tuner: {name: nni_udc_optuna}``)
DEFAULT_NAME = "nni_udc_optuna"
TUNER_CLASS = "nni_udc.pareto.tuner.OptunaTuner"


def nnictl_command() -> list[str]:
    """How to run this interpreter's ``nnictl``: the script next to ``sys.executable``, else ``python -m``."""
    script = Path(sys.executable).with_name("nnictl")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "nni.tools.nnictl.nnictl"]


def _nnictl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*nnictl_command(), *args], capture_output=True, text=True, check=False)


def register(name: str = DEFAULT_NAME) -> None:
    """Register :class:`~nni_udc.pareto.tuner.OptunaTuner` with NNI as tuner ``name`` (replacing an earlier one).

    Raises:
        ValueError: ``name`` is not a valid name, or one of NNI's built-in algorithms.
        RuntimeError: ``nnictl`` failed; the message carries its output.
    """
    import yaml
    from nni.tools.package_utils import get_algo_meta

    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"a tuner name is letters, digits, '_' and '-', but got {name!r}")
    old = get_algo_meta(name)
    if old is not None and old.is_builtin:
        raise ValueError(f"{name!r} is a built-in NNI algorithm; choose another name")
    if old is not None:
        done = _nnictl("algo", "unregister", old.name)
        if done.returncode != 0:
            raise RuntimeError(f"nnictl algo unregister {old.name} failed:\n{done.stdout}{done.stderr}")
    with tempfile.TemporaryDirectory(prefix="nni-udc-") as tmp:
        meta = Path(tmp) / "meta.yml"
        meta.write_text(yaml.safe_dump({"algoType": "tuner", "builtinName": name, "className": TUNER_CLASS}))
        done = _nnictl("algo", "register", "--meta", str(meta))
    # nnictl prints some errors and still exits with 0: check the registry too
    new = get_algo_meta(name)
    if done.returncode != 0 or new is None or new.class_name != TUNER_CLASS:
        raise RuntimeError(f"nnictl algo register failed (exit status {done.returncode}):\n"
                           f"{done.stdout}{done.stderr}".rstrip())


def trial(config_path: str | Path) -> dict[str, Any]:
    """Run one trial of an NNI experiment: the inner search with the tuner's value; report and return the result."""
    import nni
    import nni.trial

    from nni_udc.config import ConfigError, load_config
    from nni_udc.experiment import quiet, run_search

    config = load_config(config_path)
    quiet()
    params = nni.get_next_parameter() or {}
    variable = config.pareto.variable
    if variable not in params:
        given = [v for v in ("target", "weight") if v in params]
        variable = given[0] if given else variable
    if variable in params:
        value = params[variable]
    else:  # no tuner (a trial started by hand): the file's own search section
        value = getattr(config.search, variable)
        if params or value is None:
            raise ConfigError(f"{config_path}: the trial expects the tuner's parameters {{'target': x}} or "
                              f"{{'weight': x}}, but got {params!r}")
    output = config.output / "nnictl" / f"{nni.get_experiment_id()}-{nni.get_trial_id()}"
    # The inner NasExperiment's sequential engine calls nni.get_next_parameter() itself and overwrites the global
    # nni.trial._params (parameter id 0), so the final result would be reported for the wrong parameter id
    # (nni/nas/execution/sequential.py, _run_single_model). Keep the outer record and put it back.
    outer_params = nni.trial._params
    try:
        outcome = run_search(config, output=output, progress=False, **{variable: float(value)})
    finally:
        nni.trial._params = outer_params
    result = {"default": float(outcome.accuracy), "relative_cost": float(outcome.relative_cost),
              "test_accuracy": float(outcome.test_accuracy), **{k: float(v) for k, v in outcome.costs.items()},
              "arch": json.dumps(outcome.sample, sort_keys=True), variable: float(value)}
    nni.report_final_result(result)
    return result


# ----- command line ------------------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit status 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def register_main(argv: Sequence[str] | None = None, prog: str = "nni-udc nnictl-register") -> int:
    """``register [--name N]``; returns the exit status."""
    parser = _Parser(prog=prog, description="Register the Optuna tuner with NNI (nnictl algo register).")
    parser.add_argument("--name", default=DEFAULT_NAME, help=f"the tuner's name in experiment files "
                                                             f"(default: {DEFAULT_NAME})")
    args = parser.parse_args(argv)
    try:
        register(args.name)
    except ValueError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    except RuntimeError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 1
    print(f"registered tuner {args.name!r} ({TUNER_CLASS}); use it as tuner: {{name: {args.name}, "
          f"classArgs: {{low: ..., high: ...}}}}")
    return 0


def trial_main(argv: Sequence[str] | None = None, prog: str = "nni-udc nnictl-trial") -> int:
    """``trial CONFIG`` (the experiment's trial command); returns the exit status."""
    from nni_udc.config import ConfigError

    parser = _Parser(prog=prog, description="One NNI trial: the inner search with the tuner's target, reported.")
    parser.add_argument("config", help="the experiment file of the inner search (YAML)")
    args = parser.parse_args(argv)
    try:
        result = trial(args.config)
    except ConfigError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m nni_udc.pareto.nnictl {register,trial} ...``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"register": register_main, "trial": trial_main}
    prog = "python -m nni_udc.pareto.nnictl"
    if not argv or argv[0] not in commands:
        if argv and argv[0] in ("-h", "--help"):
            print(f"usage: {prog} {{register [--name N], trial CONFIG}}")
            return 0
        print(f"{prog}: error: expected a command, register or trial, but got "
              f"{argv[0] if argv else 'nothing'!r}", file=sys.stderr)
        return 2
    return commands[argv[0]](argv[1:], prog=f"{prog} {argv[0]}")


if __name__ == "__main__":
    sys.exit(main())
