"""Builders for the compression mutables: each checks its candidates before NNI ever sees them.

Mutable modules are built inside a ``ModelSpace``'s ``__init__``, as everywhere in NNI.

Example:
    >>> from nni.nas.nn.pytorch import ModelSpace
    >>> from nni_udc.nn import MutableQuantConv2d, bits_choice, sparsity_choice
    >>> class Net(ModelSpace, label_prefix=None):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.conv = MutableQuantConv2d(3, 8, 3, weight_bits=bits_choice('b1', [2, 4, 8]),
    ...                                        sparsity=sparsity_choice('s1', [0.0, 0.5]))
    >>> sorted(Net().simplify())
    ['b1', 's1']
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import nni
from nni.mutable import Categorical, MutableList

from nni_udc.nn._checks import check_act_bits, check_rank, check_sparsity, check_weight_bits

__all__ = ["act_bits_choice", "bits_choice", "channel_bits_choice", "rank_choice", "sparsity_choice"]


def _candidates(label: str, values: Any, what: str) -> list:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ValueError(f"{what} candidates for {label!r} must be a list, but got {values!r}")
    values = list(values)
    if not values:
        raise ValueError(f"{what} candidates for {label!r} must not be empty, but got {values!r}")
    try:
        distinct = len(set(values))
    except TypeError:  # unhashable candidate (e.g. a nested list): a bad value, not a crash
        raise ValueError(f"{what} candidates for {label!r} must be numbers, but got {values!r}") from None
    if distinct != len(values):
        raise ValueError(f"{what} candidates for {label!r} must be distinct, but got {values!r}")
    return values


def bits_choice(label: str, candidates: Sequence[int] = (2, 4, 8)) -> Categorical:
    """A weight bit-width chosen per layer, from {2..8, 16, 32 (float)}."""
    values = _candidates(label, candidates, "bit-width")
    for v in values:
        check_weight_bits(v, field=f"bit-width candidate of {label!r}")
    return nni.choice(label, values)


def act_bits_choice(label: str, candidates: Sequence[int] = (4, 8)) -> Categorical:
    """An input-activation bit-width chosen per layer, from {2..8, 16, 32 (float)}."""
    values = _candidates(label, candidates, "activation bit-width")
    for v in values:
        check_act_bits(v, field=f"activation bit-width candidate of {label!r}")
    return nni.choice(label, values)


def channel_bits_choice(label: str, out_channels: int, candidates: Sequence[int] = (0, 2, 4, 8), *,
                        group_size: int = 1) -> MutableList:
    """One weight bit-width per output channel; 0 bits removes the channel.

    Channels are decided in groups of ``group_size`` consecutive channels (one label per group,
    ``{label}_g{i}``) to keep the space small on wide layers.

    Example:
        >>> bits = channel_bits_choice('fc', 4, [0, 4, 8], group_size=2)
        >>> sorted(bits.simplify())
        ['fc_g0', 'fc_g1']
    """
    values = _candidates(label, candidates, "per-channel bit-width")
    for v in values:
        check_weight_bits(v, field=f"per-channel bit-width candidate of {label!r}", allow_zero=True)
    if values == [0]:
        raise ValueError(f"per-channel bit-width candidates for {label!r} must include a non-zero bit-width, but got [0]")
    if not isinstance(out_channels, int) or isinstance(out_channels, bool) or out_channels < 1:
        raise ValueError(f"out_channels for {label!r} must be a positive integer, but got {out_channels!r}")
    if not isinstance(group_size, int) or isinstance(group_size, bool) or not 1 <= group_size <= out_channels:
        raise ValueError(f"group_size for {label!r} must be an integer in [1, {out_channels}], but got {group_size!r}")
    # Default to the widest bit-width so the dry run (and NNI's default sample) keeps every channel.
    groups = [Categorical(values, default=max(values), label=f"{label}_g{g}") for g in range((out_channels + group_size - 1) // group_size)]
    return MutableList([groups[c // group_size] for c in range(out_channels)])


def sparsity_choice(label: str, candidates: Sequence[float] = (0.0, 0.5, 0.75)) -> Categorical:
    """An unstructured sparsity ratio (fraction of zero weights) from [0, 1)."""
    values = _candidates(label, candidates, "sparsity")
    for v in values:
        check_sparsity(v, field=f"sparsity candidate of {label!r}")
    return nni.choice(label, [float(v) for v in values])


def rank_choice(label: str, candidates: Sequence[int], *, max_rank: int) -> Categorical:
    """A factorisation rank; ``max_rank`` is the layer's limit (see :func:`nni_udc.functional.max_rank`)."""
    values = _candidates(label, candidates, "rank")
    for v in values:
        check_rank(v, max_rank, field=f"rank candidate of {label!r}")
    return nni.choice(label, values)
