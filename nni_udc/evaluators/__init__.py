"""Costs of compressed models: layer specs, pure cost formulas, exact costs and NNI profilers.

Importing this package registers nni-udc's modules with NNI's profilers (shape inference, FLOPs and
parameter formulas), so NNI's ``FlopsProfiler`` and ``NumParamsProfiler`` understand them.
"""
from __future__ import annotations

from nni_udc.evaluators.costs import COSTS, bitops, kept_channels, macs, memory_bits, params, resolve_cost, total
from nni_udc.evaluators.exact import exact_costs, model_specs
from nni_udc.evaluators.layers import register_spec_builder, specs_of
from nni_udc.evaluators.nni_profiler import CostProfiler, register_nni_formulas
from nni_udc.evaluators.spec import LayerSpec

register_nni_formulas()

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
