"""The accuracy-vs-cost front: non-dominated points, hypervolume, CSV/JSON files and plots.

A point is one finished search: validation accuracy (maximised) and relative cost (the optimised cost as
a fraction of the uncompressed reference model; minimised). For super-resolution the ``accuracy`` field holds
PSNR in dB (:mod:`~nni_udc.pareto.metric`; the files name the metric, the tables and plots label it). The
hypervolume is the area that the front dominates inside a fixed reference point ``(accuracy, relative cost)``, so
runs of one experiment compare.

Example:
    >>> pts = [Point(0, 0.9, 0.5), Point(1, 0.8, 0.2), Point(2, 0.7, 0.3)]
    >>> [p.number for p in non_dominated(pts)]
    [1, 0]
    >>> round(hypervolume(pts, (0.0, 1.0)), 3)   # 0.8 x (0.5 - 0.2) + 0.9 x (1.0 - 0.5)
    0.69
"""
from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from nni_udc.pareto.files import check_front, read_json
from nni_udc.pareto.metric import metric_named

__all__ = ["Accuracy", "Point", "format_front", "hypervolume", "non_dominated", "plot_front", "read_front",
           "write_front", "write_points_csv"]

#: which accuracy of a point an objective reads: validation (what the searches choose on) or test
Accuracy = Literal["accuracy", "test_accuracy"]


@dataclass
class Point:
    """One finished search of the outer loop."""

    number: int
    accuracy: float
    relative_cost: float
    value: float | None = None  # the outer variable (cost target or λ)
    test_accuracy: float | None = None
    costs: dict[str, float] = field(default_factory=dict)
    architecture: dict[str, Any] = field(default_factory=dict)
    output: str = ""
    seconds: float | None = None  # wall time of the search (or of the baseline model's training)
    export: int = 0  # 0: the search's own model; k: the k-th cheaper model of its ladder (UDC ``exports``)

    @property
    def label(self) -> str:
        """How tables name the point: its number, and ``.k`` for the k-th cheaper export of a search (``3.1``)."""
        return str(self.number) if not self.export else f"{self.number}.{self.export}"


def _scored(points: Sequence[Point], accuracy: Accuracy) -> list[tuple[float, Point]]:
    return [(a, p) for p in points if (a := getattr(p, accuracy)) is not None]


def non_dominated(points: Sequence[Point], *, accuracy: Accuracy = "accuracy") -> list[Point]:
    """The points no other point dominates, cheapest first (of equal points, the first trial is kept).

    ``accuracy="test_accuracy"`` judges by test accuracy (points without one are left out).
    """
    scored = _scored(points, accuracy)
    front: list[tuple[float, Point]] = []
    for a, p in scored:
        if any(oa >= a and o.relative_cost <= p.relative_cost and (oa > a or o.relative_cost < p.relative_cost)
               for oa, o in scored):
            continue
        if any(fa == a and f.relative_cost == p.relative_cost for fa, f in front):
            continue
        front.append((a, p))
    return [p for a, p in sorted(front, key=lambda ap: (ap[1].relative_cost, -ap[0]))]


def hypervolume(points: Sequence[Point], reference: tuple[float, float], *, accuracy: Accuracy = "accuracy") -> float:
    """Area dominated by ``points`` and bounded by ``reference = (accuracy, relative cost)``.

    Only points better than the reference in both objectives count.
    """
    acc_ref, cost_ref = reference
    inside = [(a, p) for a, p in _scored(non_dominated(points, accuracy=accuracy), accuracy)
              if a > acc_ref and p.relative_cost < cost_ref]
    area = 0.0
    for i, (a, p) in enumerate(inside):  # cheapest first, so accuracy rises along the front
        right = inside[i + 1][1].relative_cost if i + 1 < len(inside) else cost_ref
        area += (right - p.relative_cost) * (a - acc_ref)
    return area


_COLUMNS = ["number", "export", "value", "accuracy", "test_accuracy", "relative_cost", "seconds"]


def count_text(points: Sequence[Point]) -> str:
    """How many models the points are, and of how many searches where some are a search's cheaper exports.

    >>> count_text([Point(0, 0.9, 0.1), Point(1, 0.8, 0.05)]), count_text([Point(0, 0.9, 0.1), Point(0, 0.8, 0.05, export=1)])
    ('2 searches', '2 models of 1 search')
    """
    searches = len({p.number for p in points})
    if searches == len(points):
        return f"{searches} search" + ("es" if searches != 1 else "")
    return f"{len(points)} models of {searches} search" + ("es" if searches != 1 else "")


def write_points_csv(points: Sequence[Point], path: Path, *, variable: str | None = None, metric: str = "accuracy",
                     cost_source: str | None = None) -> Path:
    """One row per point: its numbers, every cost a column, the architecture as JSON (``variable`` names
    the ``value`` column; without one the column is left out; the ``export`` column is there when a point is a
    cheaper export of a search, :attr:`Point.label`). The ``accuracy`` columns are named after the
    ``metric`` (``psnr``, ``test_psnr``); ``cost_source`` (``'formula'`` or the measurement) adds a column saying
    where the optimised cost's numbers come from."""
    columns = [c for c in _COLUMNS if (c != "value" or variable is not None)
               and (c != "export" or any(p.export for p in points))]  # a ladder's exports: number.export
    names = {"value": variable, "accuracy": metric, "test_accuracy": f"test_{metric}"}
    cost_names = sorted({name for p in points for name in p.costs})
    source = ["cost_source"] if cost_source is not None else []
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([names.get(c, c) for c in columns] + cost_names + source + ["architecture"])
        for p in points:
            writer.writerow([getattr(p, c) for c in columns] + [p.costs.get(n) for n in cost_names]
                            + ([cost_source] if source else []) + [json.dumps(p.architecture, sort_keys=True)])
    return path


def write_front(front: Sequence[Point], directory: Path, *, cost: str, hv: float, reference: tuple[float, float],
                variable: str, points: Sequence[Point] | None = None, metric: str = "accuracy",
                cost_sources: dict[str, str] | None = None) -> tuple[Path, Path]:
    """Write ``front.csv`` (one row per point; every cost a column) and ``front.json``; return their paths.

    ``front.json`` also keeps every finished search (``points``) for comparisons made later. ``metric`` names what
    the ``accuracy`` values are; ``cost_sources`` (cost name -> ``'formula'`` or the measurement, as ``report.json``
    has them) says where the costs come from: both files state it.
    """
    directory.mkdir(parents=True, exist_ok=True)
    source = (cost_sources or {}).get(cost)
    csv_path = write_points_csv(front, directory / "front.csv", variable=variable, metric=metric, cost_source=source)
    json_path = directory / "front.json"
    json_path.write_text(json.dumps({"cost": cost, "variable": variable, "metric": metric,
                                     **({"cost_sources": cost_sources} if cost_sources is not None else {}),
                                     "hypervolume": hv,
                                     "reference_point": {"accuracy": reference[0], "relative_cost": reference[1]},
                                     "front": [asdict(p) for p in front],
                                     "points": [asdict(p) for p in (points if points is not None else front)]},
                                    indent=2) + "\n")
    return csv_path, json_path


def read_front(path: Path) -> dict[str, Any]:
    """Read a ``front.json`` written by :func:`write_front` (points as :class:`Point`; files written before
    ``points`` was kept give the front as the points)."""
    data = read_json(path)
    check_front(data, path)
    known = {f.name for f in fields(Point)}  # fields of later versions are ignored
    data["front"] = [Point(**{k: v for k, v in p.items() if k in known}) for p in data["front"]]
    data["points"] = ([Point(**{k: v for k, v in p.items() if k in known}) for p in data["points"]]
                      if "points" in data else list(data["front"]))
    return data


def format_front(front: Sequence[Point], *, cost: str, variable: str | None, label: str = "trial",
                 architecture: bool = False, metric: str = "accuracy") -> str:
    """The front as a text table, cheapest first (no ``variable`` column when it is ``None``; ``architecture``
    adds each point's sample; ``metric`` labels and prints the quality columns)."""
    from nni_udc._table import format_table

    m = metric_named(metric)
    rows = [[p.label] + ([f"{p.value:.4g}" if p.value is not None else "-"] if variable is not None else [])
            + [m.text(p.accuracy), m.text(p.test_accuracy),
               f"{p.relative_cost:.4f}", f"{p.costs.get(cost, float('nan')):,.6g}"]
            + ([" ".join(f"{k}={v}" for k, v in p.architecture.items())] if architecture else []) for p in front]
    headers = ([label] + ([variable] if variable is not None else [])
               + [m.header("val"), m.header("test"), "relative cost", cost]
               + (["architecture"] if architecture else []))
    return format_table(headers, rows)


@dataclass(frozen=True)
class _Series:
    name: str
    points: Sequence[Point]
    what: str  # a point's name in the hover text
    png: tuple[str, str, str]  # matplotlib colour, marker of all points, marker of the front
    html: tuple[str, str, str]  # plotly colour of all points, of the front, symbol


def plot_front(points: Sequence[Point], directory: Path, *, cost: str, title: str,
               baseline: Sequence[Point] = (), metric: str = "accuracy", subtitle: str = "") -> tuple[Path, Path]:
    """``front.png`` (matplotlib) and ``front.html`` (plotly, interactive: hover shows each architecture).

    ``baseline``: the uniform-compression models, drawn with their own front beside the searches; ``metric``
    labels the quality axis (validation accuracy, or PSNR in dB); ``subtitle`` is a second title line (where the
    costs come from).
    """
    m = metric_named(metric)
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")  # headless
    import matplotlib.pyplot as plt
    import plotly.graph_objects as go

    series = [_Series("searches", points, "trial", ("C3", "o", "o"), ("#999999", "#d62728", "circle"))]
    if baseline:
        series.append(_Series("uniform baseline", baseline, "model", ("C0", "x", "X"), ("#9ecae1", "#1f77b4", "x")))
    png, html = directory / "front.png", directory / "front.html"
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for s in series:
        front = non_dominated(s.points)
        colour, marker, front_marker = s.png
        ax.scatter([p.relative_cost for p in s.points], [p.accuracy for p in s.points], c=colour, alpha=0.35, s=16,
                   marker=marker, label=f"all {s.name}")
        ax.step([p.relative_cost for p in front], [p.accuracy for p in front], where="post", c=colour, lw=1.5)
        ax.scatter([p.relative_cost for p in front], [p.accuracy for p in front], c=colour, s=30, marker=front_marker,
                   label=f"{s.name}: Pareto front")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(  # label 2, 3 and 5 of each decade
        lambda v, _: f"{v:g}" if round(v / 10 ** math.floor(math.log10(v))) in (2, 3, 5) else ""))
    ax.set_xlabel(f"{cost} relative to the uncompressed model (log)")
    ax.set_ylabel(f"validation {m.label}")
    ax.set_title(f"{title}\n{subtitle}" if subtitle else title, fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)

    def trace(pts: Sequence[Point], name: str, what: str, color: str, symbol: str) -> Any:
        text = [f"{what} {p.label}<br>{cost}: {p.costs.get(cost, float('nan')):,.6g}<br>"
                + (f"test {m.label}: {m.text(p.test_accuracy)}<br>" if p.test_accuracy is not None else "")
                + "<br>".join(f"{k}: {v}" for k, v in p.architecture.items()) for p in pts]
        return go.Scatter(x=[p.relative_cost for p in pts], y=[p.accuracy for p in pts], mode="markers", name=name,
                          text=text, hoverinfo="text+x+y", marker={"color": color, "size": 9, "symbol": symbol})

    traces = []
    for s in series:
        every, best, symbol = s.html
        traces += [trace(s.points, f"all {s.name}", s.what, every, symbol),
                   trace(non_dominated(s.points), f"{s.name}: Pareto front", s.what, best, symbol)]
    figure = go.Figure(traces)
    figure.update_layout(title=f"{title}<br><sup>{subtitle}</sup>" if subtitle else title,
                         xaxis={"title": f"relative {cost}", "type": "log"},
                         yaxis={"title": f"validation {m.label}"})
    figure.write_html(str(html), include_plotlyjs=True)
    return png, html
