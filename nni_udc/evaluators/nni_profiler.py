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

import logging
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
    aten_shape_broadcast,
    find_shape_inference_formula,
    keep_first_shape_formula,
    keep_shape_formula,
    linear_formula,
    register_shape_inference_formula,
)
from torch import nn

from nni_udc.evaluators.batchnorm_inputs import BatchNormInputs, followed_by_batchnorm
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
_SHAPE_LOGGER = "nni.nas.profiler.pytorch.utils.shape"


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


def _unsqueeze_formula(fn: Any, input: ShapeTensor, dim: int, **kwargs: Any) -> MutableShape:
    shape = list(input.real_shape)
    shape.insert(dim if dim >= 0 else dim + len(shape) + 1, 1)
    return MutableShape(*shape)


def _expand_formula(fn: Any, input: ShapeTensor, size: list[int], **kwargs: Any) -> MutableShape:
    shape = list(input.real_shape)
    lead = len(size) - len(shape)
    return MutableShape(*[shape[i - lead] if s == -1 else s for i, s in enumerate(size)])


def _squeeze_formula(fn: Any, input: ShapeTensor, dim: int | list[int] | None = None, **kwargs: Any) -> MutableShape:
    shape = list(input.real_shape)
    dims = range(len(shape)) if dim is None else [dim] if isinstance(dim, int) else dim
    drop = {d % len(shape) for d in dims if shape[d] == 1}
    return MutableShape(*[s for i, s in enumerate(shape) if i not in drop])


def _adaptive_pool_formula(fn: Any, input: ShapeTensor, output_size: list[int], **kwargs: Any) -> Any:
    shape = list(input.real_shape)
    shape[len(shape) - len(output_size):] = output_size
    return MutableShape(*shape)


def _adaptive_max_pool_formula(fn: Any, input: ShapeTensor, output_size: list[int], **kwargs: Any) -> Any:
    shape = _adaptive_pool_formula(fn, input, output_size)
    return shape, shape  # values and indices


def _pool2d_formula(fn: Any, input: ShapeTensor, kernel_size: list[int], stride: list[int] | None = None,
                    padding: Any = 0, *args: Any, **kwargs: Any) -> MutableShape:
    """``avg_pool2d``/``max_pool2d`` as functions (NNI knows their module forms only); ``ceil_mode`` is not read."""
    shape = list(input.real_shape)
    kernel = list(kernel_size) * (2 // len(kernel_size))
    steps = list(stride or kernel) * (2 // len(stride or kernel))
    pads = [padding] * 2 if isinstance(padding, int) else list(padding) * (2 // len(padding))
    for i in range(2):
        shape[i - 2] = (shape[i - 2] + 2 * pads[i] - kernel[i]) // steps[i] + 1
    return MutableShape(*shape)


#: aten operators the forward code of common models calls, beyond those NNI 3.0 knows: F.relu6 and nn.ReLU6 are
#: hardtanh, residual ``x += y`` is add_, ``x[:, :, None]``/``unsqueeze`` is unsqueeze (see issue 11, item 4).
_ATEN_FORMULAS: dict[str, Any] = {
    **{op: keep_first_shape_formula for op in (
        "silu", "silu_", "sigmoid", "sigmoid_", "relu6", "gelu_", "clone", "hardtanh", "hardtanh_", "elu", "elu_",
        "leaky_relu", "leaky_relu_", "tanh", "contiguous", "dropout", "add_", "mul_", "sub_", "div_")},
    **{op: aten_shape_broadcast for op in ("sub", "div")},
    "unsqueeze": _unsqueeze_formula,
    "squeeze": _squeeze_formula,
    "expand": _expand_formula,
    "_adaptive_avg_pool2d": _adaptive_pool_formula,
    "adaptive_max_pool2d": _adaptive_max_pool_formula,
    "avg_pool2d": _pool2d_formula,
}


def _register_aten_formulas() -> None:
    for name, formula in _ATEN_FORMULAS.items():
        packet = getattr(torch.ops.aten, name)
        for overload in packet.overloads():  # every overload: add_.Tensor and add_.Scalar, squeeze.dim and .dims ...
            op = getattr(packet, overload)
            if find_shape_inference_formula(op) is None:  # NNI's own formula stays (hardtanh_.default)
                register_shape_inference_formula(op, formula)


class _UnpropagatedOps(logging.Handler):
    """Collects the operators NNI's shape inference warns it could not see through (its log is the only trace)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.ops: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        for before, after in (("when executing ", ","), ("Shape inference of ", " failed")):
            if before in message:
                op = message.split(before, 1)[1].split(after, 1)[0]
                if op not in self.ops:
                    self.ops.append(op)


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
    _register_aten_formulas()
    _registered = True


def _symbolic_cost(name: str, module: nn.Module, shapes: dict, cost: CostFn, bn: set[str]) -> Any:
    if isinstance(module, LayerChoice):
        branches = {v: _symbolic_cost(concat_name(name, str(v)), module[v], shapes, cost, bn)
                    for v in module.choice.values}
        return MutableExpression.switch_case(module.choice, branches)
    if isinstance(module, Repeat):
        if isinstance(module.depth_choice, int):
            return sum(_symbolic_cost(concat_name(name, f"blocks.{i}"), module.blocks[i], shapes, cost, bn)
                       for i in range(module.depth_choice))
        return sum((module.depth_choice >= d) * _symbolic_cost(concat_name(name, f"blocks.{d - 1}"), block, shapes,
                                                               cost, bn)
                   for d, block in enumerate(module.blocks, start=1))
    builder = find_spec_builder(module)
    if builder is not None:
        if name not in shapes:
            raise KeyError(f"no shape was inferred for module {name!r} ({type(module).__name__}); "
                           f"did it run in the forward pass? Modules with shapes: {sorted(shapes)[:20]}")
        return sum(cost(s) for s in followed_by_batchnorm(builder(name, module, shapes[name][1]), name in bn))
    return sum((_symbolic_cost(concat_name(name, n), child, shapes, cost, bn) for n, child in module.named_children()),
               0)


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
        >>> CostProfiler(Net(), torch.zeros(1, 10), 'memory_bits').profile({'b': 4})   # 40·4 + 4·32 + 4·16 (scales)
        352
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
        # NNI's warnings about operators it could not see through are the only trace of them: collect them (whatever
        # the log level) to name the operator if inference fails; when it succeeds, the shapes needed were all found.
        unseen, logger = _UnpropagatedOps(), logging.getLogger(_SHAPE_LOGGER)
        level, propagate = logger.level, logger.propagate
        logger.addHandler(unseen)
        logger.setLevel(logging.WARNING)
        logger.propagate = False
        batchnorms = BatchNormInputs(model_space, lambda m: find_spec_builder(m) is not None)
        try:
            with batchnorms:  # which layers a BatchNorm follows (export folds it in: a bias to store)
                shapes = submodule_input_output_shapes(model_space, *args, **kwargs)
        except Exception as error:
            if not unseen.ops:
                raise
            raise TypeError(
                f"cannot infer shapes through {', '.join(unseen.ops)} (first seen first) in the forward pass of "
                f"{type(model_space).__name__}: NNI's shape inference has no formula for it ({type(error).__name__}: "
                f"{error}). Rewrite it with an operation it knows (relu/relu6/hardswish/hardsigmoid/silu/gelu, +, *, "
                "cat, mean, view/reshape/flatten, unsqueeze, adaptive pooling, nn pooling modules), or register a "
                "formula with nni.nas.profiler.pytorch.utils.shape_formula.register_shape_inference_formula") from error
        finally:
            logger.removeHandler(unseen)
            logger.setLevel(level)
            logger.propagate = propagate
            model_space.train(was_training)
        self.expression = _symbolic_cost("", model_space, shapes, resolve_cost(cost), batchnorms.layers())

    def profile(self, sample: Sample) -> float:
        value = super().profile(sample)
        return value.item() if isinstance(value, torch.Tensor) else value
