"""``nni-udc nnictl-register`` and ``nni-udc nnictl-trial``: the command-line side of the nnictl glue.

:func:`trial` is the body of an NNI experiment's trial command (``python -m nni_udc.cli nnictl-trial FILE``):
it takes the tuner's ``{target: x}`` (or ``{weight: λ}``), runs the one-shot search of an experiment file with
it, and reports its :class:`~nni_udc.pareto.record.TrialRecord` as the tuner reads it
(:meth:`~nni_udc.pareto.record.TrialRecord.to_nni_metric`: ``{'default': accuracy, 'relative_cost': ...,
'test_accuracy': ..., <every cost>..., 'arch': JSON, ..., target: x}``). Each trial writes ``model.pt``,
``architecture.json`` and ``report.json`` to ``<output>/nnictl/<experiment id>-<trial id>/`` (``output`` of
the file, relative to the trial's working directory, which is the experiment's ``trialCodeDirectory``); the
metric's ``output`` names it. Registering the tuner is :func:`nni_udc.pareto.nnictl.register`.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from nni_udc.config import ConfigError, load_config
from nni_udc.pareto.nnictl import TUNER_CLASS, register

__all__ = ["register_command", "trial", "trial_command"]


def trial(config_path: str | Path) -> dict[str, Any]:
    """Run one trial of an NNI experiment: the inner search with the tuner's value; report and return the result."""
    import nni
    import nni.trial

    from nni_udc.experiment import quiet, run_search

    config = load_config(config_path)
    params = nni.get_next_parameter() or {}
    variable: str = config.pareto.variable
    if variable not in params:
        given = [v for v in ("target", "weight") if v in params]
        variable = given[0] if given else variable
    if variable in params:
        value = params[variable]
    else:  # no tuner (a trial started by hand): the file's own search section
        value = config.search.target if variable == "target" else config.search.weight
        if params or value is None:
            raise ConfigError(f"{config_path}: the trial expects the tuner's parameters {{'target': x}} or "
                              f"{{'weight': x}}, but got {params!r}")
    output = config.output / "nnictl" / f"{nni.get_experiment_id()}-{nni.get_trial_id()}"
    # The inner NasExperiment's sequential engine calls nni.get_next_parameter() itself and overwrites the global
    # nni.trial._params (parameter id 0), so the final result would be reported for the wrong parameter id
    # (nni/nas/execution/sequential.py, _run_single_model). Keep the outer record and put it back.
    outer_params = nni.trial._params
    try:
        with quiet():
            outcome = run_search(config, output=output, progress=False, **{variable: float(value)})  # type: ignore[arg-type]
    finally:
        nni.trial._params = outer_params
    result = outcome.record(variable=variable, value=float(value), output=output).to_nni_metric()
    nni.report_final_result(result)
    return result


def register_command(args: argparse.Namespace) -> int:
    """``nni-udc nnictl-register [--name N]``: a bad name exits 2, an nnictl failure 1."""
    try:
        register(args.name)
    except RuntimeError as error:
        print(f"nni-udc nnictl-register: error: {error}", file=sys.stderr)
        return 1
    print(f"registered tuner {args.name!r} ({TUNER_CLASS}); use it as tuner: {{name: {args.name}, "
          f"classArgs: {{low: ..., high: ...}}}}")
    return 0


def trial_command(args: argparse.Namespace) -> int:
    """``nni-udc nnictl-trial CONFIG``: prints the reported result."""
    print(json.dumps(trial(args.config)))
    return 0
