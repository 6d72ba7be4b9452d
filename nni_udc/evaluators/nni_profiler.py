"""Our cost formulas inside NNI's profiler machinery.

Two things:

1. :func:`register_nni_formulas` teaches NNI's own ``FlopsProfiler`` / ``NumParamsProfiler`` (and its shape
   inference) our modules, with MACs as "flops" and our parameter count as "params". Call it before using
   NNI's profilers on our modules; :class:`CostProfiler` calls it itself, and nothing runs it at import.
2. :class:`CostProfiler` turns any cost formula (``'memory_bits'``, ``'bitops'``, a function of a spec)
   into a symbolic NNI expression over a model space, usable by ``ExpressionConstraint`` and
   NNI's multi-trial strategies. ``LayerChoice`` becomes ``switch_case``; ``Repeat`` depth becomes
   ``(depth >= i) * block``, as in NNI's FLOPs profiler.
"""
from __future__ import annotations

from typing import Any

import torch
from nni.mutable import MutableExpression, Sample
from nni.nas.nn.pytorch import LayerChoice, ModelSpace, MutableBatchNorm1d, MutableConv1d, Repeat
from nni.nas.profiler import ExpressionProfiler
from nni.nas.profiler.pytorch.flops import FlopsResult, register_flops_formula
from nni.nas.profiler.pytorch.utils import (
    ShapeTensor,
    concat_name,
    profiler_leaf_module,
    standardize_arguments,
    submodule_input_output_shapes,
)
from nni.nas.profiler.pytorch.utils.shape import MutableShape
from nni.nas.profiler.pytorch.utils.shape_formula import (
    keep_shape_formula,
    linear_formula,
    register_shape_inference_formula,
)
from torch import nn

from nni_udc.evaluators.costs import CostFn, kept_channels, macs, params, resolve_cost
from nni_udc.evaluators.layers import find_spec_builder, module_arg, specs_of, uncosted_error, uncosted_modules
from nni_udc.nn import (
    LowRankConv1d,
    LowRankConv2d,
    LowRankLinear,
    MutableLowRankConv1d,
    MutableLowRankConv2d,
    MutableLowRankLinear,
    MutableQuantConv1d,
    MutableQuantConv2d,
    MutableQuantLinear,
    MutableSparseConv1d,
    MutableSparseConv2d,
    MutableSparseLinear,
    QuantConv1d,
    QuantConv2d,
    QuantLinear,
    SparseConv1d,
    SparseConv2d,
    SparseLinear,
)

__all__ = ["CostProfiler", "register_nni_formulas"]

_CONV_TYPES = (QuantConv1d, MutableQuantConv1d, SparseConv1d, MutableSparseConv1d, LowRankConv1d, MutableLowRankConv1d,
               QuantConv2d, MutableQuantConv2d, SparseConv2d, MutableSparseConv2d, LowRankConv2d, MutableLowRankConv2d)
_LINEAR_TYPES = (QuantLinear, MutableQuantLinear, SparseLinear, MutableSparseLinear, LowRankLinear, MutableLowRankLinear)
_registered = False


def _conv_formula(module: nn.Module, input: ShapeTensor) -> MutableShape:
    """Output shape of a conv of any dimension, plain or NNI mutable (NNI 3.0 ships a formula for 2-D convs only).

    The dimension is that of the built module (torch keeps one ``kernel_size`` entry per dimension); the arguments
    are read with :func:`~nni_udc.evaluators.layers.module_arg`, so they may be choices.
    """
    shape = list(input.real_shape)
    dims = len(module.kernel_size)  # type: ignore[arg-type]

    def per_dim(name: str) -> tuple[Any, ...]:
        value = module_arg(module, name)
        return tuple(value) if isinstance(value, (tuple, list)) else (value,) * dims

    shape[-dims - 1] = module_arg(module, "out_channels")
    kernel, stride, dilation = per_dim("kernel_size"), per_dim("stride"), per_dim("dilation")
    padding = module_arg(module, "padding")
    if isinstance(padding, str) and padding == "same":  # torch allows it with stride 1 only: sizes are kept
        return MutableShape(*shape)
    padding = (0,) * dims if isinstance(padding, str) else per_dim("padding")  # the other string is "valid"
    for i in range(dims):
        size = shape[i - dims]
        shape[i - dims] = (size + 2 * padding[i] - dilation[i] * (kernel[i] - 1) - 1) // stride[i] + 1
    return MutableShape(*shape)


def _flops_formula(module: nn.Module, inputs: Any, output: Any, name: str = "", count_bias: bool = True) -> FlopsResult:
    specs = specs_of(name, module, output) or []
    flops = sum(macs(s) for s in specs)
    if count_bias:  # NNI counts one add per bias per output position
        flops = flops + sum(s.positions * kept_channels(s) for s in specs if s.bias)
    return FlopsResult(flops, sum(params(s) for s in specs))


def register_nni_formulas() -> None:
    """Register shape inference and FLOPs/params formulas of every nni-udc module with NNI (idempotent)."""
    global _registered
    if _registered:
        return
    for cls in _CONV_TYPES + _LINEAR_TYPES:
        profiler_leaf_module(cls)
        register_shape_inference_formula(cls, _conv_formula if cls in _CONV_TYPES else linear_formula)
        register_flops_formula(cls, _flops_formula)
    # NNI 3.0 infers no shapes through 1-D convs and batch norms (its FLOPs formulas know them): add the shapes.
    for conv in (nn.Conv1d, MutableConv1d):
        register_shape_inference_formula(conv, _conv_formula)
    for norm in (nn.BatchNorm1d, MutableBatchNorm1d):
        register_shape_inference_formula(norm, keep_shape_formula)
    _registered = True


def _symbolic_cost(name: str, module: nn.Module, shapes: dict, cost: CostFn) -> Any:
    if isinstance(module, LayerChoice):
        branches = {v: _symbolic_cost(concat_name(name, str(v)), module[v], shapes, cost) for v in module.choice.values}
        return MutableExpression.switch_case(module.choice, branches)
    if isinstance(module, Repeat):
        if isinstance(module.depth_choice, int):
            return sum(_symbolic_cost(concat_name(name, f"blocks.{i}"), module.blocks[i], shapes, cost)
                       for i in range(module.depth_choice))
        return sum((module.depth_choice >= d) * _symbolic_cost(concat_name(name, f"blocks.{d - 1}"), block, shapes, cost)
                   for d, block in enumerate(module.blocks, start=1))
    builder = find_spec_builder(module)
    if builder is not None:
        if name not in shapes:
            raise KeyError(f"no shape was inferred for module {name!r} ({type(module).__name__}); "
                           f"did it run in the forward pass? Modules with shapes: {sorted(shapes)[:20]}")
        return sum(cost(s) for s in builder(name, module, shapes[name][1]))
    return sum((_symbolic_cost(concat_name(name, n), child, shapes, cost) for n, child in module.named_children()), 0)


class CostProfiler(ExpressionProfiler):
    """A cost of every model in a space, as one NNI expression over the space's labels.

    Args:
        model_space: the space (build the profiler before a one-shot strategy mutates it).
        example_input: an input batch (shapes only matter).
        cost: a name from :data:`~nni_udc.evaluators.costs.COSTS` or a function of a :class:`LayerSpec`.

    Raises:
        TypeError: a module of the space holds weights that no cost formula covers (its path and type are named).

    Example:
        >>> import nni
        >>> from nni.nas.nn.pytorch import ModelSpace
        >>> from nni_udc.nn import MutableQuantLinear, bits_choice
        >>> class Net(ModelSpace, label_prefix=None):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.fc = MutableQuantLinear(10, 4, weight_bits=bits_choice('b', [4, 8]))
        ...     def forward(self, x):
        ...         return self.fc(x)
        >>> CostProfiler(Net(), torch.zeros(1, 10), 'memory_bits').profile({'b': 4})   # 40·4 + 4·32
        288
    """

    def __init__(self, model_space: ModelSpace, example_input: Any, cost: str | CostFn = "memory_bits") -> None:
        register_nni_formulas()
        refused = uncosted_modules(model_space)  # before shape inference, whose error would not say why
        if refused:
            raise uncosted_error(refused)
        args, kwargs = standardize_arguments(example_input, lambda t: ShapeTensor(t, True))
        # In eval mode: shapes do not depend on it, and a batch norm in training mode refuses a batch of one sample
        # at 1×1 ("Expected more than 1 value per channel"), which a squeeze-excite block always is.
        was_training = model_space.training
        model_space.eval()
        try:
            shapes = submodule_input_output_shapes(model_space, *args, **kwargs)
        finally:
            model_space.train(was_training)
        self.expression = _symbolic_cost("", model_space, shapes, resolve_cost(cost))

    def profile(self, sample: Sample) -> float:
        value = super().profile(sample)
        return value.item() if isinstance(value, torch.Tensor) else value
