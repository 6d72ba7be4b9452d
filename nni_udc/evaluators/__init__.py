"""Costs of compressed models: layer specs, pure cost formulas, exact costs and NNI profilers.

:func:`register_nni_formulas` teaches NNI's own profilers nni-udc's modules (shape inference, FLOPs and
parameter formulas), so NNI's ``FlopsProfiler`` and ``NumParamsProfiler`` understand them; call it once
before using them (:class:`CostProfiler` calls it itself). Importing this package registers nothing.
"""
from __future__ import annotations

from nni_udc.evaluators.costs import COSTS, bitops, kept_channels, macs, memory_bits, params, resolve_cost, total
from nni_udc.evaluators.exact import exact_costs, model_specs
from nni_udc.evaluators.layers import register_spec_builder, specs_of
from nni_udc.evaluators.nni_profiler import CostProfiler, register_nni_formulas
from nni_udc.evaluators.spec import LayerSpec

__all__ = [
    "COSTS",
    "CostProfiler",
    "LayerSpec",
    "bitops",
    "exact_costs",
    "kept_channels",
    "macs",
    "memory_bits",
    "model_specs",
    "params",
    "register_nni_formulas",
    "register_spec_builder",
    "resolve_cost",
    "specs_of",
    "total",
]
