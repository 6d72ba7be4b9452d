"""A tiny DARTS-style cell space whose edges choose between dense, DASS sparse and parameter-free ops.

The space the :class:`~nni_udc.strategies.DASS` preset is about: every edge of every cell is an NNI
``LayerChoice`` over a dense 3×3 conv, DASS sparse 3×3 convs (learnable scores, top-k masked) at a few
sparsity levels, a skip connection and a 3×3 average pool. Under the sparsity-aware cost
(``memory_bits``), the sparse ops store a fraction of the dense op's weights (bitmap-sparse encoding)
and the parameter-free ops store none.

The cells are built from plain ``LayerChoice`` s rather than NNI's :class:`~nni.nas.nn.pytorch.Cell`:
under a differentiable strategy NNI replaces a ``Cell`` by its own ``DifferentiableMixedCell``, whose edge
parameters carry labels (``cell/2_0``) that are not the labels of the space, so neither the cost
profiler nor the UDC penalty can see the cell's choices.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from nni.nas.nn.pytorch import LayerChoice, ModelSpace
from torch import nn

from nni_udc.nn import MutableQuantLinear, MutableSparseConv2d

__all__ = ["SparseCellSpace", "SparseCell"]


def _conv_bn(conv: nn.Module, channels: int) -> nn.Sequential:
    """DARTS' ReLU → conv → BN (BN without affine parameters, as in the DARTS search network)."""
    return nn.Sequential(nn.ReLU(), conv, nn.BatchNorm2d(channels, affine=False))


def _edge(label: str, channels: int, sparsities: Sequence[float], pool: bool) -> LayerChoice:
    """One edge: a ``LayerChoice`` over dense, DASS sparse and parameter-free candidates."""
    candidates: dict[str, nn.Module] = {"conv": _conv_bn(nn.Conv2d(channels, channels, 3, padding=1), channels)}
    for s in sparsities:
        candidates[f"sparse{round(100 * s)}"] = _conv_bn(
            MutableSparseConv2d(channels, channels, 3, padding=1, sparsity=float(s)), channels)
    candidates["skip"] = nn.Identity()
    if pool:
        candidates["avgpool"] = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    return LayerChoice(candidates, label=label)


class SparseCell(nn.Module):
    """A DARTS-like cell: node ``j`` sums one chosen op on each of the two states before it.

    States start as the cell's two inputs (outputs of the two previous cells); node ``j`` computes
    ``op_{j,0}(states[-2]) + op_{j,1}(states[-1])`` and is appended to the states. The cell's output is the
    sum of its nodes (DARTS concatenates them; summing keeps the width at ``channels``).

    Args:
        index: the cell's position, used in its labels (``cell{index}_node{j}_in{k}``).
        channels: width of every state.
        num_nodes: intermediate nodes.
        sparsities: one DASS sparse candidate per sparsity level.
        pool: whether a 3×3 average pool is a candidate.
    """

    def __init__(self, index: int, channels: int, num_nodes: int, sparsities: Sequence[float], pool: bool) -> None:
        super().__init__()
        self.nodes = nn.ModuleList(
            nn.ModuleList(_edge(f"cell{index}_node{j}_in{k}", channels, sparsities, pool) for k in range(2))
            for j in range(num_nodes))

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states = [s0, s1]
        for first, second in self.nodes:  # type: ignore[misc]
            states.append(first(states[-2]) + second(states[-1]))  # type: ignore[has-type]
        out = states[2]
        for state in states[3:]:
            out = out + state
        return out


class SparseCellSpace(ModelSpace, label_prefix=None):  # type: ignore[call-arg]
    """DARTS-style cells with DASS sparse ops for ``(1, 8, 8)`` inputs.

    Float stem (conv 3×3, BN, ReLU) to ``channels`` → ``num_cells`` cells → global average pool →
    classifier. Each cell takes the outputs of the two previous cells (the stem counts for the first).
    Every edge is a ``LayerChoice`` labelled ``cell{i}_node{j}_in{k}`` with candidates ``conv`` (dense),
    ``sparse50``/``sparse90`` (DASS :class:`~nni_udc.nn.MutableSparseConv2d`, one per entry of
    ``sparsities``), ``skip`` and ``avgpool``.

    Args:
        channels: width of the stem and of every cell.
        num_cells: number of cells.
        num_nodes: intermediate nodes per cell (two edges each).
        sparsities: sparsity ratios of the DASS sparse candidates.
        pool: whether a 3×3 average pool is a candidate of every edge.
        head_bits: weight bits of the classifier (fixed; 32 = float).
        num_classes: classifier outputs.

    Example:
        >>> space = SparseCellSpace()
        >>> len(space.simplify()), sorted(space.simplify())[0]
        (8, 'cell0_node0_in0')
        >>> space.simplify()['cell0_node0_in0'].values
        ['conv', 'sparse50', 'sparse90', 'skip', 'avgpool']
        >>> model = space.random()
        >>> model(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(self, channels: int = 8, num_cells: int = 2, num_nodes: int = 2,
                 sparsities: Sequence[float] = (0.5, 0.9), pool: bool = True, head_bits: int = 8,
                 num_classes: int = 10) -> None:
        super().__init__()
        if num_cells < 1 or num_nodes < 1:
            raise ValueError(f"num_cells and num_nodes must be at least 1, but got {num_cells} and {num_nodes}")
        self.stem = nn.Sequential(nn.Conv2d(1, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU())
        self.cells = nn.ModuleList(SparseCell(i, channels, num_nodes, sparsities, pool) for i in range(num_cells))
        self.head = MutableQuantLinear(channels, num_classes, weight_bits=head_bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return self.head(torch.relu(s1).mean((2, 3)))
