"""Ethos-U weight memory: Arm's real encoder as ground truth, and the calibrated analytic model we optimise.

Ground truth: ``ethosu.vela.api.npu_encode_weights`` (the ``ethos-u-vela`` package) compresses a layer's int8
weights exactly as the NPU stores them. :func:`encoded_layer_bytes` encodes one layer, :func:`npu_encoded_size`
every weight layer of a frozen nni-udc model (removed channels dropped, weights above 8 bits stored as int8).

Model (:func:`npu_weight_cost`): ``kept channels × fan_in × bytes_per_weight(kernel, bits, density, n)``, where
``n = fan_in × min(kept, 16)`` is the size of one 16-channel weight stream of the encoder. ``bytes_per_weight``
is a table measured with the encoder on synthetic layers (:func:`calibrate`), separately for 1×1 and larger
kernels, interpolated linearly in density and stream size; a bit-width between table entries uses the next one
up, above 8 bits 8 (the NPU takes int8 weights). It does not model the encoder's 16-byte padding or its
adaptive choices on tiny streams, so a single small layer can be off by tens of percent while whole models
stay within a few percent; ``calibrate`` measures both errors and the target file records them.

    .venv/bin/python -m nni_udc.evaluators.npu ethos-u55     # refit; prints the YAML coefficients and errors
"""
from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from nni.mutable import Mutable, MutableExpression
from torch import nn

from nni_udc.evaluators.costs import kept_channels
from nni_udc.evaluators.spec import LayerSpec
from nni_udc.registry import ACCELERATORS

__all__ = ["ACCELERATORS", "calibrate", "encoded_layer_bytes", "model_error", "npu_encoded_size", "npu_weight_cost",
           "synthetic_weights"]



def _accelerator(name: str) -> Any:
    from ethosu.vela.api import NpuAccelerator

    return NpuAccelerator[ACCELERATORS[name]]  # registered targets only (nni_udc.registry.ACCELERATORS)


def encoded_layer_bytes(weights: np.ndarray, accelerator: str = "ethos-u55", *, depthwise: bool = False) -> int:
    """Bytes of one layer's int8 weights ``(out, kh, kw, in)`` after Ethos-U weight compression (Arm's encoder)."""
    from ethosu.vela.api import NpuBlockTraversal, npu_encode_weights

    weights = np.ascontiguousarray(weights, dtype=np.int8)
    encoded = npu_encode_weights(_accelerator(accelerator), weights, (1, 1), 8, 16, depthwise,
                                 NpuBlockTraversal.DEPTH_FIRST)
    return len(encoded)


def synthetic_weights(out_channels: int, fan_in_shape: tuple[int, int, int], bits: int, density: float,
                      rng: np.random.Generator) -> np.ndarray:
    """Gaussian weights quantised per output channel to ``bits`` (narrow range) with magnitude pruning."""
    w = rng.standard_normal((out_channels, *fan_in_shape))
    zeros = int(round((1 - density) * w.size))
    if zeros:
        w.flat[np.argsort(np.abs(w), axis=None)[:zeros]] = 0.0
    q = 2 ** (min(bits, 8) - 1) - 1
    scale = np.abs(w).reshape(out_channels, -1).max(1).clip(1e-12) / q
    return np.clip(np.round(w / scale[:, None, None, None]), -q, q).astype(np.int8)


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
    from nni_udc.nn import (
        LowRankConv1d,
        LowRankConv2d,
        LowRankLinear,
        QuantConv1d,
        QuantConv2d,
        QuantLinear,
        SparseConv1d,
        SparseConv2d,
        SparseLinear,
    )

    if isinstance(module, (QuantConv1d, QuantConv2d, QuantLinear)):
        w = module.compressed_weight()
        bits = module.weight_bits if isinstance(module.weight_bits, list) else [module.weight_bits] * w.shape[0]
        return [("", w, bits)]
    if isinstance(module, (SparseConv1d, SparseConv2d, SparseLinear)):
        return [("", module.masked_weight(), [8] * module.weight.shape[0])]
    if isinstance(module, (LowRankConv1d, LowRankConv2d, LowRankLinear)):
        return [(".first", module.first.weight, [8] * module.first.weight.shape[0]),
                (".second", module.second.weight, [8] * module.second.weight.shape[0])]
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
        return [("", module.weight, [8] * module.weight.shape[0])]
    return []


@torch.no_grad()
def npu_encoded_size(model: nn.Module, accelerator: str = "ethos-u55") -> dict[str, int]:
    """True Ethos-U encoded weight bytes of every weight layer of a frozen model (float layers as int8).

    A module holding weights that neither this nor the cost formulas cover (an LSTM, say) is refused with its
    path and type (``TypeError``): a total that leaves layers out would look like a result.

    Example:
        >>> from nni_udc.nn import QuantLinear
        >>> sizes = npu_encoded_size(nn.Sequential(QuantLinear(64, 16, weight_bits=4, sparsity=0.5)))
        >>> list(sizes), 0 < sizes["0"] < 64 * 16
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
            depthwise = (isinstance(module, (nn.Conv1d, nn.Conv2d)) and module.groups > 1
                         and module.groups == module.in_channels)
            sizes[name + suffix] = encoded_layer_bytes(_integer_weights(weight, bits), accelerator, depthwise=depthwise)
    return sizes


# ----- the analytic model -----------------------------------------------------------------------------

DENSITY_KNOTS = (0.1, 0.25, 0.5, 0.75, 1.0)
STREAM_KNOTS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
BITS = (2, 3, 4, 5, 6, 7, 8)
STREAM_CHANNELS = 16


def _relu(x: Any) -> Any:
    if isinstance(x, Mutable):
        return MutableExpression.max(x, 0)
    if isinstance(x, torch.Tensor):
        return torch.clamp(x, min=0)
    return max(x, 0)


def _minimum(x: Any, limit: float) -> Any:
    if isinstance(x, Mutable):
        return MutableExpression.min(x, limit)
    if isinstance(x, torch.Tensor):
        return torch.clamp(x, max=limit)
    return min(x, limit)


def _piecewise(knots: Sequence[float], values: Sequence[Any], x: Any) -> Any:
    """Linear interpolation through ``(knots, values)``, constant beyond the ends; arithmetic only, so ``x``
    and the values may be numbers, NNI expressions or tensors."""
    slopes = [(values[i + 1] - values[i]) / (knots[i + 1] - knots[i]) for i in range(len(knots) - 1)]
    out = values[0] + slopes[0] * _relu(x - knots[0])
    for i in range(1, len(slopes)):
        out = out + (slopes[i] - slopes[i - 1]) * _relu(x - knots[i])
    return out - slopes[-1] * _relu(x - knots[-1])


def _bytes_per_weight(rows: Mapping[int, Sequence[Sequence[float]]], bits: Any, density: Any, stream: Any) -> Any:
    def at(b: int) -> Any:
        per_density = [_piecewise(STREAM_KNOTS, row, stream) for row in rows[b]]
        return _piecewise(DENSITY_KNOTS, per_density, density)

    keys = sorted(rows)
    out = at(keys[0])
    for low, high in zip(keys, keys[1:]):  # the next entry up, as a telescoping sum of comparisons
        out = out + (bits > low) * (at(high) - at(low))
    return out


def npu_weight_cost(coefficients: Any, where: str = "coefficients"):
    """The cost function (bytes) of a target file's ``kind: npu_weights`` entry, after checking its table."""
    from nni_udc.evaluators.targets import TargetError

    tables = {}
    for kernel in ("pointwise", "spatial"):
        table = coefficients.get(kernel) if isinstance(coefficients, Mapping) else None
        if not isinstance(table, Mapping) or sorted(table) != list(BITS):
            shown = sorted(table) if isinstance(table, Mapping) else table
            raise TargetError(f"{where}: field 'coefficients.{kernel}' must map each of the bit-widths {list(BITS)} "
                              f"to a table, but got {shown!r}")
        for bits, rows in table.items():
            ok = (isinstance(rows, list) and len(rows) == len(DENSITY_KNOTS)
                  and all(isinstance(r, list) and len(r) == len(STREAM_KNOTS) for r in rows))
            if not ok:
                raise TargetError(f"{where}: field 'coefficients.{kernel}.{bits}' must be {len(DENSITY_KNOTS)} rows "
                                  f"(densities {list(DENSITY_KNOTS)}) of {len(STREAM_KNOTS)} values "
                                  f"(stream sizes {list(STREAM_KNOTS)})")
        tables[kernel] = {int(b): rows for b, rows in table.items()}

    def npu_weight_bytes(s: LayerSpec) -> Any:
        rows = tables["pointwise" if tuple(s.kernel_size) == (1, 1) else "spatial"]
        kept = kept_channels(s)
        stream = s.fan_in * _minimum(kept, STREAM_CHANNELS)  # weights in one of the encoder's 16-channel streams
        if s.per_channel:
            return s.fan_in * sum((b > 0) * _bytes_per_weight(rows, b, s.density, stream) for b in s.weight_bits)
        return kept * s.fan_in * _bytes_per_weight(rows, s.weight_bits, s.density, stream)

    return npu_weight_bytes


# ----- calibration ------------------------------------------------------------------------------------

#: Layers (out, kh, kw, in) of the example space (DigitsSpace), and held-out shapes, for the error report.
EXAMPLE_LAYERS = [(8, 3, 3, 1), (24, 3, 3, 1), (8, 3, 3, 8), (16, 3, 3, 16), (24, 3, 3, 24), (32, 3, 3, 8),
                  (32, 3, 3, 24), (10, 1, 1, 32)]
HELD_OUT_LAYERS = [(12, 3, 3, 6), (40, 3, 3, 20), (20, 1, 1, 40), (64, 3, 3, 64), (10, 1, 1, 16), (128, 3, 3, 64),
                   (48, 1, 1, 96), (16, 5, 5, 16)]


def calibrate(accelerator: str = "ethos-u55", *, seed: int = 0) -> dict[str, Any]:
    """Measure the bytes-per-weight table with Arm's encoder on synthetic 16-channel layers."""
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {}
    for kernel, k in (("pointwise", 1), ("spatial", 3)):
        out[kernel] = {}
        for bits in BITS:
            rows = []
            for density in DENSITY_KNOTS:
                row = []
                for stream in STREAM_KNOTS:
                    cin = max(1, stream // STREAM_CHANNELS // (k * k))
                    sizes = [encoded_layer_bytes(synthetic_weights(STREAM_CHANNELS, (k, k, cin), bits, density, rng),
                                                 accelerator) / (STREAM_CHANNELS * k * k * cin) for _ in range(2)]
                    row.append(round(float(np.mean(sizes)), 5))
                rows.append(row)
            out[kernel][bits] = rows
    return out


def model_error(coefficients: Any, layers: Sequence[tuple[int, int, int, int]], accelerator: str = "ethos-u55",
                *, seed: int = 1) -> dict[str, float]:
    """Relative error of the model against the encoder over ``layers`` × bits {2, 4, 8} × sparsity {0, 0.5, 0.9}."""
    cost = npu_weight_cost(coefficients)
    rng = np.random.default_rng(seed)
    true_total = model_total = worst = 0.0
    for o, kh, kw, cin in layers:
        for bits in (2, 4, 8):
            for sparsity in (0.0, 0.5, 0.9):
                truth = encoded_layer_bytes(synthetic_weights(o, (kh, kw, cin), bits, 1 - sparsity, rng), accelerator)
                spec = LayerSpec("x", "conv", cin, o, (kh, kw), weight_bits=bits, density=1 - sparsity)
                predicted = float(cost(spec))
                true_total, model_total = true_total + truth, model_total + predicted
                worst = max(worst, abs(predicted - truth) / truth)
    return {"total": round((model_total - true_total) / true_total, 4), "worst_layer": round(worst, 3)}


def main(argv: list[str] | None = None) -> int:
    import yaml

    parser = argparse.ArgumentParser(description="Fit the Ethos-U weight-size model to Arm's encoder.")
    parser.add_argument("target", choices=sorted(ACCELERATORS))
    args = parser.parse_args(argv)
    coefficients = calibrate(args.target)
    errors = {"example_layers": model_error(coefficients, EXAMPLE_LAYERS, args.target),
              "held_out_layers": model_error(coefficients, HELD_OUT_LAYERS, args.target)}
    print(yaml.safe_dump({"calibration_error": errors, "coefficients": coefficients}, sort_keys=False,
                         default_flow_style=None, width=200))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
