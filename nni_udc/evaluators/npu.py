"""Ethos-U weight memory: Arm's real encoder as ground truth, and the calibrated analytic model we optimise.

Ground truth (:func:`encoded_layer_bytes`): ``ethosu.vela.api.npu_encode_weights`` (the ``ethos-u-vela``
package) compresses a layer's int8 weights exactly as the NPU stores them, in the block traversal Vela itself
would pick (:func:`vela_traversal`), plus the 10 bytes of bias and scale per output channel that Vela stores in
the same stream, padded to 16 bytes. :func:`npu_encoded_size` encodes every weight layer of a frozen model.

Model (:func:`npu_weight_cost`), per layer of ``kept`` output channels of ``n = fan_in`` weights each::

    10 · kept  +  layer_bytes[traversal]  +  Σ_kept channels  n · bytes_per_weight[traversal][bits](d_eff, n)
    d_eff = density · kept_after_rounding[bits](density, n)

- ``traversal`` is Vela's choice: ``depthwise`` (one input channel per group), ``part_kernel_first`` (a conv with
  few input channels, or better utilisation that way) or ``depth_first`` (other convs and linear layers);
- ``d_eff`` is the density the encoder sees: symmetric quantisation to few bits rounds every weight under half a
  step to zero (at 2 bits, half the channel's largest magnitude), so a dense 2-bit layer is mostly zeros; the
  share of the pruned weights that survives rounding depends on the bits, the density (pruning removes the small
  weights first) and how many weights share the channel's scale (the fan-in);
- both tables are piecewise linear in density and ``n`` (constant beyond the ends); a bit-width between table
  entries uses the next one up, above 8 bits 8 (the NPU takes int8 weights).

Every operation is ``+``, ``*``, comparisons, ``min``/``max`` and ``//``, so one formula gives the exact cost of a
frozen model, the NNI expression of a space and the differentiable expected cost of a supernet. The tables are
fitted to the encoder by ``scripts/calibrate_ethos_u.py`` (``nni-udc npu-calibrate``), which also prints the
model's error per layer family and per whole network.

Example:
    >>> from nni_udc.evaluators.targets import load_target
    >>> cost = load_target("ethos-u55").cost("npu_weight_bytes")
    >>> depthwise = LayerSpec("dw", "conv", 32, 32, (3, 3), groups=32, weight_bits=8)
    >>> vela_traversal(1, 9, depthwise=True), 300 < float(cost(depthwise)) < 700
    ('depthwise', True)
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from nni.mutable import Mutable, MutableExpression
from torch import nn

from nni_udc.evaluators.costs import kept_channels
from nni_udc.evaluators.spec import LayerSpec
from nni_udc.registry import ACCELERATORS

__all__ = ["ACCELERATORS", "BITS", "NpuModel", "SCALE_BYTES_PER_CHANNEL", "TRAVERSALS",
           "encoded_layer_bytes", "stored_weights_per_channel", "encoded_weight_bytes", "hat_weights", "npu_encoded_size",
           "npu_weight_cost", "vela_traversal"]

#: Bias (40 bits), scale (32) and shift (6) of one output channel, packed into 80 bits by Vela's ``encode_bias``.
SCALE_BYTES_PER_CHANNEL = 10
#: Vela's weight orderings; each has its own table in the model.
TRAVERSALS = ("depthwise", "depth_first", "part_kernel_first")
#: Bit-widths the model's tables hold (the NPU's int8 weights at 2..8 significant bits).
BITS = (2, 3, 4, 5, 6, 7, 8)


def _accelerator(name: str) -> Any:
    from ethosu.vela.api import NpuAccelerator

    return NpuAccelerator[ACCELERATORS[name]]  # registered targets only (nni_udc.registry.ACCELERATORS)


def _round_up(x: Any, step: int) -> Any:
    """``x`` rounded up to a multiple of ``step`` (a tensor's value rounds, its gradient is zero)."""
    if isinstance(x, torch.Tensor):
        return x + torch.remainder(-x, step)
    return (x + step - 1) // step * step


def stored_weights_per_channel(traversal: str, in_per_group: Any, kernel_area: int) -> Any:
    """Weight positions one output channel takes in the encoded stream, the encoder's zero padding included:
    depth-first pads input channels to a multiple of 32, part-kernel-first and depthwise pad the kernel's
    positions to a multiple of 4 (measured with the encoder; ``scripts/calibrate_ethos_u.py`` prints it)."""
    if traversal == "depth_first":
        return kernel_area * _round_up(in_per_group, 32)
    if traversal == "depthwise":
        return _round_up(kernel_area, 4)
    return _round_up(kernel_area, 4) * in_per_group


#: Depth-first streams also pad output channels to a multiple of 8 (with all-zero channels).
OUT_CHANNEL_STEP = 8


def vela_traversal(in_per_group: Any, kernel_area: int, *, depthwise: bool = False, linear: bool = False) -> Any:
    """The weight traversal Vela picks for a layer (8-bit inputs), as its weight compressor decides it.

    A depthwise conv is traversed depthwise and a fully connected layer depth-first; any other conv part-kernel-
    first when it has at most 8 input channels (per group), or when that uses the MAC array at least as well as
    depth-first (input channels in units of 8 and kernel positions in units of 4, against channels in units of 32).

    ``in_per_group`` may be an NNI expression; the answer is then a 0/1 expression meaning part-kernel-first.

    Example:
        >>> vela_traversal(3, 9), vela_traversal(64, 9), vela_traversal(64, 1), vela_traversal(40, 9)
        ('part_kernel_first', 'depth_first', 'depth_first', 'part_kernel_first')
    """
    if depthwise:
        return "depthwise"
    if linear:
        return "depth_first"
    depth_use = in_per_group / _round_up(in_per_group, 32)
    part_kernel_use = in_per_group / _round_up(in_per_group, 8) * (kernel_area / _round_up(kernel_area, 4))
    if isinstance(in_per_group, Mutable):
        return 1 - (1 - (part_kernel_use >= depth_use)) * (1 - (in_per_group <= 8))
    return "part_kernel_first" if part_kernel_use >= depth_use or in_per_group <= 8 else "depth_first"


def encoded_weight_bytes(weights: np.ndarray, accelerator: str = "ethos-u55", *, depthwise: bool = False,
                         linear: bool = False) -> int:
    """Bytes of a layer's int8 weights ``(out, kh, kw, in)`` after Ethos-U weight compression (Arm's encoder),
    in the traversal Vela picks; biases and scales not included."""
    from ethosu.vela.api import NpuBlockTraversal, npu_encode_weights

    weights = np.ascontiguousarray(weights, dtype=np.int8)
    _, kh, kw, cin = weights.shape
    traversal = vela_traversal(cin, kh * kw, depthwise=depthwise, linear=linear)
    order = NpuBlockTraversal.PART_KERNEL_FIRST if traversal == "part_kernel_first" else NpuBlockTraversal.DEPTH_FIRST
    return len(npu_encode_weights(_accelerator(accelerator), weights, (1, 1), 8, 16, depthwise, order))


def encoded_layer_bytes(weights: np.ndarray, accelerator: str = "ethos-u55", *, depthwise: bool = False,
                        linear: bool = False) -> int:
    """Bytes one layer takes in the NPU's weight stream: its encoded weights (:func:`encoded_weight_bytes`) and
    the bias and scale of every output channel, each part padded to 16 bytes as Vela lays them out.

    Example:
        >>> w = np.ones((16, 3, 3, 1), dtype=np.int8)
        >>> encoded_layer_bytes(w, depthwise=True) - encoded_weight_bytes(w, depthwise=True)  # 16 x 10 bytes
        160
    """
    scales = _round_up(SCALE_BYTES_PER_CHANNEL * weights.shape[0], 16)
    return scales + encoded_weight_bytes(weights, accelerator, depthwise=depthwise, linear=linear)


def _integer_weights(weight: torch.Tensor, bits: Sequence[int]) -> np.ndarray:
    """A layer's effective weight as int8 levels per output channel, removed channels dropped, OHWI.

    A linear weight (O, I) is a 1×1 conv and a 1-D conv's (O, I, K) a K×1 one, as the cost formulas record them."""
    w = weight.detach().float()
    while w.dim() < 4:
        w = w.unsqueeze(-1)
    rows = []
    for c, b in enumerate(bits):
        if b == 0:
            continue
        q = 2 ** (min(b, 8) - 1) - 1
        scale = float(w[c].abs().max().clamp_min(1e-12)) / q
        rows.append(torch.clamp(torch.round(w[c] / scale), -q, q))
    return torch.stack(rows).permute(0, 2, 3, 1).numpy().astype(np.int8)


def _effective_weights(module: nn.Module) -> list[tuple[str, torch.Tensor, list[int]]]:
    """(suffix, weight as stored, per-channel bits) of each weight tensor of a compressible module (1-D and 2-D
    convs and linear layers; plain ones count as 8-bit)."""
    from nni_udc.nn import LOWRANK_LAYERS, QUANT_LAYERS, SPARSE_LAYERS

    if isinstance(module, QUANT_LAYERS):
        w = module.compressed_weight()
        bits = module.weight_bits if isinstance(module.weight_bits, list) else [module.weight_bits] * w.shape[0]
        return [("", w, bits)]
    if isinstance(module, SPARSE_LAYERS):
        return [("", module.masked_weight(), [8] * module.weight.shape[0])]
    if isinstance(module, LOWRANK_LAYERS):
        return [(".first", module.first.weight, [8] * module.first.weight.shape[0]),
                (".second", module.second.weight, [8] * module.second.weight.shape[0])]
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
        return [("", module.weight, [8] * module.weight.shape[0])]
    return []


def _is_depthwise(module: nn.Module) -> bool:
    return (isinstance(module, (nn.Conv1d, nn.Conv2d)) and module.groups > 1
            and module.groups == module.in_channels)


@torch.no_grad()
def npu_encoded_size(model: nn.Module, accelerator: str = "ethos-u55") -> dict[str, int]:
    """True Ethos-U bytes (encoded weights, biases and scales) of every weight layer of a frozen model (float
    layers as int8).

    A module holding weights that neither this nor the cost formulas cover (an LSTM, say) is refused with its
    path and type (``TypeError``): a total that leaves layers out would look like a result.

    Example:
        >>> from nni_udc.nn import QuantLinear
        >>> sizes = npu_encoded_size(nn.Sequential(QuantLinear(64, 16, weight_bits=4, sparsity=0.5)))
        >>> list(sizes), 160 < sizes["0"] < 160 + 64 * 16
        (['0'], True)
        >>> npu_encoded_size(nn.Sequential(nn.LSTM(4, 4)))
        Traceback (most recent call last):
        ...
        TypeError: cannot cost module '0' (LSTM): it holds weights that no cost formula covers, ...
    """
    from nni_udc.evaluators.layers import uncosted_error, uncosted_modules

    uncosted = uncosted_modules(model)
    if uncosted:
        raise uncosted_error(uncosted)
    sizes: dict[str, int] = {}
    handled: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(done + ".") for done in handled):  # e.g. the factors of a low-rank layer
            continue
        layers = _effective_weights(module)
        if layers and name:
            handled.append(name)
        for suffix, weight, bits in layers:
            if not any(bits):
                continue  # every channel removed: the layer is not stored
            sizes[name + suffix] = encoded_layer_bytes(_integer_weights(weight, bits), accelerator,
                                                       depthwise=_is_depthwise(module),
                                                       linear=weight.dim() == 2)
    return sizes


# ----- the analytic model -----------------------------------------------------------------------------


def _relu(x: Any) -> Any:
    if isinstance(x, Mutable):
        return MutableExpression.max(x, 0)
    if isinstance(x, torch.Tensor):
        return torch.clamp(x, min=0)
    return max(x, 0)


def _piecewise(knots: Sequence[float], values: Sequence[Any], x: Any) -> Any:
    """Linear interpolation through ``(knots, values)``, constant beyond the ends; arithmetic only, so ``x``
    and the values may be numbers, NNI expressions or tensors."""
    slopes = [(values[i + 1] - values[i]) / (knots[i + 1] - knots[i]) for i in range(len(knots) - 1)]
    out = values[0] + slopes[0] * _relu(x - knots[0])
    for i in range(1, len(slopes)):
        out = out + (slopes[i] - slopes[i - 1]) * _relu(x - knots[i])
    return out - slopes[-1] * _relu(x - knots[-1])


def hat_weights(knots: Sequence[float], x: float) -> np.ndarray:
    """Weights of each knot in :func:`_piecewise` at ``x`` (two neighbours, constant beyond the ends): the model
    is linear in its table values, which is how the calibration fits them by least squares."""
    out = np.zeros(len(knots))
    if x <= knots[0]:
        out[0] = 1.0
    elif x >= knots[-1]:
        out[-1] = 1.0
    else:
        i = int(np.searchsorted(knots, x, side="right")) - 1
        t = (x - knots[i]) / (knots[i + 1] - knots[i])
        out[i], out[i + 1] = 1 - t, t
    return out


def _step(table: Mapping[int, Any], bits: Any, entry: Any) -> Any:
    """``entry(table[k])`` for the smallest key ``k >= bits`` (8 above the table): a telescoping sum of
    comparisons, so ``bits`` may be a number, an NNI expression or a tensor."""
    keys = sorted(table)
    out = entry(table[keys[0]])
    for low, high in zip(keys, keys[1:]):
        out = out + (bits > low) * (entry(table[high]) - entry(table[low]))
    return out


def _tabulated(fn: Any, *args: Any) -> Any:
    """``fn(*args)`` where some arguments may be NNI expressions: ``fn`` runs on numbers at every point of their
    labels' grid, and the answer is the exact interpolation through those points (a small expression, where
    the formula on expressions would be a large one)."""
    leaves: dict[str, Any] = {}
    for a in args:
        if isinstance(a, Mutable):
            for leaf in a.leaf_symbols():
                leaves[leaf.label] = leaf
    order = list(leaves.values())
    if not order or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                            for leaf in order for v in getattr(leaf, "values", [None])):
        return fn(*args)

    def build(i: int, sample: dict[str, Any]) -> Any:
        if i == len(order):
            return fn(*(a.freeze(sample) if isinstance(a, Mutable) else a for a in args))
        values = sorted(set(order[i].values))
        results = [build(i + 1, {**sample, order[i].label: v}) for v in values]
        return results[0] if len(values) == 1 else _piecewise(values, results, order[i])

    return build(0, {})


class NpuModel:
    """The fitted tables of one accelerator, checked; ``cost(spec)`` is the model's bytes of a layer.

    Raises:
        ValueError: a table is missing or has the wrong shape; the message names the field.
    """

    def __init__(self, coefficients: Any, where: str = "coefficients"):
        if not isinstance(coefficients, Mapping):
            raise ValueError(f"{where} must be a mapping with density_knots, fan_in_knots, kept_after_rounding, "
                             f"bytes_per_weight and layer_bytes, but got {coefficients!r}")
        self.density_knots = self._knots(coefficients, "density_knots", where)
        self.fan_in_knots = self._knots(coefficients, "fan_in_knots", where)
        n_d, n_f = len(self.density_knots), len(self.fan_in_knots)
        self.kept_after_rounding = {b: [[float(v) for v in row] for row in table] for b, table in
                                    self._by_bits(coefficients.get("kept_after_rounding"),
                                                  f"{where}.kept_after_rounding", (n_d, n_f)).items()}
        tables = coefficients.get("bytes_per_weight")
        layer = coefficients.get("layer_bytes")
        self.bytes_per_weight: dict[str, dict[int, list[list[float]]]] = {}
        self.layer_bytes: dict[str, float] = {}
        for kind in TRAVERSALS:
            if not isinstance(tables, Mapping) or kind not in tables:
                raise ValueError(f"{where}: field 'bytes_per_weight' must have a table for each of {list(TRAVERSALS)}")
            rows = self._by_bits(tables[kind], f"{where}.bytes_per_weight.{kind}", (n_d, n_f))
            self.bytes_per_weight[kind] = {b: [[float(v) for v in r] for r in t] for b, t in rows.items()}
            value = layer.get(kind) if isinstance(layer, Mapping) else None
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ValueError(f"{where}: field 'layer_bytes.{kind}' must be a number, but got {value!r}")
            self.layer_bytes[kind] = float(value)

    @staticmethod
    def _knots(data: Mapping[str, Any], key: str, where: str) -> list[float]:
        knots: Any = data.get(key)
        ok = (isinstance(knots, list) and len(knots) >= 2 and all(isinstance(k, (int, float)) for k in knots)
              and all(a < b for a, b in zip(knots, knots[1:])))
        if not ok:
            raise ValueError(f"{where}: field '{key}' must be an increasing list of at least 2 numbers, "
                             f"but got {knots!r}")
        return [float(k) for k in knots]

    @staticmethod
    def _by_bits(table: Any, where: str, shape: tuple[int, ...]) -> dict[int, Any]:
        if not isinstance(table, Mapping) or sorted(table) != list(BITS):
            shown = sorted(table) if isinstance(table, Mapping) else table
            raise ValueError(f"{where} must map each of the bit-widths {list(BITS)} to a table, but got {shown!r}")
        for bits, rows in table.items():
            array = np.asarray(rows, dtype=object)
            if array.shape != shape or not all(isinstance(v, (int, float)) for v in array.flat):
                raise ValueError(f"{where}.{bits} must be numbers of shape {list(shape)} (density knots x fan-in "
                                 f"knots), but got shape {list(array.shape)}")
        return {int(b): rows for b, rows in table.items()}

    def _table(self, table: Sequence[Sequence[float]], density: Any, fan_in: Any) -> Any:
        per_density = [_piecewise(self.fan_in_knots, row, fan_in) for row in table]
        return _piecewise(self.density_knots, per_density, density)

    def effective_density(self, bits: Any, density: Any, fan_in: Any) -> Any:
        """Density the encoder sees: the pruned weights' density times the share of them that survives rounding to
        ``bits`` (a table over the pruned density and the fan-in: how many weights share a channel's scale)."""
        return density * _step(self.kept_after_rounding, bits, lambda table: self._table(table, density, fan_in))

    def bytes_per_weight_at(self, traversal: str, bits: Any, stored_density: Any, fan_in: Any) -> Any:
        """Bytes per stored weight position at a density over those positions (padding included)."""
        return _step(self.bytes_per_weight[traversal], bits, lambda table: self._table(table, stored_density, fan_in))

    def weight_bytes(self, traversal: str, s: LayerSpec) -> Any:
        """Encoded weight bytes of a layer in one traversal (without biases and scales)."""
        kh, kw = s.kernel_size

        def channel(bits: Any, in_channels: Any, groups: Any, density: Any) -> Any:
            n = in_channels // groups * kh * kw
            stored = stored_weights_per_channel(traversal, in_channels // groups, kh * kw)
            if isinstance(stored, (int, float)) and stored == 0:  # every input removed upstream (in_channel_bits)
                return 0
            return stored * self.bytes_per_weight_at(traversal, bits, self.effective_density(bits, density, n) * n
                                                     / stored, n)

        def empty_channel(bits: Any, in_channels: Any, groups: Any) -> Any:
            n = in_channels // groups * kh * kw
            stored = stored_weights_per_channel(traversal, in_channels // groups, kh * kw)
            return stored * self.bytes_per_weight_at(traversal, bits, 0.0, n)

        kept = kept_channels(s)
        if s.per_channel:  # each channel's bits are a label of their own: tabulated channel by channel
            weights = sum((b > 0) * _tabulated(channel, b, s.in_channels, s.groups, s.density) for b in s.weight_bits)
            top: Any = max(BITS)
        else:
            weights = kept * channel(s.weight_bits, s.in_channels, s.groups, s.density)
            top = s.weight_bits
        if traversal == "depth_first":  # all-zero channels up to a multiple of 8
            padding = _round_up(kept, OUT_CHANNEL_STEP) - kept
            weights = weights + padding * _tabulated(empty_channel, top, s.in_channels, s.groups)
        return weights + self.layer_bytes[traversal]

    def cost(self, s: LayerSpec) -> Any:
        if s.per_channel:
            return self._cost(s)

        def concrete(cin: Any, out: Any, groups: Any, bits: Any, density: Any) -> Any:
            return self._cost(LayerSpec(s.name, s.kind, cin, out, s.kernel_size, groups, s.positions, bits,
                                        s.act_bits, density, s.bias))

        return _tabulated(concrete, s.in_channels, s.out_channels, s.groups, s.weight_bits, s.density)

    def _cost(self, s: LayerSpec) -> Any:
        kh, kw = s.kernel_size
        cin = s.in_channels // s.groups
        if isinstance(s.groups, int) and s.groups == 1:
            depthwise: Any = False
        elif isinstance(cin, Mutable):
            depthwise = cin <= 1
        else:
            depthwise = cin == 1
        scales = SCALE_BYTES_PER_CHANNEL * kept_channels(s)
        if depthwise is True:
            return scales + self.weight_bytes("depthwise", s)
        traversal = vela_traversal(cin, kh * kw, linear=s.kind == "linear")
        if isinstance(traversal, str):
            ordinary = self.weight_bytes(traversal, s)
        else:  # the width is a choice: Vela's rule as a 0/1 expression
            ordinary = (traversal * self.weight_bytes("part_kernel_first", s)
                        + (1 - traversal) * self.weight_bytes("depth_first", s))
        if depthwise is False:
            return scales + ordinary
        return scales + depthwise * self.weight_bytes("depthwise", s) + (1 - depthwise) * ordinary


def npu_weight_cost(coefficients: Any, where: str = "coefficients", accelerator: str | None = None):
    """The cost function (bytes) of a target file's ``kind: npu_weights`` entry, after checking its tables.

    With ``accelerator`` (``'ethos-u55'``, ``'ethos-u65'``) the function also carries ``measure(model)``: the
    encoder's true bytes of a frozen model (:func:`npu_encoded_size`), which
    :func:`~nni_udc.evaluators.exact.exact_costs` reports instead of the formula.

    Raises:
        ValueError: malformed coefficients or an unknown accelerator (the message names the field).
    """
    model = NpuModel(coefficients, where)
    if accelerator is not None and accelerator not in ACCELERATORS.names():
        raise ValueError(f"accelerator must be one of {list(ACCELERATORS.names())}, but got {accelerator!r}")

    def npu_weight_bytes(s: LayerSpec) -> Any:
        return model.cost(s)

    npu_weight_bytes.model = model  # type: ignore[attr-defined]  # the calibration reads the tables back
    if accelerator is not None:
        def measure(frozen: nn.Module) -> int:
            return sum(npu_encoded_size(frozen, accelerator).values())

        npu_weight_bytes.measure = measure  # type: ignore[attr-defined]
        npu_weight_bytes.measured_by = f"Arm's Ethos-U encoder (ethos-u-vela, {accelerator})"  # type: ignore[attr-defined]
    return npu_weight_bytes
