"""Search strategies: NNI's multi-trial strategies over nni-udc spaces (one-shot strategies follow)."""
from __future__ import annotations

from nni_udc.strategies.multitrial import TrialResult, run_multitrial

__all__ = ["TrialResult", "run_multitrial"]
