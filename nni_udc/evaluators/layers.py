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
from nni_udc.nn import QUANT_LAYERS, SPARSE_LAYERS, ActivationQuantizer, LowRankConv1d, LowRankConv2d, LowRankLinear

__all__ = ["FREE_MODULE_TYPES", "SpecBuilder", "find_spec_builder", "holds_uncosted_weights", "module_arg",
           "register_spec_builder", "specs_of", "uncosted_error", "uncosted_modules"]

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


#: Modules whose parameters cost nothing: BatchNorm is folded into the layer before it (see
#: :mod:`nni_udc.evaluators.costs`), and an activation quantiser's clip is one number per layer, not a weight.
FREE_MODULE_TYPES: tuple[type, ...] = (nn.modules.batchnorm._BatchNorm, ActivationQuantizer)


def holds_uncosted_weights(module: nn.Module) -> bool:
    """Whether ``module`` holds parameters of its own that no spec builder describes (an LSTM, an embedding, a
    custom layer calling ``F.conv1d`` on its own weight): costing a model with it would silently leave them out."""
    if find_spec_builder(module) is not None or isinstance(module, FREE_MODULE_TYPES):
        return False
    return any(True for _ in module.parameters(recurse=False))


def uncosted_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(path, module)`` of every module of ``model`` that :func:`holds_uncosted_weights`, outside costed layers."""
    owners: list[str] = []
    out = []
    for name, module in model.named_modules():
        if any(owner == "" or name.startswith(owner + ".") for owner in owners):
            continue
        if find_spec_builder(module) is not None:
            owners.append(name)
        elif holds_uncosted_weights(module):
            out.append((name, module))
    return out


def uncosted_error(modules: Sequence[tuple[str, nn.Module]]) -> TypeError:
    """The error for modules that hold weights no cost formula covers: names each one's path and type, and says
    what is allowed."""
    shown = ", ".join(f"{name or '<model>'!r} ({type(m).__name__})" for name, m in modules[:10])
    more = f" and {len(modules) - 10} more" if len(modules) > 10 else ""
    costed = sorted({t.__name__ for t, _ in _BUILDERS})
    first = type(modules[0][1]).__name__
    return TypeError(
        f"cannot cost module {shown}{more}: it holds weights that no cost formula covers, and its cost would be "
        f"left out. Costed layer types: {', '.join(costed)}; BatchNorm costs nothing (folded into the layer before "
        f"it). Replace it by a costed layer, or describe it with "
        f"nni_udc.evaluators.register_spec_builder({first})")


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


def _kernel(module: nn.Module) -> tuple[Any, Any]:
    """The spec's ``(kh, kw)``: a 1-D conv's kernel ``k`` is ``(k, 1)`` (a 2-D conv on an ``L×1`` map costs the same).

    The dimension is read from the built module (torch stores ``kernel_size`` as one entry per dimension, also on an
    NNI mutable module, which is built at its default sample), the value through :func:`module_arg` (maybe a choice).
    """
    value = module_arg(module, "kernel_size")
    if len(module.kernel_size) == 1:  # type: ignore[arg-type]
        return (value[0] if isinstance(value, (tuple, list)) else value, 1)
    return _pair(value)


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
        kernel_size=kernel if isinstance(kernel, tuple) else _pair(kernel), groups=groups, positions=positions,
        weight_bits=_bits(weight_bits), act_bits=act_bits, density=1 - sparsity,
        bias=bias is not None and bias is not False,
    )


def _conv(name: str, m: nn.Module, shape: Sequence[Any], **compression: Any) -> list[LayerSpec]:
    return [_spec(name, "conv", m, _conv_positions(shape), "in_channels", "out_channels",
                  kernel=_kernel(m), groups=module_arg(m, "groups"), **compression)]


def _linear(name: str, m: nn.Module, shape: Sequence[Any], **compression: Any) -> list[LayerSpec]:
    return [_spec(name, "linear", m, _linear_positions(shape), "in_features", "out_features", **compression)]


def _quantised(m: nn.Module) -> dict[str, Any]:
    return {"weight_bits": module_arg(m, "weight_bits"), "act_bits": module_arg(m, "act_bits"),
            "sparsity": module_arg(m, "sparsity"), "in_channel_bits": module_arg(m, "in_channel_bits")}


# Plain torch layers are float layers (32-bit weights and inputs), costed like any other.
register_spec_builder(nn.Conv1d)(_conv)
register_spec_builder(nn.Conv2d)(_conv)
register_spec_builder(nn.Linear)(_linear)


def _sparse(m: nn.Module) -> dict[str, Any]:
    return {"sparsity": module_arg(m, "sparsity"), "weight_bits": module_arg(m, "weight_bits")}


def _weight_layer(name: str, m: nn.Module, shape: Sequence[Any], **compression: Any) -> list[LayerSpec]:
    """A quantised or sparse layer: a linear one (a subclass of ``nn.Linear``) or a 1-D or 2-D conv."""
    return (_linear if isinstance(m, nn.Linear) else _conv)(name, m, shape, **compression)


for _quant_layer in QUANT_LAYERS:
    register_spec_builder(_quant_layer)(lambda name, m, shape: _weight_layer(name, m, shape, **_quantised(m)))
for _sparse_layer in SPARSE_LAYERS:
    register_spec_builder(_sparse_layer)(lambda name, m, shape: _weight_layer(name, m, shape, **_sparse(m)))


def _lowrank_bias(m: Any) -> bool:
    if isinstance(m, ParametrizedModule):
        return bool(m.args["bias"])
    return m.second.bias is not None


@register_spec_builder(LowRankConv2d)
@register_spec_builder(LowRankConv1d)
def _lowrank_conv(name: str, m: nn.Module, shape: Sequence[Any]) -> list[LayerSpec]:
    rank, positions, bits = module_arg(m, "rank"), _conv_positions(shape), module_arg(m, "weight_bits")
    first = LayerSpec(f"{name}.first", "conv", module_arg(m, "in_channels"), rank,
                      kernel_size=_kernel(m), positions=positions, weight_bits=bits)
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
