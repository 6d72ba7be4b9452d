"""The accuracy-vs-cost Pareto front: the Optuna outer loop, front files and plots, and the nnictl tuner.

:mod:`~nni_udc.pareto.study` opens the two-objective study, :mod:`~nni_udc.pareto.front` turns finished
trials into the front (CSV, JSON, PNG, HTML, hypervolume); ``nni-udc pareto CONFIG`` runs the loop.
"""
from __future__ import annotations

from nni_udc.pareto.front import Point, format_front, hypervolume, non_dominated, plot_front, read_front, write_front
from nni_udc.pareto.study import DIRECTIONS, OBJECTIVES, finished, initial_values, make_sampler, open_study, suggest

__all__ = [
    "DIRECTIONS",
    "OBJECTIVES",
    "Point",
    "finished",
    "format_front",
    "hypervolume",
    "initial_values",
    "make_sampler",
    "non_dominated",
    "open_study",
    "plot_front",
    "read_front",
    "suggest",
    "write_front",
]
