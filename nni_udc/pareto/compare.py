"""Searched front against the uniform-compression baseline: is the search worth it?

Plain values in (front :class:`~nni_udc.pareto.Point` s), plain values out. Everything here judges by **test**
accuracy: the searches chose their models on validation accuracy, so the test split is the fair referee.

For each point of the baseline's front (non-dominated by test accuracy and relative cost) the comparison
finds the smallest searched model at least as accurate on test, and the size ratio ``baseline cost ÷
searched cost``; when no searched model is that accurate the ratio is ``0``: the search cannot reach that
point at any size, a loss that must pull the median down (``inf`` there once read as a win). It summarises the ratios of the baseline
front points with test accuracy ≥ ``min_accuracy`` (0.95) by their median and says whether the search is
*never worse* there: every such baseline point has a searched point at least as accurate and no larger.
Both fronts' hypervolumes use the same reference point. For super-resolution "accuracy" is PSNR in dB
(:mod:`~nni_udc.pareto.metric`): the ratio is taken at the same or better test PSNR, and the bar is 1 dB under
the best baseline model's test PSNR.

Example:
    >>> searched = [Point(0, 0.9, 0.03125, test_accuracy=0.92), Point(1, 0.9, 0.0625, test_accuracy=0.97),
    ...             Point(2, 0.9, 0.25, test_accuracy=0.99)]
    >>> uniform = [Point(0, 0.9, 0.125, test_accuracy=0.9), Point(1, 0.9, 0.25, test_accuracy=0.96),
    ...            Point(2, 0.9, 0.5, test_accuracy=0.99), Point(3, 0.9, 0.5, test_accuracy=0.95)]
    >>> result = compare(uniform, searched, reference=(0.0, 1.0))
    >>> [(m.baseline.number, m.searched.number, m.ratio) for m in result.matches]   # 3 is not on the front
    [(0, 0, 4.0), (1, 1, 4.0), (2, 2, 2.0)]
    >>> result.median_ratio, result.never_worse     # over uniform points 1 and 2 (test accuracy >= 0.95)
    (3.0, True)
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from nni_udc._table import format_table
from nni_udc.pareto.front import Point, hypervolume, non_dominated
from nni_udc.pareto.metric import metric_named

__all__ = ["Comparison", "Match", "compare", "format_comparison", "match_baseline", "median_ratio", "never_worse"]


@dataclass(frozen=True)
class Match:
    """A point of the baseline's front and the smallest searched point at least as accurate on test (or none)."""

    baseline: Point
    searched: Point | None

    @property
    def ratio(self) -> float:
        """``baseline cost ÷ searched cost``: how many times smaller the searched model is (``0``: no searched
        model is as accurate, so the search loses this point whatever its sizes)."""
        if self.searched is None:
            return 0.0
        if self.searched.relative_cost <= 0:
            return math.inf
        return self.baseline.relative_cost / self.searched.relative_cost


def match_baseline(baseline: Sequence[Point], searched: Sequence[Point]) -> list[Match]:
    """One :class:`Match` per point of the baseline's test-accuracy front, cheapest first.

    Of equally small searched points the more accurate one is taken (then the first).
    """
    scored = [(p.test_accuracy, p) for p in searched if p.test_accuracy is not None]
    matches = []
    for b in non_dominated(baseline, accuracy="test_accuracy"):  # every one has a test accuracy
        bar = b.test_accuracy if b.test_accuracy is not None else math.inf
        good = [(a, p) for a, p in scored if a >= bar]
        best = min(good, key=lambda ap: (ap[1].relative_cost, -ap[0]), default=None)
        matches.append(Match(b, best[1] if best is not None else None))
    return matches


def _qualifying(matches: Sequence[Match], min_accuracy: float) -> list[Match]:
    return [m for m in matches if (m.baseline.test_accuracy or 0.0) >= min_accuracy]


def median_ratio(matches: Sequence[Match], min_accuracy: float = 0.95) -> float | None:
    """Median size ratio over the matches whose baseline point reaches ``min_accuracy`` (``None``: there are none)."""
    ratios = [m.ratio for m in _qualifying(matches, min_accuracy)]
    return statistics.median(ratios) if ratios else None


def never_worse(matches: Sequence[Match], min_accuracy: float = 0.95) -> bool | None:
    """Whether every baseline front point reaching ``min_accuracy`` has a searched point at least as accurate
    (on test) and no larger (``None``: no baseline front point reaches it)."""
    chosen = _qualifying(matches, min_accuracy)
    if not chosen:
        return None
    return all(m.searched is not None and m.searched.relative_cost <= m.baseline.relative_cost for m in chosen)


@dataclass(frozen=True)
class Comparison:
    """The matches, their summary and both test-accuracy hypervolumes (one reference point)."""

    matches: list[Match]
    min_accuracy: float
    median_ratio: float | None
    never_worse: bool | None
    search_hypervolume: float
    baseline_hypervolume: float
    reference: tuple[float, float]
    metric: str = "accuracy"  # what the accuracies are (nni_udc.pareto.metric)


def compare(baseline: Sequence[Point], searched: Sequence[Point], *, reference: tuple[float, float],
            min_accuracy: float | None = None, metric: str = "accuracy") -> Comparison:
    """Compare the searched points with the uniform baseline's, by test accuracy (or PSNR) and relative cost.

    ``min_accuracy``: the bar of the summary; default the metric's (0.95 accuracy; PSNR: 1 dB under the best
    baseline model's test PSNR).
    """
    m = metric_named(metric)
    if min_accuracy is None:
        min_accuracy = m.bar([p.test_accuracy for p in baseline if p.test_accuracy is not None])
    matches = match_baseline(baseline, searched)
    return Comparison(matches, min_accuracy, median_ratio(matches, min_accuracy), never_worse(matches, min_accuracy),
                      hypervolume(searched, reference, accuracy="test_accuracy"),
                      hypervolume(baseline, reference, accuracy="test_accuracy"), reference, m.name)


def _ratio(value: float | None, reached: bool = True) -> str:
    if value is None:
        return "none"
    if not reached:
        return "0 (not reached)"
    return "inf" if math.isinf(value) else f"{value:.2f}x"


def format_comparison(comparison: Comparison, *, cost: str) -> str:
    """The comparison as a text table and summary lines (``*``: baseline point with test accuracy >= the bar)."""
    def size(p: Point) -> str:
        return f"{p.costs[cost]:,.6g}" if cost in p.costs else "-"

    metric = metric_named(comparison.metric)
    rows = []
    for m in comparison.matches:
        b, s = m.baseline, m.searched
        mark = "*" if (b.test_accuracy or 0.0) >= comparison.min_accuracy else ""
        rows.append([f"{b.number}{mark}", metric.text(b.test_accuracy), f"{b.relative_cost:.4f}", size(b),
                     s.label if s else "none", metric.text(s.test_accuracy) if s else "-",
                     f"{s.relative_cost:.4f}" if s else "-", size(s) if s else "-", _ratio(m.ratio, s is not None)])
    test = metric.header("test")
    table = format_table(["uniform", test, "relative cost", cost, "searched", test, "relative cost", cost,
                          "ratio"], rows)
    bar = metric.amount(comparison.min_accuracy)
    what = f"test {metric.word}"
    verdict = {True: "yes", False: "no", None: f"n/a (no baseline front point reaches {what} {bar})"}
    count = len(_qualifying(comparison.matches, comparison.min_accuracy))
    acc_ref, cost_ref = comparison.reference
    as_good = "at least as accurate on test" if metric.name == "accuracy" else f"with the same or better {what}"
    return "\n".join([
        table,
        "",
        f"ratio = uniform {cost} / searched {cost} of the smallest search {as_good} (* = {what} >= {bar})",
        f"median ratio over the {count} uniform front points with {what} >= {bar}: "
        f"{_ratio(comparison.median_ratio)}",
        f"search never worse than uniform there: {verdict[comparison.never_worse]}",
        f"{what.replace(' ', '-', 1)} hypervolume (reference point: {metric.word} {metric.amount(acc_ref)}, "
        f"relative cost {cost_ref:g}): "
        f"search {comparison.search_hypervolume:.4f}, uniform baseline {comparison.baseline_hypervolume:.4f}",
    ])
