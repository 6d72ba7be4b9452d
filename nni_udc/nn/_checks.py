"""Validation of compression arguments, shared by the modules and the mutable helpers.

Every check raises ``ValueError`` that states the rule and shows the value (Optuna style).
"""
from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any

from nni_udc.functional.quant import SUPPORTED_ACT_BITS, SUPPORTED_WEIGHT_BITS

__all__ = ["check_act_bits", "check_rank", "check_sparsity", "check_weight_bits"]


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def check_weight_bits(value: Any, *, field: str = "weight_bits", allow_zero: bool = False) -> int:
    allowed = ((0,) if allow_zero else ()) + SUPPORTED_WEIGHT_BITS
    if not _is_int(value) or value not in allowed:
        hint = "" if allow_zero or value != 0 else " (0 bits = channel removed is allowed only per output channel)"
        raise ValueError(f"{field} must be one of {list(allowed)}, but got {value!r}{hint}")
    return int(value)


def check_channel_bits(value: Any, out_channels: int, *, field: str = "weight_bits") -> int | list[int]:
    """A single bit-width, or one per output channel (0 = channel removed, not all channels)."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        bits = [check_weight_bits(b, field=f"{field}[{i}]", allow_zero=True) for i, b in enumerate(value)]
        if len(bits) != out_channels:
            raise ValueError(f"{field} must list one bit-width per output channel ({out_channels}), but got {len(bits)}: {bits!r}")
        if not any(bits):
            raise ValueError(f"{field} must keep at least one output channel, but got {bits!r} (all 0 bits)")
        return bits
    return check_weight_bits(value, field=field)


def check_act_bits(value: Any, *, field: str = "act_bits") -> int:
    if not _is_int(value) or value not in SUPPORTED_ACT_BITS:
        raise ValueError(f"{field} must be one of {list(SUPPORTED_ACT_BITS)}, but got {value!r}")
    return int(value)


def check_sparsity(value: Any, *, field: str = "sparsity") -> float:
    if not isinstance(value, Real) or isinstance(value, bool) or not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{field} must be a number in [0, 1), but got {value!r}")
    return float(value)


def check_rank(value: Any, limit: int, *, field: str = "rank") -> int:
    if not _is_int(value) or not 1 <= value <= limit:
        raise ValueError(f"{field} must be an integer in [1, {limit}] for this layer, but got {value!r}")
    return int(value)
