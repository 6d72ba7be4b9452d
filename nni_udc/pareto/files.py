"""Checks of the run files that ``nni-udc show`` and the baseline read back (``front.json``, ``baseline.json``).

A file edited by hand, cut short or written by something else must give one line naming the file, the field
and what is wrong, never a traceback or a table of ``nan``: :class:`RunFileError` (a ``ValueError``).

Example:
    >>> check_point({"number": 0, "accuracy": 0.9, "relative_cost": -1}, "front.json: points[0]")
    Traceback (most recent call last):
    ...
    nni_udc.pareto.files.RunFileError: front.json: points[0].relative_cost: must be a finite number >= 0, but got -1
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from nni_udc.pareto.metric import METRICS

__all__ = ["RunFileError", "check_front", "check_point", "metric_high", "read_json"]


class RunFileError(ValueError):
    """A run file that is not what ``nni-udc`` wrote: names the file and the field."""


def _brief(value: Any) -> str:
    text = repr(value) if not isinstance(value, (dict, list)) else json.dumps(value)[:80]
    return text if len(text) <= 80 else text[:77] + "..."


def _number(where: str, value: Any, *, low: float = 0.0, high: float = math.inf, optional: bool = False) -> None:
    if value is None and optional:
        return
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or not low <= value <= high):
        what = f"a number in [{low:g}, {high:g}]" if high < math.inf else f"a finite number >= {low:g}"
        raise RunFileError(f"{where}: must be {what}{' (or null)' if optional else ''}, but got {_brief(value)}")


def _mapping(where: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise RunFileError(f"{where}: must be a mapping, but got {_brief(value)}")
    return value


def _field(where: str, data: dict[str, Any], key: str) -> Any:
    if key not in data:
        raise RunFileError(f"{where}: missing field {key!r}")
    return data[key]


def check_point(data: Any, where: str, *, high: float = 1.0) -> None:
    """One point (a search or a baseline model) as :func:`dataclasses.asdict` of a front ``Point`` writes it;
    ``high`` bounds its accuracy (the metric's, :func:`metric_high`: 1 for accuracy, none for PSNR)."""
    point = _mapping(where, data)
    number = _field(where, point, "number")
    if isinstance(number, bool) or not isinstance(number, int) or number < 0:
        raise RunFileError(f"{where}.number: must be an integer >= 0, but got {_brief(number)}")
    _number(f"{where}.accuracy", _field(where, point, "accuracy"), high=high)
    _number(f"{where}.relative_cost", _field(where, point, "relative_cost"))
    _number(f"{where}.test_accuracy", point.get("test_accuracy"), high=high, optional=True)
    _number(f"{where}.value", point.get("value"), optional=True)
    _number(f"{where}.seconds", point.get("seconds"), optional=True)
    export = point.get("export", 0)
    if isinstance(export, bool) or not isinstance(export, int) or export < 0:
        raise RunFileError(f"{where}.export: must be an integer >= 0, but got {_brief(export)}")
    for key, cost in _mapping(f"{where}.costs", point.get("costs", {})).items():
        _number(f"{where}.costs.{key}", cost)
    _mapping(f"{where}.architecture", point.get("architecture", {}))


def metric_high(data: dict[str, Any], where: str) -> float:
    """The largest accuracy value a run file of metric ``data['metric']`` may hold (absent: accuracy, 1)."""
    name = data.get("metric", "accuracy")
    if name not in METRICS:
        raise RunFileError(f"{where}: metric: must be one of {', '.join(METRICS)}, but got {_brief(name)}")
    return METRICS[name].high


def check_front(data: Any, path: Path | str) -> None:
    """A ``front.json``: cost, variable, hypervolume, reference point, and every point of ``front`` and ``points``."""
    top = _mapping(str(path), data)
    where = f"{path}"
    high = metric_high(top, where)
    cost = _field(where, top, "cost")
    if not isinstance(cost, str) or not cost:
        raise RunFileError(f"{where}: cost: must be a cost's name, but got {_brief(cost)}")
    variable = _field(where, top, "variable")
    if variable is not None and not isinstance(variable, str):
        raise RunFileError(f"{where}: variable: must be a name (or null), but got {_brief(variable)}")
    _number(f"{where}: hypervolume", _field(where, top, "hypervolume"))
    reference = _mapping(f"{where}: reference_point", _field(where, top, "reference_point"))
    _number(f"{where}: reference_point.accuracy", _field(f"{where}: reference_point", reference, "accuracy"), high=high)
    _number(f"{where}: reference_point.relative_cost",
            _field(f"{where}: reference_point", reference, "relative_cost"))
    for key in ("front", "points"):
        if key == "points" and key not in top:
            continue  # files written before every point was kept
        points = _field(where, top, key)
        if not isinstance(points, list):
            raise RunFileError(f"{where}: {key}: must be a list of points, but got {_brief(points)}")
        for i, point in enumerate(points):
            check_point(point, f"{where}: {key}[{i}]", high=high)


def read_json(path: Path | str) -> Any:
    """The JSON document of ``path``; an unreadable, binary or truncated file raises :class:`RunFileError`."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise RunFileError(f"{path}: not a text (UTF-8) file") from None
    except json.JSONDecodeError as error:
        raise RunFileError(f"{path}: not valid JSON (cut short?): {error.msg} at line {error.lineno}") from None
    except OSError as error:
        raise RunFileError(f"{path}: cannot read: {error.strerror}") from None
