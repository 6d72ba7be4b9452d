"""Checks a command makes before it loads data or writes anything, each failing with one line (``ConfigError``).

Order (issue 10): the file and its overrides (``load_config``), then the space, its arguments and the strategy
(:func:`check_search`), then the output directory (:func:`output_directory`), then the study's storage
(:func:`check_storage`).
"""
from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path

from nni_udc.config import ConfigError, ExperimentConfig, clip

__all__ = ["check_search", "check_storage", "output_directory"]


def check_search(config: ExperimentConfig) -> None:
    """The space builds with its arguments for the data set's input shape, and the strategy with its arguments."""
    from nni_udc.experiment import build_strategy, check_space

    check_space(config)
    if not config.strategy.baseline:
        build_strategy(config)


def output_directory(path: Path | str, what: str = "output directory") -> Path:
    """Create ``path`` (and its parents) and make sure files can be written there."""
    path = Path(path)
    for folder in (path, *path.parents):
        if folder.exists() and not folder.is_dir():
            raise ConfigError(f"{folder}: is a file, so the {what} {str(path)!r} cannot be created there")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):  # permissions, a read-only file system, a full disk
            pass
    except OSError as error:
        raise ConfigError(f"{path}: the {what} is not writable: {error.strerror or error}") from None
    return path


def check_storage(url: str) -> None:
    """An existing SQLite study file must be a sound SQLite database (a file cut short or overwritten is not)."""
    if not url.startswith("sqlite:///"):
        return
    file = Path(url[len("sqlite:///"):])
    if not file.exists() or file.stat().st_size == 0:
        return  # Optuna creates it
    try:
        with sqlite3.connect(f"file:{file}?mode=ro", uri=True) as db:
            rows = db.execute("PRAGMA quick_check").fetchall()
    except sqlite3.Error as error:
        raise ConfigError(f"{file}: the study's storage is not a usable SQLite database ({clip(str(error), 80)}); "
                          "move it away to start a new study") from None
    if rows != [("ok",)]:
        raise ConfigError(f"{file}: the study's storage is damaged ({clip(str(rows[0][0]), 80)}); move it away "
                          "to start a new study")
