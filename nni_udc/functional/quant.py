"""Fake quantisation with straight-through gradients.

Weights: symmetric, narrow-range (levels ``-qmax..qmax`` with ``qmax = 2**(b-1) - 1``), one scale per
output channel taken from that channel's own absolute maximum. 32 bits means "keep float";
0 bits means "channel removed" (its weights become exactly zero and get no gradient).

Activations: PACT-style clipping with a learnable range ``alpha``: unsigned ``[0, alpha]`` or signed
``[-alpha, alpha]``, uniform levels, rounding passed straight through; ``alpha`` learns through the clip.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = [
    "FLOAT_BITS",
    "SUPPORTED_ACT_BITS",
    "SUPPORTED_WEIGHT_BITS",
    "fake_quantize_activation",
    "fake_quantize_weight",
]

FLOAT_BITS = 32
#: Weight bit-widths a layer may use; 0 (channel removed) only in per-channel mode.
SUPPORTED_WEIGHT_BITS: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8, 16, FLOAT_BITS)
SUPPORTED_ACT_BITS: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8, 16, FLOAT_BITS)

Bits = int | Sequence[int] | torch.Tensor


def _channel_bits(bits: Bits, out_channels: int, device: torch.device) -> torch.Tensor:
    """Bits as a float tensor of shape (out_channels,)."""
    t = torch.as_tensor(bits, dtype=torch.float32, device=device)
    if t.dim() == 0:
        return t.expand(out_channels)
    if t.shape != (out_channels,):
        raise ValueError(f"per-channel bits must have one entry per output channel ({out_channels}), got shape {tuple(t.shape)}")
    return t


def fake_quantize_weight(weight: torch.Tensor, bits: Bits) -> torch.Tensor:
    """Quantise ``weight`` symmetrically per output channel (dim 0) and dequantise it.

    ``bits`` is one bit-width for the whole tensor or one per output channel. The forward value is
    the quantised weight; the gradient is the identity for kept channels and zero for removed ones.

    Example:
        >>> w = torch.randn(4, 3, 3, 3, requires_grad=True)
        >>> q = fake_quantize_weight(w, [8, 4, 0, 32])
        >>> bool((q[2] == 0).all()), bool(torch.equal(q[3], w[3]))
        (True, True)
    """
    if isinstance(bits, int) and bits == FLOAT_BITS:
        return weight
    c = weight.shape[0]
    b = _channel_bits(bits, c, weight.device)
    view = (c,) + (1,) * (weight.dim() - 1)
    keep = (b > 0).to(weight.dtype).view(view)
    is_float = (b >= FLOAT_BITS).view(view)
    # qmax of 1 for float/removed channels only keeps the arithmetic finite; they are replaced below.
    qmax = torch.where((b > 1) & (b < FLOAT_BITS), 2.0 ** (b - 1) - 1, torch.ones_like(b)).view(view)
    absmax = weight.detach().abs().amax(dim=tuple(range(1, weight.dim())), keepdim=True).clamp_min(1e-12)
    scale = absmax / qmax
    q = torch.clamp(torch.round(weight.detach() / scale), -qmax, qmax) * scale
    q = torch.where(is_float, weight.detach(), q)
    return (weight + (q - weight.detach())) * keep


def fake_quantize_activation(x: torch.Tensor, bits: int, alpha: torch.Tensor, *, signed: bool) -> torch.Tensor:
    """PACT fake quantisation of ``x`` to ``bits`` with learnable clip ``alpha`` (a positive scalar tensor).

    Values outside the clipping range are clipped (their gradient goes to ``alpha``, as in PACT);
    rounding inside the range is passed straight through.

    Example:
        >>> x = torch.linspace(-1, 3, 9)
        >>> [round(v, 3) for v in fake_quantize_activation(x, 2, torch.tensor(2.0), signed=False).tolist()]
        [0.0, 0.0, 0.0, 0.667, 1.333, 1.333, 2.0, 2.0, 2.0]
    """
    if bits >= FLOAT_BITS:
        return x
    if not bool((alpha > 0).all()):
        raise ValueError(f"the activation clip must be positive, but got {alpha.detach().tolist()!r}")
    if signed:
        levels = 2 ** (bits - 1) - 1
        y = torch.minimum(torch.maximum(x, -alpha), alpha)
    else:
        levels = 2**bits - 1
        y = torch.minimum(torch.relu(x), alpha)
    scale = alpha / levels
    q = torch.round(y / scale) * scale
    return y + (q - y).detach()
