"""The uniform-compression baseline: every compressible layer of a space at the same compression.

"Is the search worth it?" The yardstick is *uniform* compression: the same bit-width, sparsity (and rank,
for low-rank layers) on every compressible layer, each model trained with the budget of one search.
:func:`uniform_grid` lists those models for any ``ModelSpace``, as samples (label → value, every label of
``space.simplify()`` set); :func:`nni_udc.experiment.run_baseline` trains them.

The rule. Every label of the space falls into one *kind*; all labels of a kind take one value together:

- **compression kinds**: labels that feed the same argument of nni-udc's compressible modules
  (``weight_bits`` per layer, per-channel ``weight_bits`` — the ``{label}_g{i}`` groups of
  :func:`~nni_udc.nn.channel_bits_choice` —, ``sparsity``, ``rank``, ``act_bits``; read from each module's
  ``trace_kwargs``) *and* have the same candidate list. Every candidate is used, except 0 per-channel bits
  (a removed channel is not compression of every layer). Per-channel bits count as ``weight_bits``: a layer
  whose channels choose among ``{0, 2, 4, 8}`` takes the bits of the layers that choose among ``{2, 4, 8}``
  (role ``channel_bits+weight_bits``), with every channel kept.
- **structural numeric kinds** (widths, depths, any other numeric label), one per candidate list: only the
  smallest and the largest candidate.
- **op kinds** (the labels of ``LayerChoice`` s), one per candidate list: the candidates that hold weights
  (a module with parameters: dense, low-rank or sparse ops); parameter-free candidates (skip, pooling) are
  not used. Any other non-numeric label varies over all of its candidates.

For each combination of op values, a kind varies only when every one of its labels can matter under those
ops; a kind with a label inside a candidate the ops did not choose holds its first value (first non-zero
for per-channel bits), as do labels other than categorical or numerical choices (their default). Samples
that freeze to the same architecture (the same values on every label that can matter) are kept once.

``DigitsSpace`` (defaults): kinds bits ``{b_stem, b_block, b_down}`` {2, 4, 8} (the block's ``b_block`` quantises
all three of its candidate ops; with ``down_groups=4`` the groups ``down_g0..down_g3`` {0, 2, 4, 8} take the place
of ``b_down``, every channel kept), sparsity ``{s_block, s_down}`` {0, 0.5, 0.75} (``s_block``: conv candidate only),
DASS sparsity ``{s_dass}`` {0.5, 0.75}, rank {2, 4, 8}, head bits ``{head_g0, head_g1}`` {4, 8}, width {8, 24}
(of 8, 16, 24) and op {conv, lowrank, sparse}:

- op conv: bits 3 × sparsity 3 = 9 (rank and DASS sparsity sit in other candidates: held);
- op lowrank: bits 3 × rank 3 = 9 (the sparsity kind has ``s_block`` in the conv candidate: held at 0, so
  ``s_down`` is 0 too);
- op sparse: bits 3 × DASS sparsity 2 = 6;

(9 + 9 + 6) × head bits 2 × width 2 = **96 models**. ``SparseCellSpace``: the eight edges share one
candidate list (conv, sparse50, sparse90, skip, avgpool), so all edges take the same op among conv,
sparse50 and sparse90: **3 models**.

Example:
    >>> from nni_udc.spaces import DigitsSpace, SparseCellSpace
    >>> len(uniform_grid(DigitsSpace()))
    96
    >>> [s["cell0_node0_in0"] for s in uniform_grid(SparseCellSpace())]
    ['conv', 'sparse50', 'sparse90']
"""
from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from nni.mutable import Categorical, Mutable, MutableList, Numerical
from nni.nas.nn.pytorch import LayerChoice, ModelSpace

from nni_udc.nn import COMPRESSIBLE_MUTABLES
from nni_udc.strategies.architecture import used_labels

__all__ = ["UniformKind", "uniform_grid", "uniform_kinds"]

#: nni-udc's compressible modules and the arguments of theirs that are compression choices
COMPRESSIBLE = COMPRESSIBLE_MUTABLES
ARGUMENTS = ("weight_bits", "act_bits", "sparsity", "rank")


@dataclass(frozen=True)
class UniformKind:
    """Labels that take one value together, and the values the grid gives them (the first one when held).

    ``role`` is the argument they feed (``weight_bits``, ``channel_bits``, ``sparsity``, ``rank``,
    ``act_bits``, joined by ``+`` when a label feeds several), ``structural``, ``op`` (a ``LayerChoice``),
    ``choice`` (another non-numeric label) or ``fixed`` (held at its default).
    """

    role: str
    labels: tuple[str, ...]
    values: tuple[Any, ...]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _labels(value: Any) -> list[str]:
    return list(value.simplify()) if isinstance(value, Mutable) else []


def _roles(space: ModelSpace) -> dict[str, set[str]]:
    """label → the compression arguments it feeds (``channel_bits`` for per-channel weight bits)."""
    roles: dict[str, set[str]] = {}
    for module in space.modules():
        if not isinstance(module, COMPRESSIBLE):
            continue
        for arg in ARGUMENTS:
            value = getattr(module, "trace_kwargs", {}).get(arg)  # the arguments NNI traced for the module
            role = "channel_bits" if arg == "weight_bits" and isinstance(value, MutableList) else arg
            for label in _labels(value):
                roles.setdefault(label, set()).add(role)
    return roles


def _weighted(choice: LayerChoice) -> list[Any]:
    """The candidates of a ``LayerChoice`` that hold weights."""
    return [name for name in choice.names if next(choice[name].parameters(), None) is not None]


def uniform_kinds(space: ModelSpace) -> list[UniformKind]:
    """The kinds of ``space``'s labels, in the order of their first label in ``space.simplify()``.

    Example:
        >>> from torch import nn
        >>> from nni_udc.nn import MutableLowRankConv2d, MutableQuantConv2d, bits_choice, rank_choice
        >>> class Net(ModelSpace, label_prefix=None):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.first = MutableQuantConv2d(4, 4, 3, weight_bits=bits_choice("bits_1", [2, 4, 8]))
        ...         self.second = LayerChoice({
        ...             "conv": MutableQuantConv2d(4, 4, 3, weight_bits=bits_choice("bits_2", [2, 4, 8])),
        ...             "lowrank": MutableLowRankConv2d(4, 4, 3, rank=rank_choice("rank", [1, 2], max_rank=4)),
        ...             "skip": nn.Identity()}, label="op")
        >>> [(k.role, k.labels, k.values) for k in uniform_kinds(Net())]
        [('weight_bits', ('bits_1', 'bits_2'), (2, 4, 8)), ('op', ('op',), ('conv', 'lowrank')), ('rank', ('rank',), (1, 2))]
        >>> [(s["op"], s["bits_1"], s["bits_2"], s["rank"]) for s in uniform_grid(Net())]  # lowrank: bits_2 is held
        [('conv', 2, 2, 1), ('conv', 4, 4, 1), ('conv', 8, 8, 1), ('lowrank', 2, 2, 1), ('lowrank', 2, 2, 2)]
    """
    roles = _roles(space)
    choices = {m.label: m for m in space.modules() if isinstance(m, LayerChoice)}
    kinds: dict[tuple[str, tuple[Any, ...]], list[str]] = {}
    values: dict[tuple[str, tuple[Any, ...]], tuple[Any, ...]] = {}
    joined: dict[tuple[str, tuple[Any, ...]], set[str]] = {}
    for label, mutable in space.simplify().items():
        if isinstance(mutable, Categorical):
            candidates = tuple(mutable.values)
            if label in choices:
                role = "op"
                grid = tuple(_weighted(choices[label])) or candidates[:1]
            elif label in roles:
                role = "+".join(sorted(roles[label]))
                grid = tuple(v for v in candidates if v != 0) if role == "channel_bits" else candidates
            elif all(_is_number(v) for v in candidates):
                role, grid = "structural", tuple(dict.fromkeys((min(candidates), max(candidates))))
            else:
                role, grid = "choice", candidates
        elif isinstance(mutable, Numerical):
            role, candidates = "structural", (mutable.low, mutable.high)
            grid = tuple(dict.fromkeys(candidates))
        else:  # e.g. an InputChoice of several inputs: not a compression, held where it is
            role, candidates, grid = "fixed", (label,), (mutable.default(),)
        key = (role, candidates)
        if role == "channel_bits":  # per-channel bits join the layers' bits with the same non-zero candidates
            key = ("weight_bits", grid)
        kinds.setdefault(key, []).append(label)
        values[key] = grid
        joined.setdefault(key, set()).add(role)
    return [UniformKind("+".join(sorted(joined[key])), tuple(labels), values[key]) for key, labels in kinds.items()]


def _combinations(kinds: Sequence[UniformKind]) -> Iterator[dict[str, Any]]:
    for values in itertools.product(*(k.values for k in kinds)):
        yield {label: value for kind, value in zip(kinds, values) for label in kind.labels}


def uniform_grid(space: ModelSpace) -> list[dict[str, Any]]:
    """The uniform-compression models of ``space`` as samples for ``space.freeze`` (see the module's rule).

    Example:
        >>> from nni_udc.spaces import SparseCellSpace
        >>> uniform_grid(SparseCellSpace(num_cells=1, num_nodes=1))  # doctest: +NORMALIZE_WHITESPACE
        [{'cell0_node0_in0': 'conv', 'cell0_node0_in1': 'conv'},
         {'cell0_node0_in0': 'sparse50', 'cell0_node0_in1': 'sparse50'},
         {'cell0_node0_in0': 'sparse90', 'cell0_node0_in1': 'sparse90'}]
    """
    kinds = uniform_kinds(space)
    ops = [k for k in kinds if k.role == "op"]
    rest = [k for k in kinds if k.role != "op"]
    used = used_labels(space)
    first = {label: kind.values[0] for kind in rest for label in kind.labels}
    labels = list(space.simplify())
    grid: list[dict[str, Any]] = []
    seen: set[tuple] = set()
    for chosen in _combinations(ops):
        active = used({**first, **chosen})
        varying = [k for k in rest if all(label in active for label in k.labels)]
        for values in _combinations(varying):
            merged = {**first, **chosen, **values}
            sample = {label: merged[label] for label in labels}
            live = used(sample)
            key = tuple((label, repr(value)) for label, value in sample.items() if label in live)
            if key not in seen:
                seen.add(key)
                grid.append(sample)
    return grid
