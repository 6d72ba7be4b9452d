"""Weight-shared mixed operations: nni-udc's modules (1-D and 2-D convs, linear) inside a differentiable
(DARTS-style) supernet.

Each mutable nni-udc module becomes one mixed op that holds **one** float weight at the largest shape and
applies every candidate as a soft, differentiable view of it:

- weight bits: ``Σ_k p_k · Q_{b_k}(W)``; per output channel, ``p`` has shape (bit candidates × channels)
  and a 0-bit candidate contributes nothing (the channel is removed);
- sparsity: nested magnitude masks (DASS ops: nested top-k score masks), ``W ⊙ Σ_s p_s · M_s``;
- rank: truncations of one factorisation, a soft mask ``Σ_r p_r · [i < r]`` on the factor channels;
- width (``in/out_channels`` as a choice): FBNetV2-style soft channel masks, as NNI's own mixed ops do;
- activation bits: ``Σ_a p_a · q_a(x)`` with one learnable PACT clip per candidate;
- ``in_channel_bits``: removed input channels are masked with weight ``P(bits > 0)``, so removing a
  channel upstream also lightens this layer.

Same label, same architecture parameter (NNI's memo): tied labels share one decision. With one-hot
probabilities the op computes what the frozen module computes; :meth:`MixedCompressedOp.freeze` slices
the shared weights into the plain module, so an exported model keeps what the supernet learned.

These hooks are used by :class:`~nni_udc.strategies.UDC`; any NNI differentiable strategy takes them too::

    DARTS(mutation_hooks=MIXED_OPERATION_HOOKS)
"""
from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from nni.mutable import Categorical, Mutable, MutableExpression, MutableList
from nni.nas.nn.pytorch import MutableBatchNorm1d
from nni.nas.oneshot.pytorch.supermodule._expression_utils import traverse_all_options, weighted_sum
from nni.nas.oneshot.pytorch.supermodule.base import BaseSuperNetModule
from nni.nas.oneshot.pytorch.supermodule.differentiable import DifferentiableMixedLayer, DifferentiableMixedRepeat
from nni.nas.oneshot.pytorch.supermodule.operation import MixedBatchNorm2d
from torch import nn

from nni_udc.functional import fake_quantize_weight, magnitude_mask, topk_mask_ste
from nni_udc.nn import (
    ActivationQuantizer,
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

__all__ = [
    "MIXED_OPERATION_HOOKS",
    "MixedCompressedOp",
    "MixedLayerChoice",
    "MixedLowRank",
    "MixedQuant",
    "MixedRepeat",
    "MixedSparse",
    "SAMPLEABLE",
    "channel_alpha_key",
]


def channel_alpha_key(labels: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """Memo key of the (bit candidates × groups) parameter shared by every layer using these group labels."""
    return ("nni_udc.channel_alpha", labels)


def _channel_groups(value: MutableList) -> tuple[list[Categorical], list[int]]:
    """Distinct group choices of a per-channel list and, for each channel, its group's index."""
    groups: list[Categorical] = []
    index: dict[str, int] = {}
    of_channel = []
    for choice in value:
        if not isinstance(choice, Categorical):
            raise TypeError(f"per-channel choices must be nni.choice values, but got {choice!r}")
        if choice.label not in index:
            index[choice.label] = len(groups)
            groups.append(choice)
        of_channel.append(index[choice.label])
    if any(g.values != groups[0].values for g in groups):
        raise TypeError(f"all groups of a per-channel choice must have the same candidates, got {[g.values for g in groups]}")
    return groups, of_channel


class _Options:
    """The values a (possibly composite) choice can take, each with its probability under live alphas."""

    def __init__(self, expr: MutableExpression) -> None:
        leaves = expr.simplify()
        for label, leaf in leaves.items():
            if not isinstance(leaf, Categorical):
                raise TypeError(f"one-shot search needs categorical choices, but {label!r} is {type(leaf).__name__}")
        self.labels = list(leaves)
        self.entries: list[tuple[Any, tuple[int, ...]]] = []
        for combo in itertools.product(*(range(len(leaves[lb].values)) for lb in self.labels)):
            sample = {lb: leaves[lb].values[i] for lb, i in zip(self.labels, combo)}
            self.entries.append((expr.freeze(sample), combo))
        self.values = sorted({v for v, _ in self.entries})

    def weights(self, probs: Mapping[str, torch.Tensor]) -> list[tuple[Any, torch.Tensor]]:
        out: dict[Any, torch.Tensor] = {}
        for value, combo in self.entries:
            w = torch.ones(())
            for label, i in zip(self.labels, combo):
                w = w * probs[label][i]
            out[value] = out[value] + w if value in out else w
        return list(out.items())


def _live(weights: list[tuple[Any, torch.Tensor]]) -> list[tuple[Any, torch.Tensor]]:
    """The ``(value, probability)`` pairs whose probability is not exactly 0.

    Leaving the others out changes neither the mixture nor its gradient (a softmax's derivative with respect to
    any logit carries the factor ``p``), and scoring one architecture (one-hot probabilities: the export's
    candidates, :class:`~nni_udc.strategies.udc.UDC`) then computes one candidate per choice instead of all of
    them. Weights used only by a left-out candidate get no gradient (``None``, not zeros), so a single-path step
    (:mod:`nni_udc.strategies.single_path`) leaves them alone as SPOS does; under the DARTS mixture no
    probability is exactly 0 (float32's softmax underflows only for logit gaps above about 100). At least one
    pair is kept, so the mixture keeps its shape and device.

    Example:
        >>> [v for v, _ in _live([(2, torch.tensor(0.0)), (4, torch.tensor(1.0)), (8, torch.tensor(0.0))])]
        [4]
    """
    kept = [(v, p) for v, p in weights if bool(p != 0)]
    return kept or weights[:1]


def _straight_through(weights: list[tuple[Any, torch.Tensor]], drawn: Any) -> list[tuple[Any, torch.Tensor]]:
    """The ``(value, probability)`` pairs as one-hot weights on the ``drawn`` value, with the mixture's gradient.

    The forward pass computes the drawn candidate alone (``1`` for it, ``0`` for the others); the gradient with
    respect to every probability is the one the soft mixture gets at that point (``hard + (p - p.detach())``, the
    straight-through estimator). Why draw: a soft sparsity mask ``Σ p_s · M_s`` only scales the weights it would
    remove and the batch norm after the layer undoes the scale, so the task loss barely feels sparsity while the
    expected cost falls with ``p``; drawn masks train the supernet's weights under the masks its models will have
    (``benchmarks/front_vs_uniform.md``).

    Example:
        >>> [(v, float(w)) for v, w in _straight_through([(0.0, torch.tensor(0.3)), (0.5, torch.tensor(0.7))], 0.5)]
        [(0.0, 0.0), (0.5, 1.0)]
    """
    probs = torch.stack([p for _, p in weights])
    hard = torch.tensor([float(v == drawn) for v, _ in weights], dtype=probs.dtype, device=probs.device)
    mixed = hard + (probs - probs.detach())  # exactly 1 and 0 in the forward pass
    return [(v, mixed[i]) for i, (v, _) in enumerate(weights)]


def _draw(weights: list[tuple[Any, torch.Tensor]]) -> Any:
    """One value drawn from ``(value, probability)`` pairs (torch's global RNG; none is used for a single pair)."""
    if len(weights) == 1:
        return weights[0][0]
    probs = torch.stack([p.detach().float() for _, p in weights])
    return weights[int(torch.multinomial(probs, 1))][0]


def _forget_draws(module: MixedCompressedOp, args: Any) -> None:
    """Forward pre-hook: every forward pass of a mixed op draws its :attr:`~MixedCompressedOp.sampled` values anew."""
    module._drawn.clear()


class MixedCompressedOp(BaseSuperNetModule):
    """Base of the mixed ops: architecture parameters, live probabilities, export and weight-keeping freeze.

    Subclasses set ``mutable_type`` (the NNI twin they replace), ``bound_type`` (the plain class they freeze
    to), ``structural`` (shape arguments: built at their largest value) and ``neutral`` (compression
    arguments and the value that turns them off in the shared op), and implement ``forward``.
    """

    mutable_type: type
    bound_type: type
    structural: tuple[str, ...] = ()
    neutral: dict[str, Any] = {}
    #: searched arguments (per layer, not per channel) whose candidates are drawn, one per forward pass, while
    #: training, with a straight-through gradient (:func:`_straight_through`), instead of mixed; UDC's ``sampled``.
    #: Each layer draws its own, also for a label it shares with another layer.
    sampled: frozenset[str] = frozenset()

    def __init__(self, kwargs: Mapping[str, Any], memo: dict[str, Any], softmax: nn.Module) -> None:
        super().__init__()
        self.kwargs = dict(kwargs)
        self._softmax = softmax
        self._drawn: dict[str, Any] = {}  # argument -> value drawn for this forward pass (sampled arguments)
        self.register_forward_pre_hook(_forget_draws)
        self.alphas = nn.ParameterList()
        self._alpha_of: dict[str, tuple[int, int | None]] = {}  # label -> (alpha index, group column or None)
        self._options: dict[str, _Options] = {}
        self._channel: dict[str, tuple[int, list[Any], torch.Tensor]] = {}  # arg -> (alpha index, values, group of channel)
        allowed = set(self.structural) | set(self.neutral)
        built = {}
        for name, value in self.kwargs.items():
            if not isinstance(value, Mutable):
                built[name] = value
                continue
            if name not in allowed:
                raise TypeError(f"{self.bound_type.__name__}: argument {name!r} cannot be searched one-shot; "
                                f"searchable arguments are {sorted(allowed)}")
            if isinstance(value, MutableList):
                self._add_channel_choice(name, value, memo)
                built[name] = self.neutral[name]
            elif isinstance(value, MutableExpression):
                self._options[name] = _Options(value)
                for label in self._options[name].labels:
                    self._add_label(label, memo)
                built[name] = max(self._options[name].values) if name in self.structural else self.neutral[name]
            else:
                raise TypeError(f"{self.bound_type.__name__}: argument {name!r} is {type(value).__name__}, "
                                "but one-shot search supports nni.choice values and lists of them")
            self.add_mutable(value)
        self.op = self.bound_type(**built)

    # ----- architecture parameters -------------------------------------------------------------------
    def _add_label(self, label: str, memo: dict[str, Any]) -> None:
        if label in self._alpha_of:
            return
        if label not in memo:
            raise KeyError(f"label {label!r} has no architecture parameter; is the strategy differentiable?")
        self.alphas.append(memo[label])
        self._alpha_of[label] = (len(self.alphas) - 1, None)

    def _add_channel_choice(self, name: str, value: MutableList, memo: dict[str, Any]) -> None:
        groups, of_channel = _channel_groups(value)
        labels = tuple(g.label for g in groups)
        key = channel_alpha_key(labels)
        if key not in memo:  # one (bits × groups) parameter, started from the strategy's per-label alphas
            memo[key] = nn.Parameter(torch.stack([memo[lb].detach() for lb in labels], dim=1).clone())  # type: ignore[index]
        self.alphas.append(memo[key])  # type: ignore[index]
        index = len(self.alphas) - 1
        for g, label in enumerate(labels):
            self._alpha_of[label] = (index, g)
        self._channel[name] = (index, list(groups[0].values), torch.tensor(of_channel))

    def arch_parameters(self):
        yield from self.alphas

    def alpha_of(self, label: str) -> torch.Tensor:
        """The architecture logits of ``label``: a parameter, or a column of a per-channel parameter."""
        index, column = self._alpha_of[label]
        return self.alphas[index] if column is None else self.alphas[index][:, column]

    def label_probabilities(self, softmax: nn.Module | None = None) -> dict[str, torch.Tensor]:
        """``{label: probabilities}`` of every label this op owns (softmax of its live alphas)."""
        softmax = softmax or self._softmax
        return {label: softmax(self.alpha_of(label)) for label in self._alpha_of}

    def _probs(self) -> dict[str, torch.Tensor]:
        return {label: self._softmax(self.alphas[i]) for label, (i, col) in self._alpha_of.items() if col is None}

    def _channel_probs(self, name: str) -> tuple[list[Any], torch.Tensor]:
        """Candidate values and their probabilities per channel, shape (candidates × channels)."""
        index, values, of_channel = self._channel[name]
        per_group = self._softmax(self.alphas[index].t()).t()  # softmax over candidates, per group
        return values, per_group[:, of_channel]

    def _weights(self, name: str) -> list[tuple[Any, torch.Tensor]] | None:
        """``[(value, probability)]`` of a searched argument, ``None`` if the argument is fixed.

        Values of probability exactly 0 are left out (see :func:`_live`). An argument in :attr:`sampled` gets
        one drawn value while training (:func:`_straight_through`)."""
        if name not in self._options:
            return None
        weights = _live(self._options[name].weights(self._probs()))
        if not (self.training and name in self.sampled):
            return weights
        if name not in self._drawn:  # once per forward pass: the width loop and the output mask agree
            self._drawn[name] = _draw(weights)
        return _straight_through(weights, self._drawn[name])

    # ----- NNI supernet protocol ---------------------------------------------------------------------
    def resample(self, memo: dict[str, Any]) -> dict[str, Any]:
        return {}  # differentiable: every candidate is always active

    def export(self, memo: dict[str, Any]) -> dict[str, Any]:
        """The most probable value of every label not exported yet (argmax of its alpha)."""
        out = {}
        for label in self._alpha_of:
            if label in memo or label in out:
                continue
            out[label] = self._label_values(label)[int(torch.argmax(self.alpha_of(label)))]
        return out

    def export_probs(self, memo: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for label, p in self.label_probabilities().items():
            if label not in memo:
                out[label] = dict(zip(self._label_values(label), p.detach().cpu().tolist()))
        return out

    def _label_values(self, label: str) -> list[Any]:
        return self.mutables_by_label()[label].values

    def mutables_by_label(self) -> dict[str, Categorical]:
        out: dict[str, Categorical] = {}
        for value in self.kwargs.values():
            if isinstance(value, Mutable):
                out.update(value.simplify())
        return out

    def freeze(self, sample: Mapping[str, Any]) -> nn.Module:
        """The plain module at ``sample``, with this op's trained weights sliced to its shape."""
        args = {k: (v.freeze(sample) if isinstance(v, Mutable) else v) for k, v in self.kwargs.items()}
        frozen = self.bound_type(**args)
        state = self.op.state_dict()
        own = frozen.state_dict()
        for key, target in own.items():
            source = state[key]
            own[key] = source[tuple(slice(0, n) for n in target.shape)].clone() if target.dim() else source.clone()
        own.update(self._frozen_extra_state(args))
        frozen.load_state_dict(own)
        return frozen

    def _frozen_extra_state(self, args: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        return {}

    @classmethod
    def mutate(cls, module: nn.Module, name: str, memo: dict[str, Any], mutate_kwargs: dict[str, Any]) -> Any:
        # Exact type: plain modules and other subclasses are not ours to replace. Modules without choices are
        # replaced too, so that freezing the supernet keeps their trained weights.
        if type(module) is not cls.mutable_type:
            return None
        if "softmax" not in mutate_kwargs:
            raise TypeError(f"{cls.__name__} needs a differentiable strategy (DARTS, GumbelDARTS, UDC); "
                            f"module {name!r} cannot be mutated with {sorted(mutate_kwargs)}")
        mixed = cls(module.trace_kwargs, memo, mutate_kwargs["softmax"])  # type: ignore[arg-type]
        mixed.inherit_weights(module)
        return mixed

    @torch.no_grad()
    def inherit_weights(self, module: nn.Module) -> None:
        """Start the shared op from ``module``'s weights wherever their shapes agree (all of them unless a width
        is searched), so a space converted from a trained model (:func:`nni_udc.make_compressible`) starts its
        supernet from that model rather than from a fresh initialisation."""
        own = dict(self.op.named_parameters())
        for key, value in module.named_parameters():
            if key in own and own[key].shape == value.shape:
                own[key].copy_(value)

    # ----- shared forward pieces ---------------------------------------------------------------------
    def _quantize(self, w: torch.Tensor, rows: int | None = None) -> torch.Tensor:
        """``Σ_b p_b · Q_b(w)`` over the weight-bit candidates (per channel: p per output channel); ``rows``: ``w``
        holds only the first ``rows`` output channels (a narrower width)."""
        view = (-1,) + (1,) * (w.dim() - 1)
        if "weight_bits" in self._channel:
            values, p = self._channel_probs("weight_bits")
            p = p[:, :rows] if rows is not None else p
            return sum((p[k].view(view) * fake_quantize_weight(w, b) for k, b in enumerate(values)
                        if b > 0 and bool(p[k].any())), torch.zeros_like(w))  # every channel removed: all zeros
        weights = self._weights("weight_bits")
        if weights is None:
            bits = self.op.weight_bits
            return fake_quantize_weight(w, bits[:rows] if isinstance(bits, list) and rows is not None else bits)
        return sum(p * fake_quantize_weight(w, b) for b, p in weights)  # type: ignore[return-value]

    def _out_mask(self, y: torch.Tensor, name: str, dim: int) -> torch.Tensor:
        weights = self._weights(name)
        if weights is None:
            return y
        mask = _prefix_mask(weights, y.shape[dim], y)
        shape = [1] * y.dim()
        shape[dim] = -1
        return y * mask.view(shape)


#: The torch conv classes our conv modules derive from (a mixed op's output channels sit on dim 1 for these).
_CONV = (nn.Conv1d, nn.Conv2d)


def _pad_to(part: torch.Tensor, full: torch.Tensor) -> list[int]:
    """``F.pad`` widths that put ``part`` (a leading slice of dims 0 and 1) back into ``full``'s shape."""
    pad = [0, 0] * (full.dim() - 2)
    return pad + [0, full.shape[1] - part.shape[1], 0, full.shape[0] - part.shape[0]]


def _prefix_mask(weights: list[tuple[int, torch.Tensor]], size: int, like: torch.Tensor) -> torch.Tensor:
    """``Σ_v p_v · [i < v]``: the soft mask of a width or rank choice."""
    positions = torch.arange(size, device=like.device)
    return sum(p.to(like.dtype) * (positions < v).to(like.dtype) for v, p in weights)  # type: ignore[return-value]


class MixedQuant(MixedCompressedOp):
    """Mixed :class:`~nni_udc.nn.QuantConv1d` / :class:`~nni_udc.nn.QuantConv2d` / :class:`~nni_udc.nn.QuantLinear`:
    width, weight bits (per layer or per channel), activation bits, sparsity and removed inputs, all on one shared
    weight."""

    structural = ("in_channels", "out_channels", "in_features", "out_features")
    neutral = {"weight_bits": 32, "act_bits": 32, "sparsity": 0.0, "in_channel_bits": None}

    def __init__(self, kwargs: Mapping[str, Any], memo: dict[str, Any], softmax: nn.Module) -> None:
        super().__init__(kwargs, memo, softmax)
        act = self._options.get("act_bits")
        signed = self.kwargs.get("act_signed", True)
        self.act_quants = nn.ModuleList([ActivationQuantizer(b, signed=signed) for b in act.values]) if act else None

    def _activation(self, x: torch.Tensor) -> torch.Tensor:
        if self.act_quants is None:
            return self.op.act_quant(x)
        by_bits = {q.bits: q for q in self.act_quants}
        return sum(p * by_bits[b](x) for b, p in self._weights("act_bits"))  # type: ignore[return-value,union-attr]

    def _input_keep(self, w: torch.Tensor) -> torch.Tensor | None:
        shape = (1, -1) + (1,) * (w.dim() - 2)
        if "in_channel_bits" in self._channel:
            values, p = self._channel_probs("in_channel_bits")
            removed = [i for i, v in enumerate(values) if v == 0]
            return (1 - p[removed].sum(0)).view(shape) if removed else None
        if self.op.in_channel_bits is not None:
            return self.op.input_mask.view(shape)
        return None

    def _sparse(self, w: torch.Tensor) -> torch.Tensor:
        weights = self._weights("sparsity")
        if weights is None:
            return w * magnitude_mask(w, self.op.sparsity) if self.op.sparsity > 0 else w
        mask = sum(p * (magnitude_mask(w, s) if s > 0 else torch.ones_like(w)) for s, p in weights)
        return w * mask

    def mixed_weight(self) -> torch.Tensor:
        w = self.op.weight
        keep = self._input_keep(w)
        if keep is not None:
            w = w * keep
        linear = not isinstance(self.op, _CONV)
        widths_in = self._weights("in_features" if linear else "in_channels")
        widths_out = self._weights("out_features" if linear else "out_channels")
        if widths_in is None and widths_out is None:
            return self._quantize(self._sparse(w))
        # A narrower frozen layer prunes and quantises only its own weights: each output channel's scale and the
        # magnitude threshold come from its slice. So each width pair is computed on its slice, zero-padded back,
        # and the mixture weighs them: at one-hot the supernet computes what the frozen layer computes.
        mixed = torch.zeros_like(w)
        for v_in, p_in in widths_in or [(w.shape[1], torch.ones(()))]:
            for v_out, p_out in widths_out or [(w.shape[0], torch.ones(()))]:
                part = self._quantize(self._sparse(w[:v_out, :v_in]), rows=v_out)
                mixed = mixed + p_in * p_out * F.pad(part, _pad_to(part, w))
        return mixed

    def _mixed_bias(self) -> torch.Tensor | None:
        """The bias weighted per output channel by the probability that the channel is kept: a removed (0-bit)
        channel of the frozen layer outputs nothing (:meth:`~nni_udc.nn.quant.QuantLinear.compressed_bias`)."""
        bias = self.op.bias
        if bias is None or "weight_bits" not in self._channel:
            return self.op.compressed_bias()
        values, p = self._channel_probs("weight_bits")
        removed = [k for k, b in enumerate(values) if b == 0]
        return bias * (1 - p[removed].sum(0)) if removed else bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, w, b = self._activation(x), self.mixed_weight(), self._mixed_bias()
        if isinstance(self.op, _CONV):
            return self._out_mask(self.op._conv_forward(x, w, b), "out_channels", 1)
        return self._out_mask(F.linear(x, w, b), "out_features", -1)

    def _frozen_extra_state(self, args: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        if self.act_quants is None:
            return {}
        chosen = next(q for q in self.act_quants if q.bits == args["act_bits"])
        return {f"act_quant.{k}": v.clone() for k, v in chosen.state_dict().items()}


class MixedQuantConv1d(MixedQuant):
    mutable_type, bound_type = MutableQuantConv1d, QuantConv1d


class MixedQuantConv2d(MixedQuant):
    mutable_type, bound_type = MutableQuantConv2d, QuantConv2d


class MixedQuantLinear(MixedQuant):
    mutable_type, bound_type = MutableQuantLinear, QuantLinear


class MixedSparse(MixedCompressedOp):
    """Mixed DASS :class:`~nni_udc.nn.SparseConv1d` / :class:`~nni_udc.nn.SparseConv2d` /
    :class:`~nni_udc.nn.SparseLinear`: width, sparsity (nested top-k masks of one set of learnable scores) and
    weight bits."""

    structural = ("in_channels", "out_channels", "in_features", "out_features")
    neutral = {"sparsity": 0.0, "weight_bits": 32}

    def mixed_weight(self) -> torch.Tensor:
        weights = self._weights("sparsity")
        if weights is None:
            masked = self.op.weight * self.op.mask()
        else:
            masked = self.op.weight * sum(p * topk_mask_ste(self.op.scores, s) for s, p in weights)
        return self._quantize(masked)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.mixed_weight()
        if isinstance(self.op, _CONV):
            return self._out_mask(self.op._conv_forward(x, w, self.op.bias), "out_channels", 1)
        return self._out_mask(F.linear(x, w, self.op.bias), "out_features", -1)


class MixedSparseConv1d(MixedSparse):
    mutable_type, bound_type = MutableSparseConv1d, SparseConv1d


class MixedSparseConv2d(MixedSparse):
    mutable_type, bound_type = MutableSparseConv2d, SparseConv2d


class MixedSparseLinear(MixedSparse):
    mutable_type, bound_type = MutableSparseLinear, SparseLinear


class MixedLowRank(MixedCompressedOp):
    """Mixed :class:`~nni_udc.nn.LowRankConv1d` / :class:`~nni_udc.nn.LowRankConv2d` /
    :class:`~nni_udc.nn.LowRankLinear`: every rank candidate is a truncation of one max-rank factorisation
    (HALOC's rank as a choice, with shared factors); weight bits apply to both factors."""

    structural = ("in_channels", "out_channels", "in_features", "out_features", "rank")
    neutral = {"weight_bits": 32}

    def _second_weight(self, w: torch.Tensor, weights: list[tuple[int, torch.Tensor]] | None) -> torch.Tensor:
        """``Σ_r p_r · Q(W ⊙ [column < r])``: the second factor quantised as each rank's exported factor is (its scale
        from the kept columns only; quantising all columns at once gave another scale than the export at rank < max)."""
        if weights is None:
            return self._quantize(w)
        columns = torch.arange(w.shape[1], device=w.device).view((1, -1) + (1,) * (w.dim() - 2))
        return sum(p * self._quantize(w * (columns < r).to(w.dtype)) for r, p in weights)  # type: ignore[return-value]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = isinstance(self.op, (LowRankConv1d, LowRankConv2d))
        first, second = self.op.first, self.op.second
        weights = self._weights("rank")
        wf, ws = self._quantize(first.weight), self._second_weight(second.weight, weights)
        h = first._conv_forward(x, wf, None) if conv else F.linear(x, wf)
        if weights is not None:
            dim = 1 if conv else -1
            shape = [1] * h.dim()
            shape[dim] = -1
            h = h * _prefix_mask(weights, h.shape[dim], h).view(shape)
        y = second._conv_forward(h, ws, second.bias) if conv else F.linear(h, ws, second.bias)
        return self._out_mask(y, "out_channels" if conv else "out_features", 1 if conv else -1)


class MixedLowRankConv1d(MixedLowRank):
    mutable_type, bound_type = MutableLowRankConv1d, LowRankConv1d


class MixedLowRankConv2d(MixedLowRank):
    mutable_type, bound_type = MutableLowRankConv2d, LowRankConv2d


class MixedLowRankLinear(MixedLowRank):
    mutable_type, bound_type = MutableLowRankLinear, LowRankLinear


#: the searched layer arguments that :attr:`MixedCompressedOp.sampled` can draw instead of mixing
SAMPLEABLE = ("act_bits", "in_channels", "in_features", "out_channels", "out_features", "rank", "sparsity", "weight_bits")


class MixedBatchNorm1d(MixedBatchNorm2d):
    """NNI's mixed batch norm for ``MutableBatchNorm1d`` (a width choice before it), which NNI 3.0 lacks.

    NNI's ``MixedBatchNorm2d`` slices its parameters to the chosen width and calls ``F.batch_norm``, which takes
    ``(N, C, L)`` inputs as well; only the bound type differs.
    """

    bound_type = MutableBatchNorm1d


class _LabelAlphas(nn.ParameterDict):
    """Architecture parameters by label. torch's ``ParameterDict`` takes no ``'.'`` in a key, and a label may hold
    one (``make_compressible``'s ``depth_features.14-16``): such a key is stored with ``'·'`` for ``'.'``, so the
    saved names of other labels do not change.

    >>> alphas = _LabelAlphas({"depth_layer2.1-1": nn.Parameter(torch.zeros(2))})
    >>> [label for label, _ in alphas.items()], "depth_layer2.1-1" in alphas, alphas["depth_layer2.1-1"].shape
    (['depth_layer2.1-1'], True, torch.Size([2]))
    """

    def __getitem__(self, key: str) -> Any:
        return super().__getitem__(key.replace(".", "·"))

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key.replace(".", "·"), value)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.replace(".", "·"))

    def keys(self) -> Any:
        return [key.replace("·", ".") for key in super().keys()]

    def items(self) -> Any:
        return [(key, self[key]) for key in self.keys()]


class MixedRepeat(DifferentiableMixedRepeat):
    """NNI's differentiable ``Repeat`` (a weighted sum of the outputs after each candidate depth), with depth 0.

    NNI 3.0's ``DifferentiableMixedRepeat.forward`` (``nni/nas/oneshot/pytorch/supermodule/differentiable.py``)
    collects the outputs after 1, 2, ... blocks only, so a ``Repeat`` whose depth may be 0 drops that candidate's
    term, the input itself: at a one-hot depth 0 the supernet returned nothing of it and the sum's weights did not
    add up to 1. Here the input joins the sum with depth 0's probability. A label with a ``'.'`` (a depth over a run
    of nested blocks) is kept too: see :class:`_LabelAlphas`.
    """

    def __init__(self, blocks: list[nn.Module], depth: Any, softmax: nn.Module, alphas: dict[str, Any]) -> None:
        super().__init__(blocks, depth, softmax, {})
        self._arch_alpha = _LabelAlphas(alphas)

    def forward(self, x: Any) -> Any:
        weights = {label: self._softmax(alpha) for label, alpha in self._arch_alpha.items()}
        depth_weights = dict(traverse_all_options(self.depth_choice, weights=weights))
        outputs, probs, depths = ([x], [depth_weights[0]], [0]) if 0 in depth_weights else ([], [], [])
        for depth, block in enumerate(self.blocks, start=1):
            x = block(x)
            if depth in depth_weights:
                outputs.append(x)
                probs.append(depth_weights[depth])
                depths.append(depth)
        return self._reduction(outputs, probs, depths)


class MixedLayerChoice(DifferentiableMixedLayer):
    """NNI's differentiable ``LayerChoice`` that runs only the candidates of non-zero probability.

    NNI 3.0's ``DifferentiableMixedLayer.forward`` runs every candidate. When the supernet scores one
    architecture (probabilities one-hot: the export's candidates in :class:`~nni_udc.strategies.udc.UDC`),
    the others are multiplied by exactly 0: leaving them out changes neither the output nor any gradient.
    """

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        live = _live(list(zip(self.names, self._softmax(self._arch_alpha))))
        return weighted_sum([self[name](*args, **kwargs) for name, _ in live], [p for _, p in live])


#: Mutation hooks for every nni-udc module, for the 1-D NNI mutables a 1-D space needs that NNI 3.0 does not mix,
#: for ``Repeat`` (depth 0 included) and ``LayerChoice`` (zero-probability candidates skipped); pass to any NNI
#: differentiable strategy.
MIXED_OPERATION_HOOKS = [
    MixedQuantConv1d.mutate, MixedQuantConv2d.mutate, MixedQuantLinear.mutate,
    MixedSparseConv1d.mutate, MixedSparseConv2d.mutate, MixedSparseLinear.mutate,
    MixedLowRankConv1d.mutate, MixedLowRankConv2d.mutate, MixedLowRankLinear.mutate,
    MixedBatchNorm1d.mutate, MixedRepeat.mutate, MixedLayerChoice.mutate,
]
