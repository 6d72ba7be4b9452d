"""The integer form of a frozen model's weight layers: what a deployment stores and computes with.

A compressible layer's forward pass recomputes its weight every call (mask, then per-channel symmetric narrow-range
quantisation, see :mod:`nni_udc.functional.quant`). :func:`integer_weights` takes that computation apart once, into an
:class:`IntegerWeights` record per weight layer:

``values``
    ``int32``, the weight's shape. A quantised channel (2..16 bits) holds its integer levels ``-qmax..qmax``
    (``qmax = 2**(b-1) - 1``), exactly 0 at masked positions and at inputs removed upstream. A float channel
    (32 bits) holds the raw IEEE float32 bit patterns of its weights (``values[c].view(torch.float32)``), so one
    integer tensor carries every channel and a packer stores each channel as ``bits[c]``-bit two's complement
    words. A removed channel (0 bits) is all 0.
``scales``
    ``float32``, one per output channel: ``weight ≈ values · scale``. Stored rounded to ``scale_bits``: 16 (the
    default) rounds each scale to IEEE half precision, the width :data:`nni_udc.evaluators.costs.SCALE_BITS` counts in
    ``memory_bits``; 32 keeps float32. Float and removed channels store no scale: their entry is 1.0 and 0.0.
    After :func:`fold_batchnorm` a scale may be negative (a negative BatchNorm gain).
``bits``
    weight bits per output channel (0 removed, 2..16 quantised, 32 float), as the layer's ``weight_bits``.
``mask``
    the sparsity mask (``bool``, the weight's shape; ``True`` = stored position) of a pruned layer, else ``None``.
    A masked-out position is 0 in ``values``; a kept position may also round to 0. Removed channels and inputs
    removed upstream are never ``True``.
``kept_inputs``
    ``bool`` per input channel when the layer's inputs were removed upstream (``in_channel_bits``), else ``None``:
    those weight columns are 0 and a packer does not store them.
``bias``
    ``float32`` per output channel, or ``None``. A removed channel's bias is 0: it is not stored (``memory_bits``
    counts biases of kept channels only), so a deployed removed channel outputs 0, not its bias.

:meth:`IntegerWeights.dequantize` is the weight a deployed model computes with (``values · scales``, rounded scales
included); it differs from the searched layer's own compressed weight only by the scale rounding (relative
``2**-11`` of a channel's largest weight at 16 bits, none at 32).

A low-rank layer is two records (``'<name>.first'`` and ``'<name>.second'``, the names the cost specs use); a plain
``nn.Conv1d``/``nn.Conv2d``/``nn.Linear`` is a float layer (32 bits on every channel), as the costs treat it.

Example:
    >>> from torch import nn
    >>> from nni_udc.nn import QuantConv2d
    >>> model = nn.Sequential(QuantConv2d(1, 4, 3, weight_bits=[4, 0, 8, 32]), nn.BatchNorm2d(4))
    >>> layers = integer_layers(model)
    >>> conv = layers['0']
    >>> conv.bits, conv.values.dtype, int(conv.values[0].abs().max()) <= 7
    ((4, 0, 8, 32), torch.int32, True)
    >>> bool((conv.dequantize() - model[0].compressed_weight()).abs().max() < 1e-3)
    True
    >>> folded = fold_batchnorm(conv, model[1])          # the integers stay, the scales change
    >>> bool(torch.equal(folded.values[:3], conv.values[:3]))
    True
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nni_udc.evaluators.costs import SCALE_BITS, SCALE_BITS_CHOICES
from nni_udc.functional import fake_quantize_weight, magnitude_mask
from nni_udc.functional.quant import FLOAT_BITS
from nni_udc.nn import LOWRANK_LAYERS, QUANT_LAYERS, SPARSE_LAYERS, LowRankConv1d, LowRankConv2d

__all__ = ["DEFAULT_SCALE_BITS", "SCALE_BITS_CHOICES", "IntegerWeights", "fold_batchnorm", "integer_layers",
           "integer_weights", "qmax", "round_scales"]

#: Scales are stored as IEEE half precision unless told otherwise (the width ``memory_bits`` counts).
DEFAULT_SCALE_BITS = SCALE_BITS
_SCALE_DTYPES = {16: torch.float16, 32: torch.float32}


def qmax(bits: int) -> int:
    """The largest level of a ``bits``-bit narrow-range symmetric quantiser (``2**(bits-1) - 1``; 0 for 0 bits).

    Example:
        >>> qmax(2), qmax(4), qmax(8), qmax(0)
        (1, 7, 127, 0)
    """
    return 0 if bits == 0 else 2 ** (bits - 1) - 1


def round_scales(scales: torch.Tensor, scale_bits: int = DEFAULT_SCALE_BITS, *, name: str = "") -> torch.Tensor:
    """``scales`` (float32) rounded to what ``scale_bits`` stores: IEEE half for 16, unchanged for 32.

    Raises:
        ValueError: an unsupported width, or a scale that does not fit (beyond ±65504 at 16 bits).

    Example:
        >>> round_scales(torch.tensor([0.1]), 16).item()
        0.0999755859375
    """
    if scale_bits not in _SCALE_DTYPES:
        raise ValueError(f"scale_bits must be one of {list(SCALE_BITS_CHOICES)}, but got {scale_bits!r}")
    rounded = scales.detach().to(torch.float32).to(_SCALE_DTYPES[scale_bits]).to(torch.float32)
    if not bool(torch.isfinite(rounded).all()):
        where = f" of layer {name!r}" if name else ""
        raise ValueError(f"a scale{where} does not fit in {scale_bits} bits: {scales.tolist()!r}")
    return rounded


@dataclass(frozen=True)
class IntegerWeights:
    """One weight layer in integer form (see the module docstring for each field's meaning).

    ``kind`` is ``'conv1d'``, ``'conv2d'`` or ``'linear'``; ``attrs`` holds what a deployment needs besides the
    weights: for a conv ``stride``, ``padding``, ``dilation``, ``groups``; for every layer ``act_bits`` (input
    activation bits, 32 = float), and where the inputs are quantised ``act_clip`` (the learnt PACT range) and
    ``act_signed``.
    """

    name: str
    kind: str
    values: torch.Tensor
    scales: torch.Tensor
    bits: tuple[int, ...]
    mask: torch.Tensor | None = None
    kept_inputs: torch.Tensor | None = None
    bias: torch.Tensor | None = None
    scale_bits: int = DEFAULT_SCALE_BITS
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        """The weight's shape ``(out, in/groups, *kernel)``."""
        return tuple(self.values.shape)

    @property
    def out_channels(self) -> int:
        return self.values.shape[0]

    def kept_channels(self) -> list[int]:
        """Indices of the output channels that are not removed."""
        return [c for c, b in enumerate(self.bits) if b > 0]

    def float_channels(self) -> torch.Tensor:
        """``bool`` per output channel: stored as float32 (32 bits)."""
        return torch.tensor([b >= FLOAT_BITS for b in self.bits])

    def quantised_channels(self) -> torch.Tensor:
        """``bool`` per output channel: stored as integers with a scale (0 < bits < 32)."""
        return torch.tensor([0 < b < FLOAT_BITS for b in self.bits])

    def dequantize(self) -> torch.Tensor:
        """The float32 weight a deployed model computes with: ``values · scales`` (float channels: their floats).

        Example:
            >>> w = IntegerWeights('fc', 'linear', torch.tensor([[3, -1], [0, 0]], dtype=torch.int32),
            ...                    torch.tensor([0.5, 0.0]), (4, 0))
            >>> w.dequantize().tolist()
            [[1.5, -0.5], [0.0, 0.0]]
        """
        view = (-1,) + (1,) * (self.values.dim() - 1)
        weight = self.values.to(torch.float32) * self.scales.view(view)
        floats = self.float_channels()
        if bool(floats.any()):
            weight[floats] = self.values[floats].view(torch.float32)
        removed = torch.tensor([b == 0 for b in self.bits])
        weight[removed] = 0.0
        return weight


def _bits_list(weight_bits: int | Sequence[int], out_channels: int) -> tuple[int, ...]:
    if isinstance(weight_bits, Sequence):
        return tuple(int(b) for b in weight_bits)
    return (int(weight_bits),) * out_channels


def _integers(name: str, weight: torch.Tensor, bits: tuple[int, ...], scale_bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The integer levels and rounded scales of an already masked ``weight``.

    The levels are read off the layer's own fake-quantised weight (``fake_quantize_weight``), divided by the scale
    it used, so they are the very integers the searched model computed with.
    """
    weight = weight.detach().to(torch.float32)
    b = torch.tensor(bits, dtype=torch.float32)
    view = (-1,) + (1,) * (weight.dim() - 1)
    quantised = (b > 0) & (b < FLOAT_BITS)
    levels = torch.where(quantised, 2.0 ** (b - 1) - 1, torch.ones_like(b))
    absmax = weight.abs().amax(dim=tuple(range(1, weight.dim()))).clamp_min(1e-12)
    scale = absmax / levels  # the scale fake_quantize_weight uses (same operations, same float32 result)
    fake = fake_quantize_weight(weight, list(bits)).detach()
    values = torch.round(fake / scale.view(view)).to(torch.int32)
    values = torch.where(quantised.view(view), values, torch.zeros_like(values))
    floats = b >= FLOAT_BITS
    if bool(floats.any()):
        # + 0.0 turns a masked -0.0 into +0.0: nothing stored is the all-zero word
        values[floats] = (weight[floats] + 0.0).contiguous().view(torch.int32)
    scales = torch.where(quantised, round_scales(scale, scale_bits, name=name),
                         torch.where(floats, torch.ones_like(scale), torch.zeros_like(scale)))
    return values, scales


def _bias(module_bias: torch.Tensor | None, bits: tuple[int, ...]) -> torch.Tensor | None:
    if module_bias is None:
        return None
    kept = torch.tensor([b > 0 for b in bits], dtype=torch.float32)
    return module_bias.detach().to(torch.float32) * kept


def _conv_attrs(module: Any) -> dict[str, Any]:
    return {"stride": list(module.stride), "dilation": list(module.dilation), "groups": int(module.groups),
            "padding": module.padding if isinstance(module.padding, str) else list(module.padding)}


def _act_attrs(module: nn.Module) -> dict[str, Any]:
    quant = getattr(module, "act_quant", None)
    if quant is None or quant.bits >= FLOAT_BITS:
        return {"act_bits": FLOAT_BITS}
    return {"act_bits": int(quant.bits), "act_clip": float(quant.clip.detach()), "act_signed": bool(quant.signed)}


def _kind(module: nn.Module) -> str:
    if isinstance(module, (nn.Conv1d, LowRankConv1d)):
        return "conv1d"
    if isinstance(module, (nn.Conv2d, LowRankConv2d)):
        return "conv2d"
    return "linear"


def _record(name: str, module: nn.Module, weight: torch.Tensor, bits: tuple[int, ...], scale_bits: int, *,
            mask: torch.Tensor | None = None, kept_inputs: torch.Tensor | None = None,
            bias: torch.Tensor | None = None, attrs: dict[str, Any]) -> IntegerWeights:
    values, scales = _integers(name, weight, bits, scale_bits)
    if mask is not None:  # only positions that are stored: none in removed channels or at removed inputs
        mask = mask.detach().bool() & torch.tensor([b > 0 for b in bits]).view((-1,) + (1,) * (mask.dim() - 1))
        if kept_inputs is not None:
            mask = mask & kept_inputs.view((1, -1) + (1,) * (mask.dim() - 2))
    return IntegerWeights(name, _kind(module), values, scales, bits, mask, kept_inputs, _bias(bias, bits), scale_bits,
                          attrs)


def _quant_layer(name: str, module: Any, scale_bits: int) -> list[IntegerWeights]:
    w = module.weight.detach()
    bits = _bits_list(module.weight_bits, w.shape[0])
    sparsity = float(module.sparsity)
    kept_inputs = None
    mask = None
    if module.in_channel_bits is None:
        if sparsity > 0:
            mask = magnitude_mask(w, sparsity)
            w = w * mask
    else:  # the same masking as _Compressed.compressed_weight: removed inputs are never stored
        kept_inputs = module.input_mask.bool()
        full = torch.zeros_like(w)
        full[:, kept_inputs] = magnitude_mask(w[:, kept_inputs], sparsity) if sparsity > 0 else 1.0
        mask = full if sparsity > 0 else None
        w = w * full
    attrs = {**(_conv_attrs(module) if not isinstance(module, nn.Linear) else {}), **_act_attrs(module)}
    return [_record(name, module, w, bits, scale_bits, mask=mask, kept_inputs=kept_inputs, bias=module.bias,
                    attrs=attrs)]


def _sparse_layer(name: str, module: Any, scale_bits: int) -> list[IntegerWeights]:
    w = module.weight.detach()
    mask = module.mask().detach()
    bits = _bits_list(module.weight_bits, w.shape[0])
    attrs = {**(_conv_attrs(module) if not isinstance(module, nn.Linear) else {}), "act_bits": FLOAT_BITS}
    return [_record(name, module, w * mask, bits, scale_bits, mask=mask if float(module.sparsity) > 0 else None,
                    bias=module.bias, attrs=attrs)]


def _lowrank_layer(name: str, module: Any, scale_bits: int) -> list[IntegerWeights]:
    out = []
    for part in ("first", "second"):
        factor = getattr(module, part)
        bits = _bits_list(module.weight_bits, factor.weight.shape[0])
        attrs = {**(_conv_attrs(factor) if not isinstance(factor, nn.Linear) else {}), "act_bits": FLOAT_BITS}
        out.append(_record(f"{name}.{part}", factor, factor.weight, bits, scale_bits, bias=factor.bias, attrs=attrs))
    return out


def _float_layer(name: str, module: Any, scale_bits: int) -> list[IntegerWeights]:
    w = module.weight.detach()
    attrs = {**(_conv_attrs(module) if not isinstance(module, nn.Linear) else {}), "act_bits": FLOAT_BITS}
    return [_record(name, module, w, (FLOAT_BITS,) * w.shape[0], scale_bits, bias=module.bias, attrs=attrs)]


_CONVERTERS: tuple[tuple[tuple[type, ...], Any], ...] = (
    (QUANT_LAYERS, _quant_layer),
    (SPARSE_LAYERS, _sparse_layer),
    (LOWRANK_LAYERS, _lowrank_layer),
    ((nn.Conv1d, nn.Conv2d, nn.Linear), _float_layer),  # after the compressible subclasses of these
)


def integer_weights(name: str, module: nn.Module, *, scale_bits: int = DEFAULT_SCALE_BITS) -> list[IntegerWeights]:
    """The integer records of one weight layer (two for a low-rank layer), named as the cost specs name them.

    Raises:
        TypeError: ``module`` is not a weight layer this module knows; the message names it and the known types.
        ValueError: a ``scale_bits`` that is not 16 or 32, or a scale that does not fit in it.
    """
    if scale_bits not in SCALE_BITS_CHOICES:
        raise ValueError(f"scale_bits must be one of {list(SCALE_BITS_CHOICES)}, but got {scale_bits!r}")
    for types, convert in _CONVERTERS:
        if isinstance(module, types):
            return convert(name, module, scale_bits)
    known = ", ".join(t.__name__ for types, _ in _CONVERTERS for t in types)
    raise TypeError(f"module {name!r} ({type(module).__name__}) has no integer form; known layer types: {known}")


def integer_layers(model: nn.Module, *, scale_bits: int = DEFAULT_SCALE_BITS) -> dict[str, IntegerWeights]:
    """Every weight layer of a frozen ``model`` in integer form, by name, in module order.

    A layer found is taken as a whole (the factors of a low-rank layer are not visited again). Every module of the
    model is included, so give a *frozen* model (no unused candidates left in it): the costs count the layers that
    run, and a frozen model runs all it holds.

    Raises:
        TypeError: the model holds a module with its own weights that has no integer form (an ``nn.LSTM``, ...).
    """
    from nni_udc.evaluators.layers import holds_uncosted_weights

    out: dict[str, IntegerWeights] = {}
    owners: list[str] = []
    for name, module in model.named_modules():
        if any(owner == "" or name.startswith(owner + ".") for owner in owners):
            continue
        if any(isinstance(module, types) for types, _ in _CONVERTERS):
            owners.append(name)
            for record in integer_weights(name, module, scale_bits=scale_bits):
                out[record.name] = record
        elif holds_uncosted_weights(module):
            raise TypeError(f"module {name or '<model>'!r} ({type(module).__name__}) holds weights that have no "
                            "integer form; only Conv1d/Conv2d/Linear and nni_udc's compressible layers can be exported")
    return out


def fold_batchnorm(weights: IntegerWeights, bn: nn.Module) -> IntegerWeights:
    """``weights`` with the BatchNorm ``bn`` that follows the layer folded in; the integers stay unchanged.

    In eval mode ``bn(y) = y · k + (β - μ · k)`` with ``k = γ / sqrt(σ² + ε)`` per channel, so the layer followed
    by ``bn`` is the same layer with each quantised channel's scale multiplied by ``k`` (then rounded to
    ``scale_bits`` again), each float channel's weights multiplied by ``k``, and the bias
    ``(bias - μ) · k + β`` (a layer without a bias gains one). A removed channel keeps no bias (see the module
    docstring). Per-channel scales are what make this free: the integer ``values`` are untouched.

    Args:
        weights: the layer in integer form (its output channels are ``bn``'s features).
        bn: an ``nn.BatchNorm1d``/``nn.BatchNorm2d`` with running statistics, in the state it runs in eval mode.

    Returns:
        A new :class:`IntegerWeights`; ``weights`` is not changed.

    Raises:
        ValueError: ``bn`` is not a BatchNorm with running statistics, or its features differ from the layer's
            output channels.

    Example:
        >>> bn = nn.BatchNorm1d(2).eval()
        >>> _ = bn.running_mean.fill_(1.0)
        >>> w = IntegerWeights('fc', 'linear', torch.tensor([[3, -1], [2, 2]], dtype=torch.int32),
        ...                    torch.tensor([0.5, 0.25]), (4, 4), bias=torch.tensor([1.0, 2.0]))
        >>> folded = fold_batchnorm(w, bn)
        >>> folded.values.tolist(), [round(b, 3) for b in folded.bias.tolist()]
        ([[3, -1], [2, 2]], [0.0, 1.0])
    """
    if not isinstance(bn, nn.modules.batchnorm._BatchNorm) or bn.running_var is None or bn.running_mean is None:
        raise ValueError(f"cannot fold {type(bn).__name__} into layer {weights.name!r}: only a BatchNorm with "
                         "running statistics (track_running_stats=True) can be folded")
    if bn.num_features != weights.out_channels:
        raise ValueError(f"cannot fold {type(bn).__name__}({bn.num_features}) into layer {weights.name!r}: it has "
                         f"{weights.out_channels} output channels")
    mean, var = bn.running_mean.detach().float(), bn.running_var.detach().float()
    gain = bn.weight.detach().float() if bn.weight is not None else torch.ones_like(mean)
    shift = bn.bias.detach().float() if bn.bias is not None else torch.zeros_like(mean)
    factor = gain / torch.sqrt(var + bn.eps)
    quantised, floats = weights.quantised_channels(), weights.float_channels()
    scales = torch.where(quantised, round_scales(weights.scales * factor, weights.scale_bits, name=weights.name),
                         weights.scales)
    values = weights.values.clone()
    if bool(floats.any()):
        view = (-1,) + (1,) * (values.dim() - 1)
        scaled = values[floats].view(torch.float32) * factor[floats].view(view)
        values[floats] = scaled.contiguous().view(torch.int32)
    bias = weights.bias.float() if weights.bias is not None else torch.zeros_like(mean)
    kept = torch.tensor([b > 0 for b in weights.bits], dtype=torch.float32)
    new_bias = ((bias - mean) * factor + shift) * kept
    return dataclasses.replace(weights, values=values, scales=scales, bias=new_bias)
