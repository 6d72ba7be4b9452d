"""Hardware targets: named sets of cost models, each a YAML file of tables and constants.

A target maps cost names to pure functions of a :class:`LayerSpec`, so each gives the exact cost of a
frozen model (:func:`exact_costs`), the NNI expression of a space (:class:`CostProfiler`) and the
differentiable expected cost of a supernet (:class:`~nni_udc.strategies.UDC`) from one definition.
Several costs are reported; ``optimise`` names the default one to search on.

Targets ship in ``nni_udc/evaluators/target_files/<name>.yaml`` and are chosen by name; a user's own YAML
file is accepted by path. Cost kinds a file can use:

``builtin``
    one of :data:`~nni_udc.evaluators.costs.COSTS` (``cost:``), times ``scale``; ``memory_bits`` takes
    ``scale_bits:`` (16 or 32, default 16), the width of each stored quantisation scale.
``mac_lut``
    MACs × ``cycles_per_mac[activation bits][weight bits]`` × ``scale``; a bit-width between table entries
    uses the next entry up, one above the table the largest entry; 0-bit (removed) channels cost nothing.
    ``bias_additions: true`` counts each output channel's bias addition as one more MAC per position
    (``positions · kept · (fan_in + 1)``, as PLiNIO's MPIC model counts operations).
``npu_weights``
    Ethos-U weight memory after the NPU's weight compression (weights, biases and scales): an analytic model
    whose tables (``coefficients``) were fitted to Arm's encoder (:mod:`nni_udc.evaluators.npu`). The cost of a
    frozen model in reports is the encoder's own byte count (``truth: ethos-u55``); see
    :func:`~nni_udc.evaluators.exact.exact_costs`.
``latency_table``
    milliseconds from a table timed on your machine by ``nni-udc profile`` (``entries:`` inline, or
    ``table:`` a table file, relative to the target file); see :mod:`nni_udc.evaluators.latency`.

Example:
    >>> target = load_target("mpic")
    >>> sorted(target.costs), target.optimise
    (['cycles', 'energy_uj', 'latency_ms'], 'energy_uj')
    >>> from nni_udc.evaluators.spec import LayerSpec
    >>> fc = LayerSpec("fc", "linear", 64, 10, weight_bits=4, act_bits=8)
    >>> round(target.costs["cycles"](fc), 1)     # (640 MACs + 10 bias additions) x 1/2.3 cycles
    282.6
"""
from __future__ import annotations

import importlib.resources
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nni_udc.evaluators.costs import COSTS, SCALE_BITS_CHOICES, CostFn, kept_channels, memory_bits_cost
from nni_udc.evaluators.spec import LayerSpec

__all__ = ["HardwareTarget", "TargetError", "load_target", "target_names"]

_FILES = "target_files"


class TargetError(ValueError):
    """A target name that is not known, or a target file that is malformed."""


@dataclass(frozen=True)
class HardwareTarget:
    """A named set of costs (pure functions of a layer spec) with their units and sources."""

    name: str
    description: str
    costs: dict[str, CostFn]
    units: dict[str, str]
    sources: dict[str, str]
    optimise: str
    path: str = field(default="", compare=False)

    def cost(self, name: str | None = None) -> CostFn:
        """The cost function ``name`` (default: the one to optimise)."""
        name = name or self.optimise
        if name not in self.costs:
            raise TargetError(f"target {self.name!r} has no cost {name!r}; its costs are {sorted(self.costs)}")
        return self.costs[name]


def target_names() -> list[str]:
    """Names of the targets shipped with nni-udc."""
    files = importlib.resources.files("nni_udc.evaluators").joinpath(_FILES)
    return sorted(p.name[:-5] for p in files.iterdir() if p.name.endswith(".yaml"))


def load_target(name_or_path: str | Path) -> HardwareTarget:
    """A shipped target by name (``'ethos-u55'``) or a YAML file by path."""
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")) or "/" in text:
        path = Path(text)
        if not path.is_file():
            raise TargetError(f"target file {text!r} does not exist")
        try:
            source = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise TargetError(f"target file {text!r} is not a text (UTF-8) file; a target file is YAML") from None
        except OSError as error:
            raise TargetError(f"target file {text!r} cannot be read: {error.strerror}") from None
    else:
        if text not in target_names():
            raise TargetError(f"unknown hardware target {text!r}; known targets: {', '.join(target_names())} "
                              "(or give the path of a YAML file)")
        path = Path(str(importlib.resources.files("nni_udc.evaluators").joinpath(_FILES).joinpath(f"{text}.yaml")))
        source = path.read_text()
    try:
        data = yaml.safe_load(source)
    except yaml.YAMLError as error:
        raise TargetError(f"{path}: not valid YAML: {error}") from None
    return _parse(data, str(path))


def _field(data: Mapping[str, Any], key: str, where: str, kind: type | tuple[type, ...], what: str) -> Any:
    if key not in data:
        raise TargetError(f"{where}: missing field {key!r} ({what})")
    value = data[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise TargetError(f"{where}: field {key!r} must be {what}, but got {value!r}")
    return value


def _parse(data: Any, path: str) -> HardwareTarget:
    if not isinstance(data, Mapping):
        raise TargetError(f"{path}: a target file must be a mapping with name, description, optimise and costs")
    name = _field(data, "name", path, str, "a string")
    description = data.get("description", "")
    specs = _field(data, "costs", path, Mapping, "a mapping of cost name to cost definition")
    if not specs:
        raise TargetError(f"{path}: field 'costs' must define at least one cost")
    costs, units, sources = {}, {}, {}
    for cost_name, spec in specs.items():
        where = f"{path}: costs.{cost_name}"
        if not isinstance(spec, Mapping):
            raise TargetError(f"{where} must be a mapping with a 'kind', but got {spec!r}")
        kind = _field(spec, "kind", where, str, f"one of {sorted(_KINDS)}")
        if kind not in _KINDS:
            raise TargetError(f"{where}: field 'kind' must be one of {sorted(_KINDS)}, but got {kind!r}")
        costs[cost_name] = _KINDS[kind](spec, where, Path(path).parent)
        units[cost_name] = str(spec.get("unit", ""))
        sources[cost_name] = str(spec.get("source", ""))
    optimise = _field(data, "optimise", path, str, f"one of the costs {sorted(costs)}")
    if optimise not in costs:
        raise TargetError(f"{path}: field 'optimise' must be one of the costs {sorted(costs)}, but got {optimise!r}")
    return HardwareTarget(name, str(description), costs, units, sources, optimise, path)


def _scale(spec: Mapping[str, Any], where: str) -> float:
    scale = spec.get("scale", 1.0)
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or scale <= 0:
        raise TargetError(f"{where}: field 'scale' must be a positive number, but got {scale!r}")
    return float(scale)


def _builtin(spec: Mapping[str, Any], where: str, folder: Path) -> CostFn:
    name = _field(spec, "cost", where, str, f"one of {sorted(COSTS)}")
    if name not in COSTS:
        raise TargetError(f"{where}: field 'cost' must be one of {sorted(COSTS)}, but got {name!r}")
    base, scale = COSTS[name], _scale(spec, where)
    if "scale_bits" in spec:  # the width of a stored quantisation scale, which memory_bits counts
        if name != "memory_bits":
            raise TargetError(f"{where}: field 'scale_bits' applies to cost memory_bits only, not {name!r}")
        if spec["scale_bits"] not in SCALE_BITS_CHOICES or isinstance(spec["scale_bits"], bool):
            raise TargetError(f"{where}: field 'scale_bits' must be one of {list(SCALE_BITS_CHOICES)}, "
                              f"but got {spec['scale_bits']!r}")
        base = memory_bits_cost(spec["scale_bits"])
    return base if scale == 1.0 else (lambda s: base(s) * scale)


def _step(table: Mapping[int, Any], value: Any, entry: Callable[[Any], Any]) -> Any:
    """``entry(table[k])`` for the smallest key ``k >= value`` (the largest key above the table), written
    as a telescoping sum of comparisons so it works on numbers, NNI expressions and tensors."""
    keys = sorted(table)
    out = entry(table[keys[0]])
    for low, high in zip(keys, keys[1:]):
        out = out + (value > low) * (entry(table[high]) - entry(table[low]))
    return out


def _check_table(table: Any, where: str, depth: int) -> dict:
    if not isinstance(table, Mapping) or not table:
        raise TargetError(f"{where} must be a non-empty mapping of bit-width to value, but got {table!r}")
    for key, value in table.items():
        if not isinstance(key, int) or isinstance(key, bool) or key < 0:
            raise TargetError(f"{where}: keys must be bit-widths (integers >= 0), but got {key!r}")
        if depth > 1:
            _check_table(value, f"{where}[{key}]", depth - 1)
        elif not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise TargetError(f"{where}[{key}] must be a number >= 0, but got {value!r}")
    return {k: (dict(v) if isinstance(v, Mapping) else float(v)) for k, v in table.items()}


def _mac_lut(spec: Mapping[str, Any], where: str, folder: Path) -> CostFn:
    table = _check_table(_field(spec, "cycles_per_mac", where, Mapping, "a table [activation bits][weight bits]"),
                         f"{where}.cycles_per_mac", 2)
    table = {a: {w: v for w, v in row.items() if w > 0} for a, row in table.items()}  # 0 bits: handled as removed
    scale = _scale(spec, where)
    bias = spec.get("bias_additions", False)
    if not isinstance(bias, bool):
        raise TargetError(f"{where}: field 'bias_additions' must be true or false, but got {bias!r}")
    per_position = 1 if bias else 0  # the bias addition: one more operation per output channel and position

    def per_mac(act_bits: Any, weight_bits: Any) -> Any:
        return _step(table, act_bits, lambda row: _step(row, weight_bits, lambda v: v))

    def cost(s: LayerSpec) -> Any:
        if s.per_channel:
            per_channel = sum((b > 0) * per_mac(s.act_bits, b) for b in s.weight_bits)
        else:
            per_channel = kept_channels(s) * per_mac(s.act_bits, s.weight_bits)
        return s.positions * (s.fan_in + per_position) * per_channel * scale

    return cost


def _npu_weights(spec: Mapping[str, Any], where: str, folder: Path) -> CostFn:
    from nni_udc.evaluators.npu import npu_weight_cost
    from nni_udc.registry import ACCELERATORS

    accelerator = spec.get("accelerator")
    if accelerator is not None and accelerator not in ACCELERATORS.names():
        raise TargetError(f"{where}: field 'accelerator' must be one of {list(ACCELERATORS.names())} (the encoder "
                          f"that measures frozen models), but got {accelerator!r}")
    try:
        return npu_weight_cost(spec.get("coefficients"), f"{where}.coefficients", accelerator)
    except ValueError as error:
        raise TargetError(str(error)) from None


def _latency_table(spec: Mapping[str, Any], where: str, folder: Path) -> CostFn:
    from nni_udc.evaluators.latency import LatencyEntry, latency_cost, read_table

    if "table" in spec:
        path = folder / str(spec["table"])
        if not path.is_file():
            raise TargetError(f"{where}: field 'table' names {str(path)!r}, which does not exist")
        try:
            return latency_cost(read_table(path))
        except ValueError as error:
            raise TargetError(f"{where}: {error}") from None
    entries = spec.get("entries")
    if not isinstance(entries, list) or not entries:
        raise TargetError(f"{where}: needs 'entries' (a non-empty list) or 'table' (a file written by nni-udc profile)")
    try:
        return latency_cost([LatencyEntry(**e) for e in entries])
    except TypeError as error:
        raise TargetError(f"{where}: field 'entries' has a malformed entry ({error})") from None


_KINDS: dict[str, Callable[[Mapping[str, Any], str, Path], CostFn]] = {
    "builtin": _builtin, "latency_table": _latency_table, "mac_lut": _mac_lut, "npu_weights": _npu_weights,
}
