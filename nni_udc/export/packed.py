"""The packed file: a frozen model's weight layers, bit-packed, whose payload is exactly its ``memory_bits``.

Everything is little-endian. The file is a header, a metadata record per layer, then the payload: one bit stream
holding every layer's stored numbers back to back, with no padding between layers, zero-padded to a whole byte at
its end. The payload's length in bits is written in the header and equals
:func:`~nni_udc.evaluators.costs.memory_bits` summed over the model's layers, so the file holds exactly what the
search optimised. (``docs/packed-format.md`` has the same specification with a worked example.)

Header (24 bytes)::

    magic        8 bytes  b"NNIUDCPK"
    version      u16      1
    scale_bits   u8       16 (IEEE half scales) or 32 (IEEE single)
    reserved     u8       0
    layer_count  u32
    payload_bits u64      the payload's length in bits (= memory_bits)

Layer record (metadata, one per layer, in the order of the payload)::

    name_length  u16, then the name in UTF-8 (the module path; low-rank factors end in .first/.second)
    kind         u8       0 linear, 1 conv1d, 2 conv2d
    flags        u8       bit 0: has a bias; bit 1: stored sparse (a bitmap); bit 2: inputs removed upstream
    ndim         u8, then ndim × u32: the weight's shape (out, in/groups, *kernel)
    bits         out × u8: weight bits per output channel (0 removed, 2..16 integers, 32 float)
    kept_inputs  if flag bit 2: ceil(in / 8) bytes, a bitmap (bit i of the stream: input channel i is kept)
    attrs_length u32, then attrs as UTF-8 JSON (stride, padding, dilation, groups, act_bits, act_clip, act_signed)
    layer_bits   u64      this layer's share of the payload, in bits

Payload, per layer, in this order (bits of a stream: bit ``i`` is bit ``i % 8`` of byte ``i // 8``; a number is
written least significant bit first):

1. **scales**: one per kept quantised output channel (0 < bits < 32), ``scale_bits`` wide (IEEE half or single
   bit pattern); float and removed channels have none;
2. **biases**: if the layer has one, one IEEE float32 per kept output channel;
3. **bitmap**: if stored sparse, one bit per weight position of the kept channels (positions of kept inputs only,
   each channel's positions in the weight's row-major order), 1 = a value is stored;
4. **values**: for each kept output channel in order, each stored position (every position of the kept inputs when
   dense, the bitmap's ones when sparse) as a ``bits[c]``-bit two's complement integer; a float channel's values
   are its IEEE float32 bit patterns (32 bits).

A layer is stored sparse when it has a pruning mask and its bitmap plus its stored values take fewer bits than all
its values, the rule ``memory_bits`` applies. A layer stores a bias when it has one or when a BatchNorm that takes
its output was folded into it (export writes the baked layers, :func:`~nni_udc.export.bake.bake`): ``memory_bits``
counts exactly those biases (``LayerSpec.batchnorm``). A model given as a module is packed the same way: baked, with
``example_input``. The payload is then exactly ``memory_bits`` for every layer with one bit-width on its kept
channels; a pruned layer with bits per channel stores what its mask kept, which ``memory_bits`` estimates (see
:mod:`nni_udc.evaluators.costs`).

Example:
    >>> import tempfile, torch
    >>> from torch import nn
    >>> from nni_udc.evaluators import exact_costs
    >>> from nni_udc.nn import QuantConv2d, QuantLinear
    >>> model = nn.Sequential(QuantConv2d(1, 4, 3, weight_bits=4, sparsity=0.5), nn.Flatten(),
    ...                       QuantLinear(144, 10, weight_bits=[8] * 5 + [0] * 5))
    >>> path = tempfile.mkdtemp() + "/model.nupk"
    >>> written = write_packed(model, path)
    >>> written.payload_bits == exact_costs(model, torch.zeros(1, 1, 8, 8))["memory_bits"]
    True
    >>> bool(torch.equal(read_packed(path).layers["2"].values, written.layers["2"].values))
    True
"""
from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nni_udc.evaluators.batchnorm_inputs import folds_into
from nni_udc.export.bake import bake
from nni_udc.export.integer import DEFAULT_SCALE_BITS, SCALE_BITS_CHOICES, IntegerWeights, integer_layers, qmax

__all__ = ["MAGIC", "VERSION", "PackedFile", "PackedFormatError", "layer_payload_bits", "read_packed",
           "stored_sparse", "write_packed"]

MAGIC = b"NNIUDCPK"
VERSION = 1
_HEADER = struct.Struct("<8sHBBIQ")
_KINDS = ("linear", "conv1d", "conv2d")
_BIAS, _SPARSE, _KEPT_INPUTS = 1, 2, 4
_FLOAT_BITS = 32


class PackedFormatError(ValueError):
    """A file that is not a packed model of this format, or is damaged; the message names the file and the place."""


@dataclass(frozen=True)
class PackedFile:
    """What a packed file holds: its layers, and how its bytes divide between metadata and payload."""

    layers: dict[str, IntegerWeights]
    scale_bits: int
    payload_bits: int
    metadata_bytes: int

    @property
    def payload_bytes(self) -> int:
        """The payload's length in bytes: ``ceil(payload_bits / 8)``."""
        return (self.payload_bits + 7) // 8


def _positions(w: IntegerWeights, c: int) -> torch.Tensor:
    """Channel ``c``'s weights at the kept inputs, flattened in row-major order."""
    row = w.values[c]
    return (row[w.kept_inputs] if w.kept_inputs is not None else row).flatten()


def _mask_positions(w: IntegerWeights, c: int) -> torch.Tensor:
    assert w.mask is not None
    row = w.mask[c]
    return (row[w.kept_inputs] if w.kept_inputs is not None else row).flatten()


def _sizes(w: IntegerWeights) -> tuple[int, int | None]:
    """The bits of ``w``'s values stored dense, and stored sparse (bitmap included; ``None`` without a mask)."""
    kept = w.kept_channels()
    per_channel = _positions(w, kept[0]).numel() if kept else 0
    dense = sum(per_channel * w.bits[c] for c in kept)
    if w.mask is None:
        return dense, None
    sparse = len(kept) * per_channel + sum(int(_mask_positions(w, c).sum()) * w.bits[c] for c in kept)
    return dense, sparse


def stored_sparse(w: IntegerWeights) -> bool:
    """Whether the packed file stores ``w`` with a bitmap: it has a mask and that takes fewer bits (the
    ``memory_bits`` rule)."""
    dense, sparse = _sizes(w)
    return sparse is not None and sparse < dense


def layer_payload_bits(w: IntegerWeights) -> int:
    """The bits ``w`` takes in the payload: scales, biases, the bitmap if sparse, values.

    Example:
        >>> w = IntegerWeights('fc', 'linear', torch.zeros(4, 10, dtype=torch.int32), torch.ones(4), (8, 4, 0, 32),
        ...                    bias=torch.zeros(4))
        >>> layer_payload_bits(w)   # 10·(8+4+32) values + 2 scales·16 + 3 biases·32
        568
    """
    dense, sparse = _sizes(w)
    kept = w.kept_channels()
    scales = sum(1 for c in kept if w.bits[c] < _FLOAT_BITS) * w.scale_bits
    bias = 32 * len(kept) if w.bias is not None else 0
    return scales + bias + (sparse if sparse is not None and sparse < dense else dense)


# --- bit streams --------------------------------------------------------------------------------------------------

class _BitWriter:
    def __init__(self) -> None:
        self.chunks: list[np.ndarray] = []
        self.length = 0

    def words(self, values: np.ndarray, width: int) -> None:
        """``values`` (integers) as ``width``-bit two's complement words, least significant bit first."""
        if width == 0 or values.size == 0:
            return
        v = values.astype(np.int64) & ((1 << width) - 1)
        bits = ((v[:, None] >> np.arange(width, dtype=np.int64)) & 1).astype(np.uint8)
        self.chunks.append(bits.reshape(-1))
        self.length += bits.size

    def flags(self, values: np.ndarray) -> None:
        self.chunks.append(values.astype(np.uint8).reshape(-1))
        self.length += values.size

    def to_bytes(self) -> bytes:
        if not self.chunks:
            return b""
        return np.packbits(np.concatenate(self.chunks), bitorder="little").tobytes()


class _BitReader:
    def __init__(self, data: bytes, where: str) -> None:
        self.bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
        self.at = 0
        self.where = where

    def take(self, n: int) -> np.ndarray:
        if self.at + n > self.bits.size:
            raise PackedFormatError(f"{self.where}: the payload ends early (needs bit {self.at + n}, "
                                    f"has {self.bits.size})")
        out = self.bits[self.at:self.at + n]
        self.at += n
        return out

    def words(self, count: int, width: int) -> np.ndarray:
        """``count`` ``width``-bit two's complement words, as int64."""
        if width == 0 or count == 0:
            return np.zeros(count, dtype=np.int64)
        bits = self.take(count * width).reshape(count, width).astype(np.int64)
        v = (bits << np.arange(width, dtype=np.int64)).sum(axis=1)
        return np.where(v >= (1 << (width - 1)), v - (1 << width), v)


def _float_words(t: torch.Tensor, width: int) -> np.ndarray:
    """IEEE bit patterns of float values, as unsigned integers of ``width`` (16 or 32) bits."""
    dtype = {16: np.float16, 32: np.float32}[width]
    view = {16: np.uint16, 32: np.uint32}[width]
    return t.detach().numpy().astype(np.float32).astype(dtype).view(view).astype(np.int64)


def _floats(words: np.ndarray, width: int) -> torch.Tensor:
    dtype = {16: np.float16, 32: np.float32}[width]
    view = {16: np.uint16, 32: np.uint32}[width]
    return torch.from_numpy((words & ((1 << width) - 1)).astype(view).view(dtype).astype(np.float32))


# --- writing -------------------------------------------------------------------------------------------------------

def _check_layer(w: IntegerWeights, scale_bits: int) -> None:
    if w.scale_bits != scale_bits:
        raise ValueError(f"layer {w.name!r} has {w.scale_bits}-bit scales, but the file stores {scale_bits}-bit ones")
    if w.kind not in _KINDS:
        raise ValueError(f"layer {w.name!r} has kind {w.kind!r}; a packed file stores {list(_KINDS)}")
    if len(w.bits) != w.out_channels or any(b not in (0, *range(2, 17), _FLOAT_BITS) for b in w.bits):
        raise ValueError(f"layer {w.name!r} has bits {list(w.bits)!r}: one per output channel ({w.out_channels}), "
                         "each 0, 2..16 or 32")
    for c in w.kept_channels():
        if w.bits[c] < _FLOAT_BITS and int(w.values[c].abs().max()) > qmax(w.bits[c]):
            raise ValueError(f"layer {w.name!r}: channel {c} has a value beyond ±{qmax(w.bits[c])}, which its "
                             f"{w.bits[c]} bits cannot hold")


def _record(w: IntegerWeights, sparse: bool, layer_bits: int) -> bytes:
    name = w.name.encode("utf-8")
    flags = (_BIAS if w.bias is not None else 0) | (_SPARSE if sparse else 0) | (_KEPT_INPUTS if w.kept_inputs is not None else 0)
    out = [struct.pack("<H", len(name)), name, struct.pack("<BBB", _KINDS.index(w.kind), flags, len(w.shape)),
           struct.pack(f"<{len(w.shape)}I", *w.shape), bytes(w.bits)]
    if w.kept_inputs is not None:
        out.append(np.packbits(w.kept_inputs.numpy().astype(np.uint8), bitorder="little").tobytes())
    attrs = json.dumps(w.attrs, sort_keys=True).encode("utf-8")
    out += [struct.pack("<I", len(attrs)), attrs, struct.pack("<Q", layer_bits)]
    return b"".join(out)


def _payload(w: IntegerWeights, sparse: bool, stream: _BitWriter) -> None:
    kept = w.kept_channels()
    scaled = [c for c in kept if w.bits[c] < _FLOAT_BITS]
    stream.words(_float_words(w.scales[scaled], w.scale_bits), w.scale_bits)
    if w.bias is not None:
        stream.words(_float_words(w.bias[kept], 32), 32)
    if sparse:
        for c in kept:
            stream.flags(_mask_positions(w, c).numpy())
    for c in kept:
        values = _positions(w, c)
        if sparse:
            values = values[_mask_positions(w, c)]
        stream.words(values.numpy(), w.bits[c])


def write_packed(model: nn.Module | Mapping[str, IntegerWeights], path: str | Path, *,
                 scale_bits: int = DEFAULT_SCALE_BITS, example_input: torch.Tensor | None = None) -> PackedFile:
    """Write a frozen ``model``'s weight layers (or already converted layers, e.g. ``bake(...).integer``) to ``path``.

    Args:
        model: a frozen model, or ``{name: IntegerWeights}``. A model is baked (:func:`~nni_udc.export.bake.bake`,
            BatchNorms folded into their layers' scales and biases, as ``export`` writes it) when ``example_input``
            is given; without it each weight layer is converted as it is (:func:`~nni_udc.export.integer_layers`),
            which a model holding a BatchNorm refuses (its folded bias, which ``memory_bits`` counts, would be
            missing).
        path: the file to write.
        scale_bits: 16 (IEEE half, the default ``memory_bits`` counts) or 32; layers given converted must use it.
        example_input: a batch of the model's inputs, to bake it (shapes matter, values do not).

    Returns:
        What :func:`read_packed` returns for the file written.

    Raises:
        ValueError: a ``scale_bits`` other than 16 or 32, a layer that does not fit the format (named), or a model
            with a BatchNorm and no ``example_input``.
        TypeError: the model holds weights that have no integer form (named).
        nni_udc.export.bake.BakeError: the model cannot be baked (an untrained activation clip, named).
    """
    if scale_bits not in SCALE_BITS_CHOICES:
        raise ValueError(f"scale_bits must be one of {list(SCALE_BITS_CHOICES)}, but got {scale_bits!r}")
    layers = dict(_model_layers(model, scale_bits, example_input) if isinstance(model, nn.Module) else model)
    records, stream = [], _BitWriter()
    for w in layers.values():
        _check_layer(w, scale_bits)
        sparse, before = stored_sparse(w), stream.length
        _payload(w, sparse, stream)
        records.append(_record(w, sparse, stream.length - before))
    metadata = _HEADER.pack(MAGIC, VERSION, scale_bits, 0, len(records), stream.length) + b"".join(records)
    Path(path).write_bytes(metadata + stream.to_bytes())
    return read_packed(path)


def _model_layers(model: nn.Module, scale_bits: int, example_input: torch.Tensor | None) -> dict[str, IntegerWeights]:
    """The layers a packed file stores for ``model``: baked with ``example_input``, else as they are (no BatchNorm)."""
    if example_input is not None:
        return bake(model, example_input, scale_bits=scale_bits).integer
    batchnorm = next((name for name, m in model.named_modules() if folds_into(m)), None)
    if batchnorm is not None:
        raise ValueError(f"write_packed: the model holds BatchNorm {batchnorm!r}, which export folds into the layer "
                         "before it (a bias that memory_bits counts); give example_input (a batch of inputs) to bake "
                         "the model, or pass bake(model, x).integer")
    return integer_layers(model, scale_bits=scale_bits)


# --- reading -------------------------------------------------------------------------------------------------------

class _Cursor:
    def __init__(self, data: bytes, where: str) -> None:
        self.data, self.at, self.where = data, 0, where

    def take(self, n: int, what: str) -> bytes:
        if self.at + n > len(self.data):
            raise PackedFormatError(f"{self.where}: the file ends inside {what} (byte {self.at}, needs {n} more)")
        out = self.data[self.at:self.at + n]
        self.at += n
        return out

    def unpack(self, fmt: str, what: str) -> tuple:
        s = struct.Struct("<" + fmt)
        return s.unpack(self.take(s.size, what))


def _read_record(cursor: _Cursor, index: int) -> tuple[dict, int]:
    where = f"layer {index}"
    (length,) = cursor.unpack("H", f"{where}'s name length")
    try:
        name = cursor.take(length, f"{where}'s name").decode("utf-8")
    except UnicodeDecodeError:
        raise PackedFormatError(f"{cursor.where}: {where}'s name is not UTF-8") from None
    where = f"layer {name!r}"
    kind, flags, ndim = cursor.unpack("BBB", f"{where}'s kind")
    if kind >= len(_KINDS) or flags > 7 or not 2 <= ndim <= 3 + (kind == 2):
        raise PackedFormatError(f"{cursor.where}: {where} has kind {kind}, flags {flags}, {ndim} dimensions; "
                                f"allowed: kind 0..{len(_KINDS) - 1}, flags 0..7, 2..4 dimensions")
    shape = cursor.unpack(f"{ndim}I", f"{where}'s shape")
    bits = tuple(cursor.take(shape[0], f"{where}'s bits"))
    if any(b not in (0, *range(2, 17), _FLOAT_BITS) for b in bits):
        raise PackedFormatError(f"{cursor.where}: {where} has bits {list(bits)}; each must be 0, 2..16 or 32")
    kept_inputs = None
    if flags & _KEPT_INPUTS:
        raw = np.frombuffer(cursor.take(math.ceil(shape[1] / 8), f"{where}'s kept inputs"), dtype=np.uint8)
        kept_inputs = torch.from_numpy(np.unpackbits(raw, bitorder="little")[:shape[1]].astype(bool))
    (length,) = cursor.unpack("I", f"{where}'s attrs length")
    try:
        attrs = json.loads(cursor.take(length, f"{where}'s attrs").decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise PackedFormatError(f"{cursor.where}: {where}'s attrs are not UTF-8 JSON") from None
    (layer_bits,) = cursor.unpack("Q", f"{where}'s payload length")
    record = dict(name=name, kind=_KINDS[kind], flags=flags, shape=shape, bits=bits, kept_inputs=kept_inputs,
                  attrs=attrs)
    return record, layer_bits


def _read_layer(r: dict, stream: _BitReader, scale_bits: int) -> IntegerWeights:
    shape, bits = r["shape"], r["bits"]
    kept = [c for c, b in enumerate(bits) if b > 0]
    scaled = [c for c in kept if bits[c] < _FLOAT_BITS]
    scales = torch.tensor([1.0 if b >= _FLOAT_BITS else 0.0 for b in bits], dtype=torch.float32)
    scales[scaled] = _floats(stream.words(len(scaled), scale_bits), scale_bits)
    bias = None
    if r["flags"] & _BIAS:
        bias = torch.zeros(shape[0], dtype=torch.float32)
        bias[kept] = _floats(stream.words(len(kept), 32), 32)
    kept_inputs = r["kept_inputs"]
    values = torch.zeros(shape, dtype=torch.int32)
    region = torch.zeros(shape[1:], dtype=torch.bool)  # the positions of one channel that are stored at all
    region[kept_inputs if kept_inputs is not None else slice(None)] = True
    per_channel = int(region.sum())
    mask = None
    if r["flags"] & _SPARSE:
        mask = torch.zeros(shape, dtype=torch.bool)
        for c in kept:
            mask[c][region] = torch.from_numpy(stream.take(per_channel).astype(bool))
    for c in kept:
        stored = mask[c][region] if mask is not None else torch.ones(per_channel, dtype=torch.bool)
        row = torch.zeros(per_channel, dtype=torch.int64)
        row[stored] = torch.from_numpy(stream.words(int(stored.sum()), bits[c]))
        values[c][region] = row.to(torch.int32)
    return IntegerWeights(r["name"], r["kind"], values, scales, bits, mask, kept_inputs, bias, scale_bits, r["attrs"])


def read_packed(path: str | Path) -> PackedFile:
    """The layers of a packed file, restored bit-exactly (values, scales, bits, bitmap masks, kept inputs, biases).

    A layer stored dense comes back with ``mask=None`` (its pruned weights are zeros among its values).

    Raises:
        PackedFormatError: not a packed file of this version, or damaged; the message names the file and the place.
    """
    where = str(path)
    data = Path(path).read_bytes()
    if len(data) < _HEADER.size or data[:8] != MAGIC:
        raise PackedFormatError(f"{where}: not a packed nni-udc model (the file does not start with {MAGIC!r})")
    magic, version, scale_bits, _, count, payload_bits = _HEADER.unpack_from(data)
    if version != VERSION:
        raise PackedFormatError(f"{where}: packed format version {version}; this nni-udc reads {VERSION}")
    if scale_bits not in SCALE_BITS_CHOICES:
        raise PackedFormatError(f"{where}: scale_bits {scale_bits} in the header; allowed: {list(SCALE_BITS_CHOICES)}")
    cursor = _Cursor(data, where)
    cursor.at = _HEADER.size
    records = [_read_record(cursor, i) for i in range(count)]
    if sum(bits for _, bits in records) != payload_bits:
        raise PackedFormatError(f"{where}: the layers' payload lengths add up to {sum(b for _, b in records)} bits, "
                                f"the header says {payload_bits}")
    payload = data[cursor.at:]
    if len(payload) != (payload_bits + 7) // 8:
        raise PackedFormatError(f"{where}: the payload has {len(payload)} bytes; {payload_bits} bits need "
                                f"{(payload_bits + 7) // 8}")
    stream = _BitReader(payload, where)
    layers: dict[str, IntegerWeights] = {}
    for record, layer_bits in records:
        start = stream.at
        layers[record["name"]] = _read_layer(record, stream, scale_bits)
        if stream.at - start != layer_bits:
            raise PackedFormatError(f"{where}: layer {record['name']!r} reads {stream.at - start} payload bits, "
                                    f"its record says {layer_bits}")
    if stream.bits[stream.at:].any():
        raise PackedFormatError(f"{where}: the padding after the last layer is not zero")
    return PackedFile(layers, scale_bits, payload_bits, cursor.at)
