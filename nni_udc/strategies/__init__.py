"""Search strategies: NNI's multi-trial strategies over nni-udc spaces, and the pieces of the one-shot search."""
from __future__ import annotations

from nni_udc.strategies.expected_cost import ExpectedCost
from nni_udc.strategies.multitrial import TrialResult, run_multitrial
from nni_udc.strategies.penalty import LinearPenalty, TargetPenalty

__all__ = ["ExpectedCost", "LinearPenalty", "TargetPenalty", "TrialResult", "run_multitrial"]
