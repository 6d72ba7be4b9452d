"""``nnictl`` glue: register :class:`~nni_udc.pareto.tuner.OptunaTuner` with NNI.

:func:`register` puts the tuner into NNI's algorithm registry under a name
(``nnictl algo register``), so an experiment file can say ``tuner: {name: nni_udc_optuna, ...}``.
The registry is ``$NNI_CONFIG_DIR/registered_algorithms.yml`` when ``NNI_CONFIG_DIR`` is set, else
``<sys.prefix>/nni/`` inside a virtual environment, else ``~/.config/nni/``.

The trial command that runs one search per tuner value, and both commands' command line, are in
:mod:`nni_udc.cli.nnictl` (``nni-udc nnictl-register``, ``python -m nni_udc.cli nnictl-trial search.yaml``).
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["DEFAULT_NAME", "TUNER_CLASS", "nnictl_command", "register"]

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
