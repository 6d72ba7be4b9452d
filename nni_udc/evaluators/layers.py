"""How each module type describes itself as :class:`LayerSpec` records.

One builder per module family. A builder reads the module's arguments through ``arg(name)`` and gets
its output shape, so the same builder serves a frozen module (numbers) and an NNI mutable module
(arguments may be ``nni.choice``, shapes may be expressions).

New module types are added with :func:`register_spec_builder`.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from nni.mutable import MutableList
from nni.nas.nn.pytorch import ParametrizedModule
from torch import nn

from nni_udc.evaluators.spec import LayerSpec
from nni_udc.nn import LowRankConv2d, LowRankLinear, QuantConv2d, QuantLinear, SparseConv2d, SparseLinear

__all__ = ["SpecBuilder", "find_spec_builder", "module_arg", "register_spec_builder", "specs_of"]

#: ``builder(name, module, output_shape) -> list[LayerSpec]``
SpecBuilder = Callable[[str, nn.Module, Sequence[Any]], list[LayerSpec]]

_BUILDERS: list[tuple[type, SpecBuilder]] = []


def register_spec_builder(module_type: type) -> Callable[[SpecBuilder], SpecBuilder]:
    """Decorator: ``builder`` describes modules of ``module_type`` (and its subclasses, e.g. the NNI twin).

    Later registrations take precedence, so a subclass can be registered after its base.
    """
    def deco(builder: SpecBuilder) -> SpecBuilder:
        if any(t is module_type for t, _ in _BUILDERS):
            raise ValueError(f"a spec builder for {module_type.__name__} is already registered")
        _BUILDERS.insert(0, (module_type, builder))
        return builder
    return deco


def find_spec_builder(module: nn.Module) -> SpecBuilder | None:
    for module_type, builder in _BUILDERS:
        if isinstance(module, module_type):
            return builder
    return None


def specs_of(name: str, module: nn.Module, output_shape: Sequence[Any]) -> list[LayerSpec] | None:
    """The specs of ``module``, or ``None`` if no builder knows its type."""
    builder = find_spec_builder(module)
    return None if builder is None else builder(name, module, output_shape)


def module_arg(module: nn.Module, name: str) -> Any:
    """An init argument: possibly an ``nni.choice`` on an NNI mutable module, a plain value otherwise."""
    if isinstance(module, ParametrizedModule):
        return module.args[name]
    return getattr(module, name)


def _pair(value: Any) -> tuple[Any, Any]:
    return (value, value) if not isinstance(value, (tuple, list)) else (value[0], value[1])


def _prod(values: Sequence[Any]) -> Any:
    """Product of numbers or NNI expressions (``math.prod`` rejects the latter)."""
    out: Any = 1
    for v in values:
        out = out * v
    return out


def _conv_positions(shape: Sequence[Any]) -> Any:
    return _prod(list(shape[2:]))


def _linear_positions(shape: Sequence[Any]) -> Any:
    return _prod(list(shape[1:-1])) if len(shape) > 2 else 1


def _bits(value: Any) -> Any:
    """Per-channel bits as a tuple (a list on frozen modules, an NNI ``MutableList`` on mutable ones)."""
    if isinstance(value, MutableList) or (isinstance(value, Sequence) and not isinstance(value, str)):
        return tuple(value)
    return value


def _spec(name: str, kind: str, module: nn.Module, positions: Any, in_name: str, out_name: str, *,
          kernel: Any = 1, groups: Any = 1, weight_bits: Any = 32, act_bits: Any = 32, sparsity: Any = 0.0,
          in_channel_bits: Any = None) -> LayerSpec:
    bias = module_arg(module, "bias")  # a Parameter or None on plain modules, a bool on NNI mutable ones
    in_channels = module_arg(module, in_name)
    if in_channel_bits is not None:  # inputs removed upstream (0 bits there) are not inputs here
        in_channels = sum((b > 0) * 1 for b in in_channel_bits)
    return LayerSpec(
        name=name, kind=kind,
        in_channels=in_channels, out_channels=module_arg(module, out_name),
        kernel_size=_pair(kernel), groups=groups, positions=positions,
        weight_bits=_bits(weight_bits), act_bits=act_bits, density=1 - sparsity,
        bias=bias is not None and bias is not False,
    )


def _conv(name: str, m: nn.Module, shape: Sequence[Any], **compression: Any) -> list[LayerSpec]:
    return [_spec(name, "conv", m, _conv_positions(shape), "in_channels", "out_channels",
                  kernel=module_arg(m, "kernel_size"), groups=module_arg(m, "groups"), **compression)]


def _linear(name: str, m: nn.Module, shape: Sequence[Any], **compression: Any) -> list[LayerSpec]:
    return [_spec(name, "linear", m, _linear_positions(shape), "in_features", "out_features", **compression)]


def _quantised(m: nn.Module) -> dict[str, Any]:
    return {"weight_bits": module_arg(m, "weight_bits"), "act_bits": module_arg(m, "act_bits"),
            "sparsity": module_arg(m, "sparsity"), "in_channel_bits": module_arg(m, "in_channel_bits")}


register_spec_builder(nn.Conv2d)(_conv)
register_spec_builder(nn.Linear)(_linear)
register_spec_builder(QuantConv2d)(lambda name, m, shape: _conv(name, m, shape, **_quantised(m)))
register_spec_builder(QuantLinear)(lambda name, m, shape: _linear(name, m, shape, **_quantised(m)))
def _sparse(m: nn.Module) -> dict[str, Any]:
    return {"sparsity": module_arg(m, "sparsity"), "weight_bits": module_arg(m, "weight_bits")}


register_spec_builder(SparseConv2d)(lambda name, m, shape: _conv(name, m, shape, **_sparse(m)))
register_spec_builder(SparseLinear)(lambda name, m, shape: _linear(name, m, shape, **_sparse(m)))


def _lowrank_bias(m: Any) -> bool:
    if isinstance(m, ParametrizedModule):
        return bool(m.args["bias"])
    return m.second.bias is not None


@register_spec_builder(LowRankConv2d)
def _lowrank_conv(name: str, m: nn.Module, shape: Sequence[Any]) -> list[LayerSpec]:
    rank, positions, bits = module_arg(m, "rank"), _conv_positions(shape), module_arg(m, "weight_bits")
    first = LayerSpec(f"{name}.first", "conv", module_arg(m, "in_channels"), rank,
                      kernel_size=_pair(module_arg(m, "kernel_size")), positions=positions, weight_bits=bits)
    second = LayerSpec(f"{name}.second", "conv", rank, module_arg(m, "out_channels"),
                       positions=positions, weight_bits=bits, bias=_lowrank_bias(m))
    return [first, second]


@register_spec_builder(LowRankLinear)
def _lowrank_linear(name: str, m: nn.Module, shape: Sequence[Any]) -> list[LayerSpec]:
    rank, positions, bits = module_arg(m, "rank"), _linear_positions(shape), module_arg(m, "weight_bits")
    first = LayerSpec(f"{name}.first", "linear", module_arg(m, "in_features"), rank, positions=positions,
                      weight_bits=bits)
    second = LayerSpec(f"{name}.second", "linear", rank, module_arg(m, "out_features"),
                       positions=positions, weight_bits=bits, bias=_lowrank_bias(m))
    return [first, second]
