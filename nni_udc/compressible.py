"""Bring your own model: :func:`make_compressible` turns any PyTorch network into an NNI model space.

Every ``nn.Conv1d``, ``nn.Conv2d`` (grouped and depthwise included) and ``nn.Linear`` of the model becomes the
compressible NNI twin of :mod:`nni_udc.nn` (``MutableQuantConv1d``/``MutableQuantConv2d``/``MutableQuantLinear``) with
the choices given, and optionally a ``LayerChoice`` between it and a low-rank factorisation. Everything else (batch
norms, activations, the forward code) is the user's, untouched. The model's weights are kept: a frozen model holds
them (a low-rank candidate is initialised from their SVD), and a one-shot supernet starts from them (see
:meth:`nni_udc.strategies.supernet.MixedCompressedOp.mutate`).

The idea is torchao's one verb ``quantize_(model, config)``, for search: one call plus a policy object.
"""
from __future__ import annotations

import copy
import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from nni.nas.nn.pytorch import LayerChoice, ModelSpace
from torch import nn

from nni_udc.evaluators.layers import uncosted_error, uncosted_modules
from nni_udc.functional import max_rank
from nni_udc.nn import (
    COMPRESSIBLE_MUTABLES,
    LowRankConv1d,
    LowRankConv2d,
    LowRankLinear,
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
_LOWRANK_FROZEN = (LowRankConv1d, LowRankConv2d, LowRankLinear)


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


class CompressibleModel(ModelSpace, label_prefix=None):  # type: ignore[call-arg]
    """The model space :func:`make_compressible` returns: the user's model (``.model``) with compressible layers.

    ``freeze(sample)`` returns the model at ``sample`` **with the original weights** (NNI's own ``freeze`` builds
    every layer afresh); on a one-shot supernet, the mixed ops' own ``freeze`` keeps what they learned instead.
    """

    def __init__(self, model: nn.Module, *, weight_bits: Any = (2, 4, 8), sparsity: Any = 0.0,
                 rank: Sequence[int] | None = None, act_bits: Any = None, per_channel: bool | int = False,
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

    def freeze(self, sample: dict[str, Any]) -> nn.Module:
        frozen = super().freeze(sample)
        for path in self.converted:
            source = self.model.get_submodule(path)
            if isinstance(source, LayerChoice):
                source = source["quant"]
            if not isinstance(source, COMPRESSIBLE_MUTABLES):  # a supernet's mixed op: its freeze kept its weights
                continue
            target = frozen.model.get_submodule(path)
            if isinstance(target, _LOWRANK_FROZEN):
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
        policy: which layers to convert and how to label them (:class:`CompressionPolicy`): by default the first
            and last layers stay at 8-bit weights, and every layer has its own labels (``'bits_<path>'``).

    Raises:
        TypeError: the model holds a layer that can be neither converted nor costed (a subclass of ``nn.Conv2d``
            with its own forward, an ``nn.LSTM``, a ``ConvTranspose2d``): its path and type are named.
        ValueError: a candidate is out of range (the message shows it).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
        >>> space = make_compressible(net, weight_bits=[4, 8], sparsity=[0.0, 0.5])
        >>> sorted(space.simplify())   # the first and last layers stay at 8 bits
        ['bits_2', 'sparsity_2']
        >>> model = space.freeze({'bits_2': 4, 'sparsity_2': 0.5})
        >>> type(model.model[2]).__name__, model.model[2].weight_bits, bool((model.model[2].weight == net[2].weight).all())
        ('QuantConv2d', 4, True)
    """
    return CompressibleModel(model, weight_bits=weight_bits, sparsity=sparsity, rank=rank, act_bits=act_bits,
                             per_channel=per_channel, policy=policy)
