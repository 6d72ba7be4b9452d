"""The quality a front trades against cost: accuracy (classification) or PSNR in dB (super-resolution).

Both are "higher is better", so the front, the hypervolume and the Optuna study treat them alike; what differs is
the range a file may hold (accuracy in [0, 1], PSNR any finite number of dB >= 0), how values print, the axis
label, and the bar above which the comparison with the uniform baseline summarises (accuracy: 0.95; PSNR: within
1 dB of the best baseline model, the high-quality end of its front). A front point keeps the value in its
``accuracy`` field whatever the metric; ``front.json`` and ``baseline.json`` name the metric (absent: accuracy).

Example:
    >>> m = metric_named("psnr")
    >>> m.text(31.4159), m.header("test"), m.bar([28.0, 30.5]), m.amount(29.5)
    ('31.42', 'test PSNR', 29.5, '29.50 dB')
    >>> metric_of_task("classification").bar([0.5, 0.99])
    0.95
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from nni_udc.registry import DATASETS

__all__ = ["ACCURACY", "METRICS", "PSNR", "Metric", "metric_named", "metric_of_data", "metric_of_task"]


@dataclass(frozen=True)
class Metric:
    """One "higher is better" quality measure of a front."""

    name: str  # as front.json and baseline.json name it
    short: str  # in table headers ("val acc", "test PSNR")
    word: str  # in sentences ("test PSNR >= ...")
    unit: str  # "" or "dB"
    high: float  # the largest value a run file may hold
    digits: int  # decimals printed
    fixed_bar: float | None  # the comparison's bar; None: ``below_best`` under the best baseline value
    below_best: float = 0.0

    @property
    def label(self) -> str:
        """On a plot's axis: the word and its unit (``'PSNR (dB)'``)."""
        return f"{self.word} ({self.unit})" if self.unit else self.word

    def text(self, value: float | None) -> str:
        """``value`` printed with this metric's decimals (``-`` for none)."""
        return "-" if value is None else f"{value:.{self.digits}f}"

    def amount(self, value: float) -> str:
        """``value`` in a sentence: accuracy as ``0.95``, PSNR with its unit (``29.50 dB``)."""
        return f"{self.text(value)} {self.unit}" if self.unit else f"{value:g}"

    def header(self, split: str) -> str:
        """A table header for the metric on ``split`` (``'val'`` or ``'test'``)."""
        return f"{split} {self.short}"

    def bar(self, baseline: Sequence[float]) -> float:
        """The comparison's bar given the baseline models' test values: baseline front points at or above it
        make the median ratio and the "never worse" verdict."""
        if self.fixed_bar is not None:
            return self.fixed_bar
        return max(baseline, default=math.inf) - self.below_best


ACCURACY = Metric("accuracy", "acc", "accuracy", "", 1.0, 3, 0.95)
PSNR = Metric("psnr", "PSNR", "PSNR", "dB", math.inf, 2, None, below_best=1.0)
#: the metrics by name
METRICS: dict[str, Metric] = {m.name: m for m in (ACCURACY, PSNR)}
_BY_TASK = {"classification": ACCURACY, "super-resolution": PSNR}


def metric_named(name: str | None) -> Metric:
    """The metric called ``name`` (``None``, as in files written before metrics were named: accuracy)."""
    if name is None:
        return ACCURACY
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
    return METRICS[name]


def metric_of_task(task: str) -> Metric:
    """The metric of a data set's task (:attr:`nni_udc.registry.DatasetEntry.task`)."""
    return _BY_TASK[task]


def metric_of_data(dataset: str) -> Metric:
    """The metric of the registered data set ``dataset`` (``'sr'``: PSNR; the others: accuracy)."""
    return metric_of_task(DATASETS[dataset].task)
