"""Bring your own model: :func:`make_compressible` turns any PyTorch network into an NNI model space.

Every ``nn.Conv1d``, ``nn.Conv2d`` (grouped and depthwise included) and ``nn.Linear`` of the model becomes the
compressible NNI twin of :mod:`nni_udc.nn` (``MutableQuantConv1d``/``MutableQuantConv2d``/``MutableQuantLinear``) with
the choices given, and optionally a ``LayerChoice`` between it and a low-rank factorisation. Everything else (batch
norms, activations, the forward code) is the user's, untouched. The model's weights are kept: a frozen model holds
them (a low-rank candidate is initialised from their SVD), and a one-shot supernet starts from them (see
:meth:`nni_udc.strategies.supernet.MixedCompressedOp.mutate`).

Depth: ``depth={'layer1': [1, 2]}`` makes the number of leading blocks of an ``nn.Sequential`` (or of a run of its
blocks, ``'features.14-16'``) a choice, an NNI ``Repeat`` over the model's own blocks; a frozen model keeps the
original paths and weights of the blocks it keeps.

The idea is torchao's one verb ``quantize_(model, config)``, for search: one call plus a policy object.
"""
from __future__ import annotations

import copy
import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import nni
import torch
from nni.nas.nn.pytorch import LayerChoice, ModelSpace, Repeat
from torch import nn

from nni_udc.evaluators.layers import uncosted_error, uncosted_modules
from nni_udc.functional import max_rank
from nni_udc.nn import (
    COMPRESSIBLE_MUTABLES,
    LOWRANK_LAYERS,
    MutableLowRankConv1d,
    MutableLowRankConv2d,
    MutableLowRankLinear,
    MutableQuantConv1d,
    MutableQuantConv2d,
    MutableQuantLinear,
    act_bits_choice,
    bits_choice,
    channel_bits_choice,
    rank_choice,
    sparsity_choice,
)
from nni_udc.nn._checks import check_act_bits, check_sparsity, check_weight_bits

__all__ = ["CompressibleModel", "CompressionPolicy", "make_compressible"]

#: The layer types converted, with their compressible twin and low-rank twin.
_TWINS: dict[type, tuple[type, type]] = {
    nn.Conv1d: (MutableQuantConv1d, MutableLowRankConv1d),
    nn.Conv2d: (MutableQuantConv2d, MutableLowRankConv2d),
    nn.Linear: (MutableQuantLinear, MutableLowRankLinear),
}


@dataclass(frozen=True)
class CompressionPolicy:
    """Which layers :func:`make_compressible` converts, and how their choices are labelled.

    Args:
        ends_bits: weight bits of the first and last converted layers (in ``model.named_modules()`` order), which
            are fixed rather than searched: they are the most sensitive to quantisation and among the smallest.
            Their sparsity is 0, they get no low-rank candidate, and their input activations are 8-bit when
            ``act_bits`` is searched. ``None`` searches them like the others.
        skip: layers left as they are (float layers, costed at 32 bits): a glob over the module path
            (``'features.0.*'``, ``'classifier.3'``) or a module type (``nn.Linear``).
        shared: one label per choice for the whole model (``'bits'``, ``'sparsity'``, ``'act_bits'``, ``'op'``)
            instead of one per layer (``'bits_features.1.0'``).
    """

    ends_bits: int | None = 8
    skip: tuple[str | type, ...] = ()
    shared: bool = False

    def __post_init__(self) -> None:
        if self.ends_bits is not None:
            check_weight_bits(self.ends_bits, field="CompressionPolicy.ends_bits")
        if isinstance(self.skip, (str, type)) or not isinstance(self.skip, Sequence):
            raise ValueError(f"CompressionPolicy.skip must be a tuple of globs and module types, but got {self.skip!r}")
        for item in self.skip:
            if not isinstance(item, (str, type)):
                raise ValueError("CompressionPolicy.skip entries must be path globs (str) or module types, "
                                 f"but got {item!r}")
        object.__setattr__(self, "skip", tuple(self.skip))
        if not isinstance(self.shared, bool):
            raise ValueError(f"CompressionPolicy.shared must be True or False, but got {self.shared!r}")

    def skips(self, path: str, module: nn.Module) -> bool:
        """Whether the layer at ``path`` stays as it is."""
        return any(fnmatch.fnmatchcase(path, s) if isinstance(s, str) else isinstance(module, s) for s in self.skip)


def _as_candidates(value: Any, what: str) -> list:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [value]
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
        raise ValueError(f"make_compressible: {what} must be a number or a non-empty list of candidates, but got {value!r}")
    return list(value)


def _choice(make: Any, label: str, values: list, fixed: Any) -> Any:
    """A choice over ``values``, or the value itself when there is only one (no label for a fixed value)."""
    if len(values) == 1:
        return fixed(values[0])
    return make(label, values)


# ----- depth: a Repeat over the model's own blocks -------------------------------------------------------

_RUN_KEY = re.compile(r"^(?:(?P<parent>.+)\.)?(?P<first>\d+)-(?P<last>\d+)$")


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


@dataclass(frozen=True)
class _DepthRun:
    """Blocks ``names`` (consecutive children) of the ``nn.Sequential`` at ``parent``; ``depths`` counts the leading
    ones kept. With several depths they become one ``Repeat`` at the first block's name (label ``depth_<key>``)."""

    key: str
    parent: str
    names: tuple[str, ...]
    depths: tuple[int, ...]

    @property
    def label(self) -> str:
        return f"depth_{self.key}"

    @property
    def searched(self) -> bool:
        return len(self.depths) > 1

    def block_paths(self) -> list[str]:
        return [_join(self.parent, n) for n in self.names]

    def space_path(self, path: str) -> str | None:
        """Where ``path`` (a path of the user's model) sits in the space, if it lies in one of the run's blocks."""
        for index, block in enumerate(self.block_paths()):
            if path == block or path.startswith(block + "."):
                return _join(self.parent, self.names[0], "blocks", str(index)) + path[len(block):]
        return None


def _sequential_paths(model: nn.Module) -> list[str]:
    return [p for p, m in model.named_modules() if isinstance(m, nn.Sequential) and p]


def _depth_run(model: nn.Module, key: Any, value: Any) -> _DepthRun:
    """Parse one ``depth`` entry: ``'path'`` of an ``nn.Sequential`` (all its blocks) or ``'path.i-j'`` (blocks i..j)."""
    where = f"make_compressible: depth[{key!r}]"
    if not isinstance(key, str) or not key:
        raise ValueError(f"make_compressible: depth keys must be paths of the model's nn.Sequential modules "
                         f"(e.g. 'layer1') or runs of their blocks ('features.14-16'), but got {key!r}")
    match = _RUN_KEY.match(key)
    parent_path = (match["parent"] or "") if match else key
    try:
        parent = model.get_submodule(parent_path)
    except AttributeError:
        raise ValueError(f"{where}: the model has no module {parent_path!r}; its nn.Sequential modules are "
                         f"{_sequential_paths(model)[:12]}") from None
    what = repr(parent_path) if parent_path else "the model"
    if not isinstance(parent, nn.Sequential):
        raise ValueError(f"{where}: {what} is a {type(parent).__name__}, not an nn.Sequential; depth applies to the "
                         f"blocks of one, e.g. {_sequential_paths(model)[:6]}")
    if type(parent).forward is not nn.Sequential.forward:
        raise ValueError(f"{where}: {what} is a {type(parent).__name__} with its own forward, so its blocks may not "
                         "run one after the other; only a plain chain of blocks can be made shorter")
    names = list(parent._modules)
    if match:
        first, last = int(match["first"]), int(match["last"])
        if str(first) not in names or str(last) not in names or names.index(str(last)) < names.index(str(first)):
            raise ValueError(f"{where}: {what} has no blocks {first} to {last}; its blocks are {names}")
        names = names[names.index(str(first)):names.index(str(last)) + 1]
    depths = sorted({_depth_value(d, where, len(names)) for d in _as_candidates(value, f"depth[{key!r}]")})
    return _DepthRun(key, parent_path, tuple(names), tuple(depths))


def _depth_value(value: Any, where: str, blocks: int) -> int:
    # 0 drops the whole run; NNI 3.0's differentiable Repeat leaves that path out, our MixedRepeat hook
    # (nni_udc/strategies/supernet.py) puts it back.
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= blocks:
        raise ValueError(f"{where}: depth candidates count leading blocks, from 0 to {blocks}, but got {value!r}")
    return value


def _depth_runs(model: nn.Module, depth: Any) -> list[_DepthRun]:
    if not isinstance(depth, Mapping):
        raise ValueError("make_compressible: depth must map paths of nn.Sequential modules to depth candidates "
                         f"(e.g. {{'layer1': [1, 2]}}), but got {depth!r}")
    runs = [_depth_run(model, key, value) for key, value in depth.items()]
    for i, a in enumerate(runs):
        for b in runs[i + 1:]:
            if any(p == q or p.startswith(q + ".") or q.startswith(p + ".")
                   for p in a.block_paths() for q in b.block_paths()):
                raise ValueError(f"make_compressible: depth keys {a.key!r} and {b.key!r} share blocks; "
                                 "give each block to one key")
    return runs


def _check_droppable(model: nn.Module, runs: list[_DepthRun], example_input: Any) -> None:
    """Run ``model`` once on ``example_input`` and refuse a block that may be dropped but changes its input's shape."""
    if example_input is None:
        raise ValueError("make_compressible: depth needs example_input (an input batch, e.g. torch.zeros(1, 3, 32, 32)) "
                         "to check that the blocks it may drop keep their input's shape")
    shapes: dict[str, tuple[Any, Any]] = {}

    def shape(value: Any) -> Any:
        return tuple(value.shape) if isinstance(value, torch.Tensor) else f"a {type(value).__name__}, not one tensor"

    def record(path: str) -> Any:
        def hook(module: nn.Module, inputs: tuple, output: Any) -> None:
            shapes[path] = (shape(inputs[0]) if len(inputs) == 1 else f"{len(inputs)} inputs", shape(output))
        return hook

    droppable = [(run, path) for run in runs for path in run.block_paths()[min(run.depths):]]
    handles = [model.get_submodule(path).register_forward_hook(record(path)) for _, path in droppable]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()
            model(*example_input) if isinstance(example_input, tuple) else model(example_input)
    except Exception as error:  # the user's forward code on the user's input: say which input it was
        raise ValueError(f"make_compressible: the model does not run on example_input "
                         f"({shape(example_input) if not isinstance(example_input, tuple) else 'a tuple'}): "
                         f"{type(error).__name__}: {error}") from None
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    for run, path in droppable:
        if path not in shapes:
            raise ValueError(f"make_compressible: depth[{run.key!r}]: block {path!r} did not run on example_input")
        before, after = shapes[path]
        if not isinstance(before, tuple) or not isinstance(after, tuple):
            raise ValueError(f"make_compressible: depth[{run.key!r}] may drop block {path!r}, but it takes {before} "
                             f"and returns {after}; only blocks with one tensor in and one out can be dropped")
        if before != after:
            raise ValueError(
                f"make_compressible: depth[{run.key!r}] may drop block {path!r} (depths {list(run.depths)}), but it "
                f"maps shape {before} to {after}; only blocks that keep their input's shape can be dropped "
                f"(keep it in every candidate, or start the run after it)")


def _drop_unused_blocks(model: nn.Module, run: _DepthRun) -> _DepthRun:
    """Remove the blocks beyond the largest depth for good (before conversion: they get no labels)."""
    kept = run.names[:max(run.depths)]
    parent = model.get_submodule(run.parent)
    for name in run.names[len(kept):]:
        del parent._modules[name]
    return _DepthRun(run.key, run.parent, kept, run.depths)


def _repeat_blocks(model: nn.Module, run: _DepthRun) -> None:
    """Replace the run's blocks by one ``Repeat`` over them, under the first block's name (the others' names go)."""
    parent = model.get_submodule(run.parent)
    blocks = [parent._modules[name] for name in run.names]
    for name in run.names[1:]:
        del parent._modules[name]
    parent._modules[run.names[0]] = Repeat(blocks, nni.choice(run.label, list(run.depths)))


def _unfold_blocks(model: nn.Module, run: _DepthRun) -> None:
    """In a frozen model: put the kept blocks back under their own names (the frozen Repeat is an nn.Sequential)."""
    parent = model.get_submodule(run.parent)
    items = list(parent._modules.items())
    parent._modules.clear()
    for name, module in items:
        if name == run.names[0]:
            assert isinstance(module, nn.Sequential)
            for block_name, block in zip(run.names, module):
                parent._modules[block_name] = block
        else:
            parent._modules[name] = module


class CompressibleModel(ModelSpace, label_prefix=None):  # type: ignore[call-arg]
    """The model space :func:`make_compressible` returns: the user's model (``.model``) with compressible layers.

    ``freeze(sample)`` returns the model at ``sample`` **with the original weights** (NNI's own ``freeze`` builds
    every layer afresh); on a one-shot supernet, the mixed ops' own ``freeze`` keeps what they learned instead.
    A frozen model has the user's module paths: the blocks a depth choice keeps sit under their own names.
    ``converted`` lists the converted layers by those paths.
    """

    def __init__(self, model: nn.Module, *, weight_bits: Any = (2, 4, 8), sparsity: Any = 0.0,
                 rank: Sequence[int] | None = None, act_bits: Any = None, per_channel: bool | int = False,
                 depth: Mapping[str, Any] | None = None, example_input: Any = None,
                 policy: CompressionPolicy | None = None) -> None:
        super().__init__()
        policy = CompressionPolicy() if policy is None else policy
        if not isinstance(policy, CompressionPolicy):
            raise ValueError(f"make_compressible: policy must be a CompressionPolicy, but got {policy!r}")
        bits = [check_weight_bits(b, field="make_compressible: weight_bits candidate", allow_zero=bool(per_channel))
                for b in _as_candidates(weight_bits, "weight_bits")]
        sparsities = [check_sparsity(s, field="make_compressible: sparsity candidate")
                      for s in _as_candidates(sparsity, "sparsity")]
        acts = None if act_bits is None else [check_act_bits(a, field="make_compressible: act_bits candidate")
                                              for a in _as_candidates(act_bits, "act_bits")]
        ranks = None if rank is None else _as_candidates(rank, "rank")
        if not isinstance(per_channel, bool) and (not isinstance(per_channel, int) or per_channel < 1):
            raise ValueError(f"make_compressible: per_channel must be True, False or a group size >= 1, "
                             f"but got {per_channel!r}")
        if per_channel and policy.shared:
            raise ValueError("make_compressible: per_channel bits need one label per layer (their channel counts "
                             "differ), but got per_channel with CompressionPolicy(shared=True)")
        if not isinstance(model, nn.Module):
            raise TypeError(f"make_compressible: model must be a torch nn.Module, but got {type(model).__name__}")

        model = copy.deepcopy(model)
        runs = [] if depth is None else _depth_runs(model, depth)
        if runs:
            _check_droppable(model, runs, example_input)
        self.depth_runs = [_drop_unused_blocks(model, run) for run in runs]
        layers = [(path, m) for path, m in model.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))]
        for path, m in layers:
            if type(m) not in _TWINS and not isinstance(m, COMPRESSIBLE_MUTABLES) and not policy.skips(path, m):
                raise TypeError(
                    f"make_compressible: module {path!r} is a {type(m).__name__}, a subclass of "
                    f"{[t.__name__ for t in _TWINS if isinstance(m, t)][0]} whose forward may differ from it; only "
                    f"{', '.join('nn.' + t.__name__ for t in _TWINS)} themselves are converted. Skip it with "
                    f"CompressionPolicy(skip=({type(m).__name__},)) or skip=({path!r},)")
        layers = [(p, m) for p, m in layers if type(m) in _TWINS]
        ends_bits = policy.ends_bits
        ends = {layers[0][0], layers[-1][0]} if layers and ends_bits is not None else set()
        self.converted: list[str] = []
        for path, m in layers:
            if policy.skips(path, m):
                continue
            label = (lambda kind: kind) if policy.shared else (lambda kind, p=path: f"{kind}_{p}")
            if path in ends:
                new = self._twin(m, weight_bits=ends_bits, sparsity=0.0,
                                 act_bits=32 if acts is None else 8)
            else:
                out = m.out_channels if isinstance(m, (nn.Conv1d, nn.Conv2d)) else m.out_features
                if per_channel:
                    group = 1 if per_channel is True else min(int(per_channel), out)
                    wb: Any = channel_bits_choice(label("bits"), out, bits, group_size=group)
                else:
                    wb = _choice(bits_choice, label("bits"), bits, int)
                new = self._twin(m, weight_bits=wb,
                                 sparsity=_choice(sparsity_choice, label("sparsity"), sparsities, float),
                                 act_bits=32 if acts is None else _choice(act_bits_choice, label("act_bits"), acts, int))
                fitting = self._ranks(m, ranks)
                if fitting:
                    limit = max_rank(*self._rank_shape(m))
                    if policy.shared and fitting != ranks:
                        raise ValueError(f"make_compressible: rank candidates {ranks} must all fit every layer with "
                                         f"shared labels, but layer {path!r} allows ranks up to {limit}")
                    rank_of: Any = _choice(lambda lb, v, limit=limit: rank_choice(lb, v, max_rank=limit),
                                           label("rank"), fitting, int)
                    lowrank = self._lowrank(m, rank_of, wb if not per_channel else max(bits))
                    new = LayerChoice({"quant": new, "lowrank": lowrank}, label=label("op"))
            parent, _, name = path.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, name, new)
            self.converted.append(path)
        for run in self.depth_runs:
            if run.searched:
                _repeat_blocks(model, run)
        self.model = model
        refused = uncosted_modules(self.model)
        if refused:
            raise uncosted_error(refused)

    # ----- building the twins ---------------------------------------------------------------------
    @staticmethod
    def _twin(m: nn.Module, **compression: Any) -> nn.Module:
        quant_type = _TWINS[type(m)][0]
        if isinstance(m, nn.Linear):
            new = quant_type(in_features=m.in_features, out_features=m.out_features, bias=m.bias is not None,
                             **compression)
        else:
            assert isinstance(m, (nn.Conv1d, nn.Conv2d))
            new = quant_type(in_channels=m.in_channels, out_channels=m.out_channels, kernel_size=m.kernel_size,
                             stride=m.stride, padding=m.padding, dilation=m.dilation, groups=m.groups,
                             bias=m.bias is not None, padding_mode=m.padding_mode, **compression)
        with torch.no_grad():
            new.weight.copy_(m.weight)
            if m.bias is not None:
                new.bias.copy_(m.bias)
        return new.to(device=m.weight.device, dtype=m.weight.dtype)

    @staticmethod
    def _rank_shape(m: nn.Module) -> tuple[Any, ...]:
        if isinstance(m, nn.Linear):
            return (m.out_features, m.in_features)
        return (m.out_channels, m.in_channels, m.kernel_size)

    def _ranks(self, m: nn.Module, ranks: list | None) -> list:
        """The rank candidates that fit ``m`` (none for grouped convs, which have no low-rank form here)."""
        if ranks is None or getattr(m, "groups", 1) != 1:
            return []
        limit = max_rank(*self._rank_shape(m))
        return [r for r in ranks if isinstance(r, int) and 1 <= r <= limit]

    @staticmethod
    def _lowrank(m: nn.Module, rank: Any, weight_bits: Any) -> nn.Module:
        lowrank_type = _TWINS[type(m)][1]
        if isinstance(m, nn.Linear):
            return lowrank_type(in_features=m.in_features, out_features=m.out_features, bias=m.bias is not None,
                                rank=rank, weight_bits=weight_bits)
        assert isinstance(m, (nn.Conv1d, nn.Conv2d))
        return lowrank_type(in_channels=m.in_channels, out_channels=m.out_channels, kernel_size=m.kernel_size,
                            stride=m.stride, padding=m.padding, dilation=m.dilation, bias=m.bias is not None,
                            rank=rank, weight_bits=weight_bits)

    # ----- model space ------------------------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)

    def _space_path(self, path: str) -> str:
        """Where the layer at ``path`` of the user's model sits in the space (inside a ``Repeat`` for depth)."""
        for run in self.depth_runs:
            inside = run.space_path(path) if run.searched else None
            if inside is not None:
                return inside
        return path

    def freeze(self, sample: dict[str, Any]) -> nn.Module:
        frozen = super().freeze(sample)
        for run in self.depth_runs:
            if run.searched:
                _unfold_blocks(frozen.model, run)
        for path in self.converted:
            source = self.model.get_submodule(self._space_path(path))
            if isinstance(source, LayerChoice):
                source = source["quant"]
            if not isinstance(source, COMPRESSIBLE_MUTABLES):  # a supernet's mixed op: its freeze kept its weights
                continue
            try:
                target = frozen.model.get_submodule(path)
            except AttributeError:  # in a block the sample's depth drops
                continue
            if isinstance(target, LOWRANK_LAYERS):
                weight, bias = source.state_dict()["weight"], source.state_dict().get("bias")
                target.load_dense(weight, bias)
                continue
            own = target.state_dict()
            own.update({k: v.clone() for k, v in source.state_dict().items() if k in own and own[k].shape == v.shape})
            target.load_state_dict(own)
        return frozen


def make_compressible(model: nn.Module, *, weight_bits: int | Sequence[int] = (2, 4, 8),
                      sparsity: float | Sequence[float] = 0.0, rank: Sequence[int] | None = None,
                      act_bits: int | Sequence[int] | None = None, per_channel: bool | int = False,
                      depth: Mapping[str, int | Sequence[int]] | None = None, example_input: Any = None,
                      policy: CompressionPolicy | None = None) -> CompressibleModel:
    """An NNI model space of ``model`` in which every Conv1d, Conv2d and Linear is compressible, weights kept.

    Each ``nn.Conv1d``/``nn.Conv2d`` (grouped and depthwise included) and ``nn.Linear`` becomes a
    ``MutableQuantConv1d``/``MutableQuantConv2d``/``MutableQuantLinear`` holding the layer's weights. ``model`` itself
    is not changed (the space holds a copy). A single value fixes a choice; a list makes it a choice.

    Args:
        model: any ``nn.Module``; its forward code is kept as it is.
        weight_bits: weight bit-width candidates (from {2..8, 16, 32}); with ``per_channel``, 0 removes a channel.
        sparsity: unstructured sparsity candidates in [0, 1).
        rank: low-rank candidates: each layer with ``groups=1`` (and a rank that fits it) becomes
            ``LayerChoice({'quant': ..., 'lowrank': ...})``; the low-rank factors are the SVD of the layer's weights.
            ``None`` (default): no low-rank candidates.
        act_bits: input-activation bit candidates; ``None`` (default) keeps float inputs (no activation choice).
        per_channel: one weight bit-width per output channel (``True``) or per group of this many channels.
        depth: how many leading blocks of a stage run, as a choice (an NNI ``Repeat`` over the model's own blocks,
            label ``'depth_<key>'``). Keys: the path of an ``nn.Sequential`` (``'layer1'``: all its blocks) or a run
            of its blocks (``'features.14-16'``: blocks 14 to 16); values: candidate counts from 0 (the run is
            skipped) to the number of blocks (a single count fixes it; blocks beyond the largest count are removed). Every block a candidate
            may drop must keep its input's shape (checked on ``example_input``), e.g. torchvision resnet18's
            ``layer1``, or all but the first block of ``layer2`` (``'layer2': [1, 2]``). A frozen model keeps the
            user's module paths for the blocks it keeps (the dropped ones leave gaps in the numbering).
        example_input: an input batch of ``model`` (or a tuple of its arguments); needed with ``depth`` only.
        policy: which layers to convert and how to label them (:class:`CompressionPolicy`): by default the first
            and last layers stay at 8-bit weights, and every layer has its own labels (``'bits_<path>'``).

    Raises:
        TypeError: the model holds a layer that can be neither converted nor costed (a subclass of ``nn.Conv2d``
            with its own forward, an ``nn.LSTM``, a ``ConvTranspose2d``): its path and type are named.
        ValueError: a candidate is out of range (the message shows it); a depth key names no ``nn.Sequential``,
            or a block it may drop changes its input's shape (the message names the block).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
        >>> space = make_compressible(net, weight_bits=[4, 8], sparsity=[0.0, 0.5])
        >>> sorted(space.simplify())   # the first and last layers stay at 8 bits
        ['bits_2', 'sparsity_2']
        >>> model = space.freeze({'bits_2': 4, 'sparsity_2': 0.5})
        >>> type(model.model[2]).__name__, model.model[2].weight_bits, bool((model.model[2].weight == net[2].weight).all())
        ('QuantConv2d', 4, True)

        Depth: blocks 1 to 3 of this chain keep their input's shape, so 1, 2 or 3 of them can run:

        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1),
        ...                     nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.Flatten(),
        ...                     nn.Linear(8 * 4 * 4, 10))
        >>> space = make_compressible(net, weight_bits=8, depth={'1-3': [1, 2, 3]}, example_input=torch.zeros(1, 3, 4, 4))
        >>> space.simplify()['depth_1-3'].values
        [1, 2, 3]
        >>> model = space.freeze({'depth_1-3': 2})
        >>> kept = model.model.get_submodule('2')
        >>> [name for name, _ in model.model.named_children()], bool((kept.weight == net[2].weight).all())
        (['0', '1', '2', '4', '5'], True)
    """
    return CompressibleModel(model, weight_bits=weight_bits, sparsity=sparsity, rank=rank, act_bits=act_bits,
                             per_channel=per_channel, depth=depth, example_input=example_input, policy=policy)
