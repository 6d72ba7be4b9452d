"""The uniform baseline's files: ``baseline.json`` (what resuming reads) and ``baseline.csv``, one row per model.

Each model is a front :class:`~nni_udc.pareto.Point`: ``number`` is its place in the uniform grid,
``architecture`` its sample, ``accuracy``/``test_accuracy`` its validation and test accuracy, ``seconds``
its training time. ``settings`` record how the models were trained, so a later run can tell whether
the file's models are the ones it would train.

Example:
    >>> import tempfile
    >>> directory = Path(tempfile.mkdtemp())
    >>> files = write_baseline([Point(0, 0.9, 0.1, test_accuracy=0.88, architecture={"bits": 4})], directory,
    ...                        cost="memory_bits", reference_costs={"memory_bits": 1000.0}, settings={"epochs": 2})
    >>> [f.name for f in files]
    ['baseline.csv', 'baseline.json']
    >>> read_baseline(directory / "baseline.json")["points"][0].architecture
    {'bits': 4}
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from nni_udc.pareto.files import RunFileError, check_point, metric_high, read_json
from nni_udc.pareto.front import Point, write_points_csv

__all__ = ["BASELINE_CSV", "BASELINE_JSON", "read_baseline", "write_baseline"]

BASELINE_CSV, BASELINE_JSON = "baseline.csv", "baseline.json"


def _replace(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically: a run killed while writing leaves the previous file."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


def write_baseline(points: Sequence[Point], directory: Path, *, cost: str, reference_costs: dict[str, float],
                   settings: dict[str, Any], metric: str = "accuracy") -> tuple[Path, Path]:
    """Write ``baseline.csv`` and ``baseline.json`` (points in grid order); return their paths.

    ``metric`` names what the ``accuracy`` values are (accuracy or PSNR, :mod:`~nni_udc.pareto.metric`). The costs
    of the grid's models are the formulas' (a model frozen from the space for its costs holds no trained weights
    for a measurement): both files say so (``cost_source``).
    """
    directory.mkdir(parents=True, exist_ok=True)
    points = sorted(points, key=lambda p: p.number)
    csv_path, json_path = directory / BASELINE_CSV, directory / BASELINE_JSON
    partial_csv = write_points_csv(points, directory / (BASELINE_CSV + ".partial"), metric=metric,
                                   cost_source="formula")
    os.replace(partial_csv, csv_path)
    _replace(json_path, json.dumps({"cost": cost, "metric": metric, "cost_source": "formula",
                                    "reference_costs": reference_costs, "settings": settings,
                                    "points": [asdict(p) for p in points]}, indent=2) + "\n")
    return csv_path, json_path


def read_baseline(path: Path) -> dict[str, Any]:
    """Read a ``baseline.json`` written by :func:`write_baseline` (points as :class:`~nni_udc.pareto.Point`)."""
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("points"), list):
        raise RunFileError(f"{path}: must be a mapping with a list of points, as 'nni-udc baseline' writes")
    high = metric_high(data, str(path))
    for i, point in enumerate(data["points"]):
        check_point(point, f"{path}: points[{i}]", high=high)
    data["points"] = [Point(**p) for p in data["points"]]
    return data
