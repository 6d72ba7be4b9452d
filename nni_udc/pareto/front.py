"""The accuracy-vs-cost front: non-dominated points, hypervolume, CSV/JSON files and plots.

A point is one finished search: validation accuracy (maximised) and relative cost (the optimised cost as
a fraction of the uncompressed reference model; minimised). The hypervolume is the area that the front
dominates inside a fixed reference point ``(accuracy, relative cost)``, so runs of one experiment compare.

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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Point", "format_front", "hypervolume", "non_dominated", "plot_front", "read_front", "write_front"]


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


def _dominates(a: Point, b: Point) -> bool:
    return (a.accuracy >= b.accuracy and a.relative_cost <= b.relative_cost
            and (a.accuracy > b.accuracy or a.relative_cost < b.relative_cost))


def non_dominated(points: Sequence[Point]) -> list[Point]:
    """The points no other point dominates, cheapest first (of equal points, the first trial is kept)."""
    front: list[Point] = []
    for p in points:
        if any(_dominates(o, p) for o in points):
            continue
        if any(o.accuracy == p.accuracy and o.relative_cost == p.relative_cost for o in front):
            continue
        front.append(p)
    return sorted(front, key=lambda p: (p.relative_cost, -p.accuracy))


def hypervolume(points: Sequence[Point], reference: tuple[float, float]) -> float:
    """Area dominated by ``points`` and bounded by ``reference = (accuracy, relative cost)``.

    Only points better than the reference in both objectives count.
    """
    acc_ref, cost_ref = reference
    inside = [p for p in non_dominated(points) if p.accuracy > acc_ref and p.relative_cost < cost_ref]
    area = 0.0
    for i, p in enumerate(inside):  # cheapest first, so accuracy rises along the front
        right = inside[i + 1].relative_cost if i + 1 < len(inside) else cost_ref
        area += (right - p.relative_cost) * (p.accuracy - acc_ref)
    return area


_COLUMNS = ["number", "value", "accuracy", "test_accuracy", "relative_cost"]


def write_front(front: Sequence[Point], directory: Path, *, cost: str, hv: float,
                reference: tuple[float, float], variable: str) -> tuple[Path, Path]:
    """Write ``front.csv`` (one row per point; every cost a column) and ``front.json``; return their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    cost_names = sorted({name for p in front for name in p.costs})
    csv_path, json_path = directory / "front.csv", directory / "front.json"
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([c if c != "value" else variable for c in _COLUMNS] + cost_names + ["architecture"])
        for p in front:
            writer.writerow([getattr(p, c) for c in _COLUMNS] + [p.costs.get(n) for n in cost_names]
                            + [json.dumps(p.architecture, sort_keys=True)])
    json_path.write_text(json.dumps({"cost": cost, "variable": variable, "hypervolume": hv,
                                     "reference_point": {"accuracy": reference[0], "relative_cost": reference[1]},
                                     "front": [asdict(p) for p in front]}, indent=2) + "\n")
    return csv_path, json_path


def read_front(path: Path) -> dict[str, Any]:
    """Read a ``front.json`` written by :func:`write_front` (points as :class:`Point`)."""
    data = json.loads(Path(path).read_text())
    data["front"] = [Point(**p) for p in data["front"]]
    return data


def format_front(front: Sequence[Point], *, cost: str, variable: str) -> str:
    """The front as a text table, cheapest first."""
    from nni_udc._table import format_table

    rows = [[str(p.number), f"{p.value:.4g}" if p.value is not None else "-", f"{p.accuracy:.3f}",
             f"{p.test_accuracy:.3f}" if p.test_accuracy is not None else "-", f"{p.relative_cost:.4f}",
             f"{p.costs.get(cost, float('nan')):,.6g}"] for p in front]
    return format_table(["trial", variable, "val acc", "test acc", "relative cost", cost], rows)


def plot_front(points: Sequence[Point], directory: Path, *, cost: str, title: str) -> tuple[Path, Path]:
    """``front.png`` (matplotlib) and ``front.html`` (plotly, interactive: hover shows each architecture)."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")  # headless
    import matplotlib.pyplot as plt
    import plotly.graph_objects as go

    front = non_dominated(points)
    png, html = directory / "front.png", directory / "front.html"
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.scatter([p.relative_cost for p in points], [p.accuracy for p in points], c="0.6", s=18, label="all searches")
    ax.step([p.relative_cost for p in front], [p.accuracy for p in front], where="post", c="C3", lw=1.5)
    ax.scatter([p.relative_cost for p in front], [p.accuracy for p in front], c="C3", s=30, label="Pareto front")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(  # label 2, 3 and 5 of each decade
        lambda v, _: f"{v:g}" if round(v / 10 ** math.floor(math.log10(v))) in (2, 3, 5) else ""))
    ax.set_xlabel(f"{cost} relative to the uncompressed model (log)")
    ax.set_ylabel("validation accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)

    def trace(pts: Sequence[Point], name: str, color: str) -> Any:
        text = [f"trial {p.number}<br>{cost}: {p.costs.get(cost, float('nan')):,.6g}<br>"
                + "<br>".join(f"{k}: {v}" for k, v in p.architecture.items()) for p in pts]
        return go.Scatter(x=[p.relative_cost for p in pts], y=[p.accuracy for p in pts], mode="markers", name=name,
                          text=text, hoverinfo="text+x+y", marker={"color": color, "size": 9})

    figure = go.Figure([trace(points, "all searches", "#999999"), trace(front, "Pareto front", "#d62728")])
    figure.update_layout(title=title, xaxis={"title": f"relative {cost}", "type": "log"},
                         yaxis={"title": "validation accuracy"})
    figure.write_html(str(html), include_plotlyjs=True)
    return png, html
