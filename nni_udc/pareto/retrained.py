"""``retrained.json``: a pareto run's models trained again under several seeds (``nni-udc retrain``), and their
mean accuracies, which ``nni-udc retrain`` and ``nni-udc show`` compare.

The file holds ``settings`` (how the models were trained; a later run with other settings is refused) and
``results``: architecture (its JSON, keys sorted) → seed (text) → ``[validation accuracy, test accuracy]``.

Example:
    >>> uniform = [Point(0, 0.9, 0.2, test_accuracy=0.9, architecture={"bits": 2})]
    >>> searched = [Point(0, 0.9, 0.1, test_accuracy=0.9, architecture={"bits": 3})]
    >>> results = {architecture_key(p): {"0": [0.9, 0.95], "1": [0.9, 0.97]} for p in uniform + searched}
    >>> complete_seeds(results, uniform + searched)
    2
    >>> [round(p.test_accuracy, 2) for p in mean_points(searched, results, 2)]
    [0.96]
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from nni_udc.pareto.files import RunFileError, read_json
from nni_udc.pareto.front import Point, non_dominated

__all__ = ["RETRAINED_JSON", "architecture_key", "complete_seeds", "mean_points", "read_retrained", "retrained_models"]

RETRAINED_JSON = "retrained.json"
Results = Mapping[str, Mapping[str, Sequence[float]]]


def architecture_key(point: Point) -> str:
    """A model's key in ``results``: its architecture as JSON with sorted keys."""
    return json.dumps(point.architecture, sort_keys=True)


def retrained_models(baseline: Sequence[Point], searched: Sequence[Point]) -> tuple[list[Point], list[Point]]:
    """The models worth retraining: the uniform baseline's front by test *or* by validation accuracy (the other
    grid models are dominated by a wide margin), and every searched model."""
    on_front = {p.number for acc in ("test_accuracy", "accuracy") for p in non_dominated(baseline, accuracy=acc)}
    return [p for p in baseline if p.number in on_front], list(searched)


def read_retrained(path: Path) -> dict[str, Any]:
    """``settings`` and ``results`` of a ``retrained.json``; :class:`RunFileError` names a damaged field."""
    saved = read_json(path)
    for field_name in ("settings", "results"):
        if not isinstance(saved, dict) or not isinstance(saved.get(field_name), dict):
            raise RunFileError(f"{path}: {field_name}: missing or not a mapping; remove the file to retrain from scratch")
    for key, runs in saved["results"].items():
        if not isinstance(runs, dict) or not all(isinstance(r, list) and len(r) == 2 for r in runs.values()):
            raise RunFileError(f"{path}: results: {key}: expected seed -> [val, test], got {runs!r}")
    return saved


def complete_seeds(results: Results, models: Sequence[Point]) -> int:
    """How many seeds, counted from 0, every one of ``models`` has results for."""
    seeds = 0
    while all(str(seeds) in results.get(architecture_key(p), {}) for p in models):
        seeds += 1
    return seeds


def mean_points(points: Sequence[Point], results: Results, seeds: int) -> list[Point]:
    """``points`` with their validation and test accuracy the means over seeds ``0..seeds-1``."""
    def mean(point: Point) -> Point:
        runs = [results[architecture_key(point)][str(seed)] for seed in range(seeds)]
        return replace(point, accuracy=sum(v for v, _ in runs) / seeds, test_accuracy=sum(t for _, t in runs) / seeds)

    return [mean(p) for p in points]
