"""The four published methods as configured :class:`~nni_udc.strategies.UDC` strategies.

Each preset is the same differentiable search with the cost and defaults of its paper, and a check
that the space actually contains the choice the method is about (a clear error otherwise).

Example:
    >>> strategy = HALOC(weight=0.5)
    >>> strategy.cost_name
    'macs'
"""
from __future__ import annotations

from typing import Any

from nni.mutable import Mutable, MutableList
from nni.nas.nn.pytorch import LayerChoice, ModelSpace

from nni_udc.nn import LOWRANK_MUTABLES, QUANT_MUTABLES, SPARSE_MUTABLES
from nni_udc.strategies.udc import UDC

__all__ = ["DASS", "HALOC", "ChannelMixedPrecision", "UDC"]


def _has_module(space: ModelSpace, types: tuple[type, ...], arg: str | None, *, list_arg: bool = False) -> bool:
    for module in space.modules():
        if not isinstance(module, types):
            continue
        if arg is None:
            return True
        value = module.args.get(arg)  # type: ignore[attr-defined]  # an NNI ParametrizedModule
        if isinstance(value, MutableList) if list_arg else (isinstance(value, Mutable) and not isinstance(value, MutableList)):
            return True
    return False


class HALOC(UDC):
    """HALOC (Xiao et al., AAAI 2023): the rank of each layer's low-rank factorisation is an architecture choice,
    searched differentiably under a hardware cost.

    The paper puts a softmax over candidate ranks of each layer's Tucker-2 factorisation, adds a latency
    term from a per-device predictor, and keeps only ranks where measured latency changes.
    We differ in three ways: the rank candidates of a layer are truncations of **one** shared factorisation
    (``MutableLowRankConv2d``: a k×k conv to ``rank`` channels, then 1×1), not separate branches; the
    factorisation is a matrix SVD, not Tucker-2; and the default cost is MACs (the paper's headline metric)
    — pass ``cost=`` a latency cost from a measured table for the latency-aware search.

    Needs a space with at least one ``MutableLowRankConv2d``/``MutableLowRankLinear`` whose ``rank`` is a choice.
    """

    def __init__(self, *, cost: Any = "macs", **kwargs: Any) -> None:
        super().__init__(cost=cost, **kwargs)

    def check_space(self, space: ModelSpace) -> None:
        if not _has_module(space, LOWRANK_MUTABLES, "rank"):
            raise ValueError(f"HALOC searches ranks, but {type(space).__name__} has no MutableLowRankConv1d/MutableLowRankConv2d/"
                             "MutableLowRankLinear with rank=rank_choice(...)")


class ChannelMixedPrecision(UDC):
    """Channel-wise mixed precision (Risso et al., 2022): a weight bit-width for every output channel, where
    0 bits prunes the channel.

    As in the paper (and PLiNIO's MPS), each layer has architecture parameters of shape
    (bit candidates × channels), one float weight is shared by all precisions, and a removed channel
    lowers the next layer's cost (declare the next layer with ``in_channel_bits=`` the same list).
    We differ in the quantiser (symmetric per-channel min-max with straight-through rounding instead of
    PLiNIO's learned scales) and in the default cost: compressed weight memory (``memory_bits``);
    pass the MPIC energy/latency cost for the paper's energy results.

    Needs a space with at least one quantised layer whose ``weight_bits`` is a ``channel_bits_choice``.
    """

    def __init__(self, *, cost: Any = "memory_bits", **kwargs: Any) -> None:
        super().__init__(cost=cost, **kwargs)

    def check_space(self, space: ModelSpace) -> None:
        if not _has_module(space, QUANT_MUTABLES, "weight_bits", list_arg=True):
            raise ValueError(f"ChannelMixedPrecision searches per-channel bits, but {type(space).__name__} has no "
                             "MutableQuantConv1d/MutableQuantConv2d/MutableQuantLinear with weight_bits=channel_bits_choice(...)")


class DASS(UDC):
    """DASS (Mousavi et al., 2022): parametric sparse convolution and linear ops inside a DARTS search space,
    with a sparsity-aware objective.

    Sparse ops (``MutableSparseConv2d``/``MutableSparseLinear``: a weight plus learnable importance scores,
    top-k masked with a straight-through gradient) compete with dense ops in ``LayerChoice`` s, as in DARTS
    cells. We differ in the objective: instead of the paper's regulariser, the sparsity-aware cost is the
    compressed weight memory of the expected architecture (bitmap-sparse encoding), and a searched
    sparsity level shares one set of scores (nested top-k masks).

    Needs a space with at least one sparse op as a ``LayerChoice`` candidate.
    """

    def __init__(self, *, cost: Any = "memory_bits", **kwargs: Any) -> None:
        super().__init__(cost=cost, **kwargs)

    def check_space(self, space: ModelSpace) -> None:
        for module in space.modules():
            if isinstance(module, LayerChoice) and any(
                    isinstance(m, SPARSE_MUTABLES) for m in module.modules()):
                return
        raise ValueError(f"DASS chooses between sparse and dense ops, but {type(space).__name__} has no LayerChoice "
                         "with a MutableSparseConv1d/MutableSparseConv2d/MutableSparseLinear candidate")
