"""Search strategies: NNI's multi-trial strategies over nni-udc spaces, and the UDC one-shot search.

One-shot: :class:`UDC` (everything), and the presets :class:`HALOC` (ranks), :class:`ChannelMixedPrecision`
(per-channel bits, 0 = pruned) and :class:`DASS` (sparse ops in DARTS cells).
"""
from __future__ import annotations

from nni_udc.strategies.expected_cost import ExpectedCost
from nni_udc.strategies.multitrial import TrialResult, run_multitrial
from nni_udc.strategies.penalty import LinearPenalty, TargetPenalty
from nni_udc.strategies.presets import DASS, HALOC, ChannelMixedPrecision
from nni_udc.strategies.supernet import MIXED_OPERATION_HOOKS
from nni_udc.strategies.udc import UDC, SearchResult, reference_sample
from nni_udc.strategies.uniform import uniform_grid

__all__ = [
    "DASS",
    "HALOC",
    "MIXED_OPERATION_HOOKS",
    "UDC",
    "ChannelMixedPrecision",
    "ExpectedCost",
    "LinearPenalty",
    "SearchResult",
    "TargetPenalty",
    "TrialResult",
    "reference_sample",
    "run_multitrial",
    "uniform_grid",
]
