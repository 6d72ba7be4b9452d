"""Latency lookup tables measured on the user's own machine, and the cost model that reads them.

:func:`measure_space` times every distinct layer configuration a space can produce (each compressible
layer's own choices enumerated: width, rank, kernel...), with torch on the CPU at a fixed thread count,
after warm-up, as the median of repeats. :func:`write_table` stores the entries as YAML; ``nni-udc profile``
does both. A target file with ``kind: latency_table`` reads the table back (:func:`latency_cost`):

- a configuration that was timed costs exactly its measured milliseconds;
- one that was not is interpolated: ``a + b · MACs``, fitted by least squares to the timed layers of the same
  kind and kernel (so a width or rank outside the table still gets a plausible number).

As in HALOC, :func:`latency_steps` thins a layer's rank (or width) candidates to the ones where measured
latency actually changes.

Example:
    >>> import torch
    >>> from nni_udc.spaces import DigitsSpace
    >>> entries = measure_space(DigitsSpace(), torch.zeros(1, 1, 8, 8), repeats=3, warmup=1)
    >>> cost = latency_cost(entries)
    >>> all(cost(e.spec()) == e.ms for e in entries)
    True
"""
from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from nni.mutable import MutableExpression
from nni.nas.nn.pytorch import ModelSpace
from torch import nn
from tqdm import tqdm

from nni_udc.evaluators.costs import kept_channels, macs
from nni_udc.evaluators.spec import LayerSpec

__all__ = ["LatencyEntry", "latency_cost", "latency_steps", "measure_space", "read_table", "write_table",
           "write_target"]


@dataclass(frozen=True)
class LatencyEntry:
    """One timed layer configuration: a dense conv/linear at ``positions`` output positions (batch 1)."""

    kind: str
    in_channels: int
    out_channels: int
    kernel: int
    groups: int
    positions: int
    ms: float

    def spec(self) -> LayerSpec:
        return LayerSpec("timed", self.kind, self.in_channels, self.out_channels, (self.kernel, self.kernel),
                         self.groups, self.positions)

    @property
    def key(self) -> tuple:
        return (self.kind, self.in_channels, self.out_channels, self.kernel, self.groups, self.positions)


def _concrete_specs(space: ModelSpace, example_input: Any) -> list[LayerSpec]:
    """Every distinct concrete layer spec of the space: each layer's symbolic spec over its own labels' grid."""
    from nni_udc.evaluators.nni_profiler import CostProfiler

    symbolic: list[LayerSpec] = []

    def record(spec: LayerSpec) -> int:
        symbolic.append(spec)
        return 0

    CostProfiler(space, example_input, record)
    out: dict[tuple, LayerSpec] = {}
    for spec in symbolic:
        fields = {"in_channels": spec.in_channels, "out_channels": kept_channels(spec), "groups": spec.groups,
                  "positions": spec.positions}
        leaves: dict[str, Any] = {}
        for value in fields.values():
            if isinstance(value, MutableExpression):
                leaves.update(value.simplify())
        names = list(leaves)
        for combo in itertools.product(*(leaves[n].values for n in names)):
            sample = dict(zip(names, combo))
            concrete = {k: (int(v.freeze(sample)) if isinstance(v, MutableExpression) else int(v)) for k, v in fields.items()}
            if concrete["out_channels"] < 1:
                continue
            layer = LayerSpec(spec.name, spec.kind, concrete["in_channels"], concrete["out_channels"], spec.kernel_size,
                              concrete["groups"], concrete["positions"])
            out[(layer.kind, layer.in_channels, layer.out_channels, layer.kernel_size, layer.groups, layer.positions)] = layer
    return list(out.values())


def _time_layer(spec: LayerSpec, *, warmup: int, repeats: int) -> float:
    k = spec.kernel_size[0]
    side = max(1, int(round(spec.positions ** 0.5)))
    layer: nn.Module
    if spec.kind == "linear":
        layer, x = nn.Linear(spec.in_channels, spec.out_channels), torch.randn(spec.positions, spec.in_channels)
    else:  # 'same' padding at stride 1 on a square input with the layer's output positions
        layer = nn.Conv2d(spec.in_channels, spec.out_channels, k, padding=k // 2, groups=spec.groups)
        x = torch.randn(1, spec.in_channels, side, side)
    layer.eval()
    with torch.inference_mode():
        for _ in range(warmup):
            layer(x)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            layer(x)
            times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def measure_space(space: ModelSpace, example_input: Any, *, threads: int = 1, warmup: int = 10, repeats: int = 50,
                  progress: bool = False) -> list[LatencyEntry]:
    """Time every distinct layer configuration of ``space`` (torch, CPU, ``threads`` threads, median of repeats)."""
    specs = _concrete_specs(space, example_input)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        entries = [LatencyEntry(s.kind, s.in_channels, s.out_channels, s.kernel_size[0], s.groups, s.positions,
                                round(_time_layer(s, warmup=warmup, repeats=repeats), 6))
                   for s in tqdm(specs, desc="timing layers", disable=not progress)]
    finally:
        torch.set_num_threads(previous)
    return entries


def write_table(entries: Iterable[LatencyEntry], path: str | Path, *, meta: Mapping[str, Any] | None = None) -> None:
    """Write a latency table file that a ``kind: latency_table`` target entry can read."""
    data = {"meta": dict(meta or {}), "entries": [asdict(e) for e in entries]}
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False))


def write_target(entries: Iterable[LatencyEntry], path: str | Path, *, meta: Mapping[str, Any]) -> None:
    """Write a complete hardware-target file (``hardware: <path>``) with the table inline."""
    rows = [asdict(e) for e in entries]
    how = ", ".join(f"{k}={v}" for k, v in meta.items())
    data = {"name": "latency", "description": f"layer latency measured by nni-udc profile ({how})",
            "optimise": "latency_ms",
            "costs": {"latency_ms": {"kind": "latency_table", "unit": "ms",
                                     "source": f"nni-udc profile: torch on this CPU, {how}", "entries": rows},
                      "macs": {"kind": "builtin", "cost": "macs", "unit": "MACs",
                               "source": "dense multiply-accumulates per input sample"}}}
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False, width=200))


def read_table(path: str | Path) -> list[LatencyEntry]:
    """Entries of a table written by :func:`write_table` (``ValueError`` naming the file and entry if malformed)."""
    data = yaml.safe_load(Path(path).read_text())
    if not isinstance(data, Mapping) or not isinstance(data.get("entries"), list) or not data["entries"]:
        raise ValueError(f"{path}: a latency table needs a non-empty 'entries' list (write it with nni-udc profile)")
    entries = []
    for i, item in enumerate(data["entries"]):
        try:
            entries.append(LatencyEntry(**item))
        except TypeError as error:
            raise ValueError(f"{path}: entries[{i}] is malformed ({error}): {item!r}") from None
    return entries


def latency_cost(entries: Sequence[LatencyEntry]):
    """Milliseconds of a layer: its measured time where it was timed, ``a + b·MACs`` of its family otherwise."""
    families: dict[tuple, list[LatencyEntry]] = {}
    for e in entries:
        families.setdefault((e.kind, e.kernel), []).append(e)
    fits = {}
    for family, members in families.items():
        x = np.array([float(macs(m.spec())) for m in members])
        y = np.array([m.ms for m in members])
        a, b = (float(y.mean()), 0.0) if len(members) < 2 or np.ptp(x) == 0 else \
            tuple(float(v) for v in np.linalg.lstsq(np.stack([np.ones_like(x), x], 1), y, rcond=None)[0])
        fits[family] = (max(a, 0.0), max(b, 0.0))
    everything = np.array([float(macs(e.spec())) for e in entries]), np.array([e.ms for e in entries])
    overall = (0.0, float(everything[1].sum() / max(everything[0].sum(), 1.0)))

    def latency_ms(s: LayerSpec) -> Any:
        family = (s.kind, s.kernel_size[0])
        a, b = fits.get(family, overall)
        kept = kept_channels(s)
        matched, measured = 0, 0
        for e in families.get(family, []):
            hit = (s.in_channels == e.in_channels) * (kept == e.out_channels) * (s.groups == e.groups) \
                * (s.positions == e.positions)
            matched, measured = matched + hit, measured + hit * e.ms
        return measured + (1 - matched) * (a + b * macs(s))

    return latency_ms


def latency_steps(entries: Sequence[LatencyEntry], candidates: Sequence[int], layer: Mapping[str, int], *,
                  field: str = "out_channels", tolerance: float = 0.05) -> list[int]:
    """HALOC's thinning: keep the candidates of ``field`` at which measured latency rises by more than
    ``tolerance`` (relative) over the last kept one; ``layer`` fixes the other fields of the entries."""
    timed = {getattr(e, field): e.ms for e in entries if all(getattr(e, k) == v for k, v in layer.items())}
    kept: list[int] = []
    for value in sorted(candidates):
        if value not in timed:
            raise ValueError(f"{field}={value} was not timed for layer {dict(layer)}; timed values: {sorted(timed)}")
        if not kept or timed[value] > timed[kept[-1]] * (1 + tolerance):
            kept.append(value)
    return kept
