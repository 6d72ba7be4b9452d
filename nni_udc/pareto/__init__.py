"""The accuracy-vs-cost Pareto front: the Optuna outer loop, front files and plots, and the nnictl tuner.

:mod:`~nni_udc.pareto.study` opens the two-objective study, :mod:`~nni_udc.pareto.front` turns finished
trials into the front (CSV, JSON, PNG, HTML, hypervolume); ``nni-udc pareto CONFIG`` runs the loop.
:mod:`~nni_udc.pareto.compare` sets the searched front against the uniform-compression baseline, whose
files :mod:`~nni_udc.pareto.baseline` reads and writes, and again on mean accuracies over seeds
(:mod:`~nni_udc.pareto.retrained`, ``nni-udc retrain``). :mod:`~nni_udc.pareto.record` is one trial of the
study as the loop, the tuner and the front files all read it.
"""
from __future__ import annotations

from nni_udc.pareto.baseline import read_baseline, write_baseline
from nni_udc.pareto.compare import Comparison, Match, compare, format_comparison
from nni_udc.pareto.front import Point, format_front, hypervolume, non_dominated, plot_front, read_front, write_front
from nni_udc.pareto.record import TrialRecord
from nni_udc.pareto.study import DIRECTIONS, OBJECTIVES, finished, initial_values, make_sampler, open_study, suggest

__all__ = [
    "DIRECTIONS",
    "OBJECTIVES",
    "Comparison",
    "Match",
    "Point",
    "TrialRecord",
    "compare",
    "finished",
    "format_comparison",
    "format_front",
    "hypervolume",
    "initial_values",
    "make_sampler",
    "non_dominated",
    "open_study",
    "plot_front",
    "read_baseline",
    "read_front",
    "suggest",
    "write_baseline",
    "write_front",
]
