"""Ethos-U weight streams: every weight layer of a frozen model compressed by Arm's encoder, written beside the model.

For each layer (in the integer form of :mod:`nni_udc.export.integer`) the NPU takes int8 weights: a channel of 2..8
bits gives its own integer levels (``-qmax..qmax``), a 16-bit or float channel is requantised to 8 bits (levels
``-127..127`` of its largest magnitude). Removed output channels and inputs removed upstream are not part of the
deployed layer and are left out. ``ethosu.vela.api.npu_encode_weights`` (the ``ethos-u-vela`` package) then encodes
the ``(out, kh, kw, in)`` volume in the block traversal Vela picks (:func:`nni_udc.evaluators.npu.vela_traversal`).

:func:`write_ethos_streams` writes ``<folder>/<target>/<layer>.bin`` (the encoder's bytes) and
``<folder>/<target>/streams.json``::

    {"target": "ethos-u55", "accelerator": "Ethos_U55_128", "total_bytes": 4032,
     "layers": {"stem.0": {"file": "stem.0.bin", "shape_ohwi": [8, 3, 3, 1], "traversal": "part_kernel_first",
                           "depthwise": false, "weight_bytes": 96, "bias_scale_bytes": 80, "bytes": 176}, ...}}

``bias_scale_bytes`` is what Vela stores beside each layer's weights: 10 bytes of bias, scale and shift per output
channel, padded to 16 bytes (:data:`nni_udc.evaluators.npu.SCALE_BYTES_PER_CHANNEL`). Their values depend on the
activation quantisation chosen when the whole network is compiled, so they are counted, not written. ``bytes`` is
weights plus biases and scales, the count ``nni-udc npu-size`` reports per layer.

Example:
    >>> import tempfile, torch
    >>> from torch import nn
    >>> from nni_udc.nn import QuantConv2d, QuantLinear
    >>> model = nn.Sequential(QuantConv2d(1, 8, 3, weight_bits=4), nn.Flatten(), QuantLinear(288, 10, weight_bits=8))
    >>> streams = write_ethos_streams(model, tempfile.mkdtemp(), "ethos-u55")
    >>> sorted(streams.layers), streams.total_bytes == sum(s.bytes for s in streams.layers.values())
    (['0', '2'], True)
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nni_udc.evaluators.npu import SCALE_BYTES_PER_CHANNEL, vela_traversal
from nni_udc.export.integer import IntegerWeights, integer_layers, qmax
from nni_udc.registry import ACCELERATORS

__all__ = ["EthosStream", "EthosStreams", "npu_levels", "write_ethos_streams"]

_NPU_BITS = 8


@dataclass(frozen=True)
class EthosStream:
    """One layer's encoded weight stream: its file, shape, traversal and bytes."""

    file: str
    shape_ohwi: tuple[int, ...]
    traversal: str
    depthwise: bool
    weight_bytes: int
    bias_scale_bytes: int

    @property
    def bytes(self) -> int:
        """Weights plus Vela's biases and scales: the layer's share of the NPU's weight memory."""
        return self.weight_bytes + self.bias_scale_bytes


@dataclass(frozen=True)
class EthosStreams:
    """Every layer's stream, where they were written and their total bytes."""

    target: str
    folder: Path
    layers: dict[str, EthosStream]

    @property
    def total_bytes(self) -> int:
        return sum(s.bytes for s in self.layers.values())


def _depthwise(w: IntegerWeights) -> bool:
    groups = int(w.attrs.get("groups", 1))
    return w.kind != "linear" and groups > 1 and w.shape[1] == 1


def npu_levels(w: IntegerWeights) -> np.ndarray:
    """The int8 weights the NPU stores for ``w``: kept output channels and kept inputs only, ``(out, kh, kw, in)``
    (a linear layer is a 1×1 conv, a 1-D conv's kernel ``k`` is ``k×1``).

    Example:
        >>> w = IntegerWeights('fc', 'linear', torch.tensor([[3, -7], [0, 0], [1, 2]], dtype=torch.int32),
        ...                    torch.tensor([0.1, 0.0, 0.2]), (4, 0, 8))
        >>> npu_levels(w)[:, 0, 0, :].tolist()
        [[3, -7], [1, 2]]
    """
    kept = w.kept_channels()
    rows = []
    for c in kept:
        if w.bits[c] <= _NPU_BITS:
            rows.append(w.values[c].to(torch.int64))
        else:  # 16-bit or float: requantised to the NPU's 8 bits
            weight = w.dequantize()[c]
            step = weight.abs().max().clamp_min(1e-12) / qmax(_NPU_BITS)
            rows.append(torch.clamp(torch.round(weight / step), -qmax(_NPU_BITS), qmax(_NPU_BITS)).to(torch.int64))
    volume = torch.stack(rows)
    if w.kept_inputs is not None:
        volume = volume[:, w.kept_inputs]
    while volume.dim() < 4:
        volume = volume.unsqueeze(-1)
    return np.ascontiguousarray(volume.permute(0, 2, 3, 1).numpy().astype(np.int8))


def _file_name(name: str) -> str:
    return (name or "model").replace("/", "_") + ".bin"


def _encode(w: IntegerWeights, target: str) -> tuple[bytes, np.ndarray, str, bool]:
    from ethosu.vela.api import NpuAccelerator, NpuBlockTraversal, npu_encode_weights

    volume = npu_levels(w)
    _, kh, kw, cin = volume.shape
    depthwise = _depthwise(w)
    traversal = vela_traversal(cin, kh * kw, depthwise=depthwise, linear=w.kind == "linear")
    order = NpuBlockTraversal.PART_KERNEL_FIRST if traversal == "part_kernel_first" else NpuBlockTraversal.DEPTH_FIRST
    dilation = list(w.attrs.get("dilation", [1]))  # (dh, dw) of a 2-D conv; a 1-D conv's runs along kh
    dilation_xy = (dilation[1], dilation[0]) if len(dilation) == 2 else (1, dilation[0])
    stream = npu_encode_weights(NpuAccelerator[ACCELERATORS[target]], volume, dilation_xy, 8, 16, depthwise, order)
    return bytes(stream), volume, traversal, depthwise


def write_ethos_streams(model: nn.Module | Mapping[str, IntegerWeights], folder: str | Path,
                        target: str = "ethos-u55") -> EthosStreams:
    """Encode every weight layer of a frozen ``model`` (or of already converted layers) for ``target`` and write the
    streams and ``streams.json`` to ``folder/target/``.

    Args:
        model: a frozen model, or ``{name: IntegerWeights}`` (e.g. with BatchNorm folded: the integers are the same).
        folder: where the model is exported; the streams go to its ``target`` subfolder (created).
        target: ``'ethos-u55'`` or ``'ethos-u65'`` (:data:`nni_udc.registry.ACCELERATORS`).

    Raises:
        nni_udc.registry.UnknownNameError: an unknown target (a ``ValueError`` listing the known ones).
        TypeError: the model holds weights that have no integer form (named).
    """
    accelerator = ACCELERATORS[target]  # an unknown name raises, listing the registered accelerators
    layers = integer_layers(model) if isinstance(model, nn.Module) else dict(model)
    out = Path(folder) / target
    out.mkdir(parents=True, exist_ok=True)
    streams: dict[str, EthosStream] = {}
    for name, w in layers.items():
        if not w.kept_channels():
            continue  # every channel removed: nothing is stored
        data, volume, traversal, depthwise = _encode(w, target)
        file = _file_name(name)
        (out / file).write_bytes(data)
        bias_scale = -(-SCALE_BYTES_PER_CHANNEL * volume.shape[0] // 16) * 16
        streams[name] = EthosStream(file, tuple(volume.shape), traversal, depthwise, len(data), bias_scale)
    result = EthosStreams(target, out, streams)
    summary = {"target": target, "accelerator": accelerator, "total_bytes": result.total_bytes,
               "layers": {name: {**asdict(s), "shape_ohwi": list(s.shape_ohwi), "bytes": s.bytes}
                          for name, s in streams.items()}}
    (out / "streams.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return result
