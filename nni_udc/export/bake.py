"""Bake a frozen searched model into plain PyTorch: the weights it stores, nothing that recomputes them.

A frozen model of a space (``space.freeze(sample)``, ``make_compressible(...).freeze(...)``, the ``model.pt`` of
``nni-udc search``) recomputes its masks and fake-quantised weights in every forward pass, through NNI and
nni_udc modules. :func:`bake` traces it with ``torch.fx`` and rewrites the graph into a ``torch.fx.GraphModule``
made only of torch modules and torch functions:

- every compressible layer becomes a plain ``nn.Conv1d``/``nn.Conv2d``/``nn.Linear`` holding its stored weight:
  sparsity masks applied, quantised per output channel (the values are ``integer level × scale``); a low-rank
  layer becomes its two factor layers (``PATH.first``, ``PATH.second``);
- a layer's activation quantiser becomes ``clamp → div → round → mul`` with its learned clip baked in as a
  constant (the clip must have been set by training: an untrained quantiser clips at each batch's maximum,
  which no constant reproduces, and is refused);
- a BatchNorm in evaluation mode that directly follows a conv (or a linear layer on ``(N, C)`` inputs) is folded
  into that layer's weight and bias;
- an output channel removed by the search (0 bits) is removed from the tensors: the layer's weight rows and
  bias, the BatchNorms between, and the matching input channels of the next layer. Only where every consumer
  is unambiguous: the channel reaches, through channel-wise operations only (BatchNorm, activations, dropout,
  pooling, a spatial mean, a flatten of ``C×1×1``), convs with ``groups=1`` or linear layers. Such a channel
  carries a constant (its bias, through the operations between); the consumer's weights on it are zero (a
  layer declared with ``in_channel_bits``), or the constant is folded into the consumer's bias where that is
  exact (a linear layer, or a conv without padding). A channel that reaches a residual add, a ``cat``, a
  depthwise conv, a padded conv with non-zero weights on it, or the model's output is kept as it is (zero
  weights, its bias).

The result computes what the searched model computes (to float rounding: BatchNorm folding reorders the
arithmetic) and imports nothing from nni or nni_udc. :func:`BakedModel.record` says where each tensor came from.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from nni_udc.nn import QuantConv2d, QuantLinear
    >>> net = nn.Sequential(QuantConv2d(1, 4, 3, weight_bits=[8, 0, 4, 4]), nn.BatchNorm2d(4), nn.ReLU(),
    ...                     nn.AdaptiveAvgPool2d(1), nn.Flatten(), QuantLinear(4, 3, weight_bits=8)).eval()
    >>> baked = bake(net, torch.randn(2, 1, 8, 8), scale_bits=32)   # 32: float32 scales, exactly the searched weights
    >>> [tuple(p.shape) for p in baked.module.parameters()]          # channel 1 gone, BatchNorm folded
    [(3, 1, 3, 3), (3,), (3, 3), (3,)]
    >>> x = torch.randn(5, 1, 8, 8)
    >>> bool(torch.allclose(baked.module(x), net(x), atol=1e-5))
    True
    >>> baked.record["layers"]["0"]["tensors"]["0"]["kept_channels"]
    [0, 2, 3]
"""
from __future__ import annotations

import copy
import math
import operator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from nni_udc.export.integer import DEFAULT_SCALE_BITS, IntegerWeights, fold_batchnorm, integer_weights
from nni_udc.nn import COMPRESSED_LAYERS, LOWRANK_LAYERS, QUANT_LAYERS, SPARSE_LAYERS, ActivationQuantizer

__all__ = ["BakeError", "BakedModel", "bake"]

_PLAIN_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear)
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d)

# Modules and functions that act on each channel on its own (a removed channel stays one channel, elsewhere zero)
_CHANNELWISE_MODULES = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.Hardsigmoid, nn.SiLU, nn.GELU, nn.Sigmoid, nn.Tanh,
                        nn.LeakyReLU, nn.ELU, nn.Hardtanh, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d,
                        nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d,
                        nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d) + _BATCHNORMS
_CHANNELWISE_FUNCTIONS = {F.relu, F.relu6, F.hardswish, F.hardsigmoid, F.silu, F.gelu, F.hardtanh, F.leaky_relu,
                          F.elu, F.dropout, F.max_pool1d, F.max_pool2d, F.avg_pool1d, F.avg_pool2d,
                          F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_max_pool1d, F.adaptive_max_pool2d,
                          torch.relu, torch.sigmoid, torch.tanh, torch.clamp, torch.round, torch.div, torch.mul,
                          operator.mul, operator.truediv}
_CHANNELWISE_METHODS = {"relu", "relu_", "sigmoid", "tanh", "clamp", "clamp_", "round", "div", "mul", "contiguous"}


class BakeError(ValueError):
    """A model that cannot be baked (an untrained activation clip, a forward that torch.fx cannot trace)."""


@dataclass
class BakedModel:
    """A baked model (:attr:`module`, plain torch) and its :attr:`record`: input shape and, per original layer, the
    baked tensors, bits per output channel, kept channels, activation quantisation and folded BatchNorms."""

    module: fx.GraphModule
    record: dict[str, Any] = field(default_factory=dict)
    #: every weight layer's integer form with its BatchNorm folded in (removed channels still listed, at 0 bits):
    #: what the packed file stores, so that reading it back gives the baked layers' integers, scales and biases
    integer: dict[str, IntegerWeights] = field(default_factory=dict)


class _Tracer(fx.Tracer):
    """Traces into the model's own code and stops at torch layers and our compressible layers."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        # NNI's twins of torch layers (MutableConv2d, MutableBatchNorm2d) are torch layers too
        return (isinstance(m, COMPRESSED_LAYERS + _PLAIN_LAYERS + _BATCHNORMS)
                or super().is_leaf_module(m, module_qualified_name))


class _OneInput(nn.Module):
    """``model`` called with one input, its children, parameters and buffers under their own names: fx traces a
    forward with ``*args`` (``CompressibleModel``'s) through it."""

    wrapped: nn.Module

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        for name, child in model.named_children():
            self.add_module(name, child)
        for name, param in model.named_parameters(recurse=False):
            self.register_parameter(name, param)
        for name, buffer in model.named_buffers(recurse=False):
            self.register_buffer(name, buffer)
        object.__setattr__(self, "wrapped", model)  # not a child: its modules are already ours

    def forward(self, x: torch.Tensor) -> Any:
        return self.wrapped.forward(x)  # not __call__: the tracer would look for ``wrapped`` among our modules


def _trace(model: nn.Module) -> fx.GraphModule:
    try:
        graph = _Tracer().trace(_OneInput(model))
    except Exception as error:  # fx raises many kinds (TraceError, TypeError, NotImplementedError ...)
        raise BakeError(f"cannot bake {type(model).__name__}: torch.fx cannot trace its forward ({error})") from None
    return fx.GraphModule(model, graph, class_name=f"Baked{type(model).__name__}")


def _sub(gm: fx.GraphModule, node: fx.Node) -> Any:
    """The module a ``call_module`` node calls."""
    return gm.get_submodule(str(node.target))


def _set_module(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)


def _plain(layer: Any, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
    """A plain ``nn.Conv1d``/``nn.Conv2d``/``nn.Linear`` of ``layer``'s geometry holding ``weight`` and ``bias``."""
    plain: nn.Module
    if isinstance(layer, nn.Linear):
        plain = nn.Linear(layer.in_features, layer.out_features, bias=bias is not None)
    else:
        assert isinstance(layer, (nn.Conv1d, nn.Conv2d))
        conv_type = nn.Conv1d if isinstance(layer, nn.Conv1d) else nn.Conv2d
        geometry: dict[str, Any] = {"kernel_size": layer.kernel_size, "stride": layer.stride, "padding": layer.padding,
                                    "dilation": layer.dilation, "groups": layer.groups}
        plain = conv_type(layer.in_channels, layer.out_channels, bias=bias is not None,
                          padding_mode=layer.padding_mode, **geometry)
    with torch.no_grad():
        plain.weight.copy_(weight)
        if bias is not None:
            plain.bias.copy_(bias)  # type: ignore[union-attr]
    return plain.to(weight.device)


def _activation(quantizer: ActivationQuantizer, path: str) -> dict[str, Any] | None:
    """Bits, clip, step and range of a layer's input quantiser (``None`` when it keeps floats)."""
    if quantizer.bits >= 32:
        return None
    if not bool(quantizer.initialized):
        raise BakeError(f"cannot bake layer {path!r}: its {quantizer.bits}-bit activation clip was never set by "
                        "training (an untrained quantiser clips at each batch's maximum); train the model first")
    clip = quantizer.clip.detach().float()
    levels = 2 ** (quantizer.bits - 1) - 1 if quantizer.signed else 2**quantizer.bits - 1
    step = float(clip / levels)  # computed in float32, as the quantiser does
    return {"bits": quantizer.bits, "signed": quantizer.signed, "clip": float(clip), "scale": step,
            "levels": levels, "min": -float(clip) if quantizer.signed else 0.0, "max": float(clip)}


def _insert_activation(graph: fx.Graph, node: fx.Node, act: dict[str, Any]) -> None:
    """``clamp → div → round → mul`` on ``node``'s input: the quantiser's arithmetic with its clip as a constant."""
    with graph.inserting_before(node):
        clipped = graph.call_function(torch.clamp, (node.args[0],), {"min": act["min"], "max": act["max"]})
        levels = graph.call_function(torch.round, (graph.call_function(torch.div, (clipped, act["scale"])),))
        quantised = graph.call_function(torch.mul, (levels, act["scale"]))
    node.args = (quantised, *node.args[1:])


def _bias(form: IntegerWeights, searched: torch.Tensor | None) -> torch.Tensor | None:
    """The integer form's bias, with ``searched`` on removed channels: a removed channel outputs 0 in its layer, but
    a BatchNorm folded into the layer turns that 0 into a constant, which the integer form leaves out."""
    if searched is None or form.bias is None:
        return form.bias
    removed = torch.tensor([b == 0 for b in form.bits])
    return torch.where(removed, searched.detach().float(), form.bias)


def _replace_layers(gm: fx.GraphModule, record: dict[str, Any], scale_bits: int) -> dict[str, IntegerWeights]:
    """Swap every weight layer for plain layers holding its integer form's weight (``dequantize()``) and bias;
    returns the integer form of each plain layer, by its path in ``gm``."""
    integer: dict[str, IntegerWeights] = {}
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(_sub(gm, node), COMPRESSED_LAYERS + _PLAIN_LAYERS):
            continue
        path: str = node.target
        layer = gm.get_submodule(path)
        entry: dict[str, Any] = {"type": type(layer).__name__, "tensors": {}}
        forms = integer_weights(path, layer, scale_bits=scale_bits)
        if isinstance(layer, QUANT_LAYERS):
            entry["sparsity"] = layer.sparsity
            entry["activation"] = act = _activation(layer.act_quant, path)
            if act is not None:
                _insert_activation(gm.graph, node, act)
        elif isinstance(layer, SPARSE_LAYERS):
            entry["sparsity"] = layer.sparsity
        if isinstance(layer, LOWRANK_LAYERS):
            container = nn.Module()
            for form in forms:
                part = form.name.rsplit(".", 1)[1]
                factor = getattr(layer, part)
                setattr(container, part, _plain(factor, form.dequantize(), form.bias))
                integer[form.name] = form
            _set_module(gm, path, container)
            with gm.graph.inserting_after(node):
                first = gm.graph.call_module(f"{path}.first", node.args, node.kwargs)
            with gm.graph.inserting_after(first):
                second = gm.graph.call_module(f"{path}.second", (first,))
            node.replace_all_uses_with(second)
            gm.graph.erase_node(node)
            entry["rank"] = layer.rank
        else:
            (form,) = forms
            _set_module(gm, path, _plain(layer, form.dequantize(), form.bias))
            integer[path] = form
        record[path] = entry
    return integer


def _torch_batchnorms(gm: fx.GraphModule) -> None:
    """Replace subclasses of torch's BatchNorm (NNI's ``MutableBatchNorm2d``) by torch's own class."""
    for node in gm.graph.nodes:
        bn = _sub(gm, node) if node.op == "call_module" else None
        if not isinstance(bn, _BATCHNORMS) or type(bn) in _BATCHNORMS:
            continue
        plain_type = nn.BatchNorm1d if isinstance(bn, nn.BatchNorm1d) else nn.BatchNorm2d
        plain = plain_type(bn.num_features, eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
                           track_running_stats=bn.track_running_stats)
        plain.load_state_dict(bn.state_dict())
        _set_module(gm, str(node.target), plain.eval())


def _output_shape(node: fx.Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def _fold_batchnorms(gm: fx.GraphModule, integer: dict[str, IntegerWeights], record: dict[str, Any],
                     owner: dict[str, str]) -> None:
    """Fold each evaluation-mode BatchNorm that is the only user of a weight layer into that layer's scales and
    bias (:func:`~nni_udc.export.integer.fold_batchnorm`: the integers stay, the scales are rounded again)."""
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(_sub(gm, node), _BATCHNORMS):
            continue
        bn = _sub(gm, node)
        source = node.args[0]
        if (not isinstance(source, fx.Node) or source.op != "call_module" or source.target not in integer
                or len(source.users) != 1 or bn.running_mean is None or bn.training):
            continue
        layer = _sub(gm, source)
        shape = _output_shape(source)
        if isinstance(layer, nn.Linear) and (shape is None or len(shape) != 2):
            continue  # BatchNorm1d on (N, C, L) normalises another axis than the linear layer's features
        form = integer[source.target] = fold_batchnorm(integer[source.target], bn)
        with torch.no_grad():  # a removed channel's constant output goes through the BatchNorm too
            before = layer.bias if layer.bias is not None else torch.zeros(layer.weight.shape[0])
            searched = bn(before.view(1, -1, *([1] * (layer.weight.dim() - 2)))).flatten()
        _set_module(gm, str(source.target), _plain(layer, form.dequantize(), _bias(form, searched)))
        node.replace_all_uses_with(source)
        gm.graph.erase_node(node)
        record[owner[source.target]].setdefault("folded_batchnorm", []).append(node.target)


def _channelwise(gm: fx.GraphModule, node: fx.Node, source: fx.Node) -> bool:
    """Whether ``node`` keeps each channel of ``source`` (its first argument) a channel of its own, in place."""
    if not node.args or node.args[0] is not source or any(isinstance(a, fx.Node) for a in node.args[1:]) \
            or any(isinstance(v, fx.Node) for v in node.kwargs.values()):
        return False
    shape = _output_shape(source)
    if node.op == "call_module":
        module = _sub(gm, node)
        if isinstance(module, nn.Flatten):
            return shape is not None and module.start_dim == 1 and math.prod(shape[2:]) == 1
        return isinstance(module, _CHANNELWISE_MODULES)
    name = node.target if node.op == "call_method" else getattr(node.target, "__name__", None)
    if name in ("mean", "amax", "sum") or node.target in (torch.mean, torch.amax, torch.sum):
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        dims = (dims,) if isinstance(dims, int) else dims
        return shape is not None and isinstance(dims, (tuple, list)) and all(d % len(shape) >= 2 for d in dims)
    if name == "flatten" or node.target is torch.flatten:
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        return bool(shape is not None and start == 1 and math.prod(shape[2:]) == 1)
    if node.op == "call_method":
        return node.target in _CHANNELWISE_METHODS
    return node.op == "call_function" and node.target in _CHANNELWISE_FUNCTIONS


def _channel_path(gm: fx.GraphModule, producer: fx.Node) -> tuple[list[fx.Node], list[fx.Node]] | None:
    """The BatchNorms and the consuming layers that a producer's channels reach through channel-wise operations,
    or ``None`` where they reach anything else (an add, a cat, a depthwise conv, the output)."""
    batchnorms: list[fx.Node] = []
    consumers: list[fx.Node] = []
    frontier = [producer]
    while frontier:
        current = frontier.pop()
        for user in current.users:
            module = _sub(gm, user) if user.op == "call_module" else None
            if isinstance(module, _PLAIN_LAYERS) and user.args[0] is current and len(user.args) == 1:
                shape = _output_shape(current)
                if isinstance(module, nn.Linear) and (shape is None or len(shape) != 2):
                    return None
                if not isinstance(module, nn.Linear) and module.groups != 1:
                    return None
                consumers.append(user)
            elif _channelwise(gm, user, current):
                if isinstance(module, _BATCHNORMS):
                    batchnorms.append(user)
                frontier.append(user)
            else:
                return None
    return (batchnorms, consumers) if consumers else None


def _consumer_inputs(gm: fx.GraphModule, consumers: list[fx.Node], example: torch.Tensor) -> list[torch.Tensor]:
    seen: dict[Any, torch.Tensor] = {}
    hooks = [_sub(gm, c).register_forward_pre_hook(
        lambda _m, args, name=c.target: seen.__setitem__(name, args[0].detach())) for c in consumers]
    try:
        with torch.no_grad():
            gm(example)
    finally:
        for hook in hooks:
            hook.remove()
    return [seen[c.target] for c in consumers]


def _remove_channels(gm: fx.GraphModule, producer: fx.Node, removed: list[int], example: torch.Tensor
                     ) -> dict[str, Any] | None:
    """Remove the ``removed`` output channels of ``producer`` and the matching inputs downstream, where exact."""
    path = _channel_path(gm, producer)
    if path is None:
        return None
    batchnorms, consumers = path
    layer = _sub(gm, producer)
    out = layer.weight.shape[0]
    kept = [c for c in range(out) if c not in set(removed)]
    folds: dict[Any, torch.Tensor] = {}
    for consumer, seen in zip(consumers, _consumer_inputs(gm, consumers, example)):
        target = _sub(gm, consumer)
        extra = torch.zeros(target.weight.shape[0])
        for c in removed:
            values = seen[:, c]
            if not bool((values == values.flatten()[0]).all()):
                return None  # not a constant channel: its values depend on the input
            constant = float(values.flatten()[0])
            column = target.weight[:, c]
            if constant == 0.0 or not bool(column.any()):
                continue
            if isinstance(target, nn.Linear) or all(p == 0 for p in target.padding):
                extra += constant * column.reshape(column.shape[0], -1).sum(1).detach()
            else:
                return None  # padding sees zeros at the borders: the constant is no bias there
        if bool(extra.any()):
            folds[consumer.target] = extra
    index = torch.tensor(kept)
    with torch.no_grad():
        bias = None if layer.bias is None else layer.bias[index]
        _set_module(gm, str(producer.target), _resized(layer, layer.weight[index], bias, out=len(kept)))
        for bn_node in batchnorms:
            bn = _sub(gm, bn_node)
            new = type(bn)(len(kept), eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
                           track_running_stats=bn.track_running_stats)
            state = {k: (v[index] if v.dim() == 1 else v) for k, v in bn.state_dict().items()}
            new.load_state_dict(state)
            _set_module(gm, str(bn_node.target), new.eval())
        for consumer in consumers:
            target = _sub(gm, consumer)
            bias = target.bias
            if consumer.target in folds:
                bias = (bias if bias is not None else torch.zeros(target.weight.shape[0])) + folds[consumer.target]
            _set_module(gm, str(consumer.target), _resized(target, target.weight[:, index], bias, inputs=len(kept)))
    return {"kept_channels": kept, "consumers": [c.target for c in consumers],
            "batchnorms": [b.target for b in batchnorms], "bias_from_removed_inputs": sorted(folds)}


def _resized(layer: Any, weight: torch.Tensor, bias: torch.Tensor | None, *, out: int | None = None,
             inputs: int | None = None) -> nn.Module:
    """A copy of plain ``layer`` with new channel counts holding ``weight`` and ``bias``."""
    new = copy.copy(layer)
    new._parameters = dict(layer._parameters)  # the copy must not share its parameter table with ``layer``
    if isinstance(new, nn.Linear):
        new.out_features = out if out is not None else new.out_features
        new.in_features = inputs if inputs is not None else new.in_features
    else:
        new.out_channels = out if out is not None else new.out_channels
        new.in_channels = inputs if inputs is not None else new.in_channels
    new.weight = nn.Parameter(weight.detach().clone())
    new.bias = None if bias is None else nn.Parameter(bias.detach().clone())
    return new


def bake(model: nn.Module, example_input: torch.Tensor, *, scale_bits: int = DEFAULT_SCALE_BITS) -> BakedModel:
    """Bake a frozen searched model (see the module docstring) into a plain-torch ``GraphModule``.

    ``example_input`` is a batch of the model's input (shapes and the constant carried by removed channels are
    read from it; its values do not matter). ``model`` itself is not changed.

    Raises:
        BakeError: torch.fx cannot trace the model, or a quantised activation's clip was never trained.
    """
    if not isinstance(model, nn.Module):
        raise BakeError(f"bake needs a torch nn.Module, but got {type(model).__name__}")
    gm = _trace(copy.deepcopy(model).eval())
    layers: dict[str, Any] = {}
    integer = _replace_layers(gm, layers, scale_bits)
    _torch_batchnorms(gm)
    owner = {name: name if name in layers else name.rsplit(".", 1)[0] for name in integer}  # factor -> its layer
    gm.recompile()
    ShapeProp(gm).propagate(example_input)
    _fold_batchnorms(gm, integer, layers, owner)
    folded = dict(integer)
    gm.recompile()
    ShapeProp(gm).propagate(example_input)
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or node.target not in integer:
            continue
        name, form = node.target, integer[node.target]
        removed = [c for c, b in enumerate(form.bits) if b == 0]
        info: dict[str, Any] = {"bits": list(form.bits), "scales": [float(v) for v in form.scales],
                                "removed_channels": removed, "kept_channels": None, "scale_bits": form.scale_bits}
        done = _remove_channels(gm, node, removed, example_input) if removed else None
        if done is not None:
            gm.recompile()
            ShapeProp(gm).propagate(example_input)
            info.update(done, bits=[form.bits[c] for c in done["kept_channels"]],
                        scales=[info["scales"][c] for c in done["kept_channels"]])
            for consumer in done["consumers"]:
                layers[owner[consumer]].setdefault("inputs_kept", {})[name] = done["kept_channels"]
        layer: Any = gm.get_submodule(name)
        info.update(weight=f"{name}.weight", shape=list(layer.weight.shape),
                    bias=f"{name}.bias" if layer.bias is not None else None)
        layers[owner[name]]["tensors"][name] = info
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()
    with torch.no_grad():
        output = gm(example_input)
    return BakedModel(gm, {"input_shape": list(example_input.shape[1:]), "output_shape": list(output.shape[1:]),
                           "layers": layers}, folded)
