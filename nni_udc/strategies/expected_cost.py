"""Expected cost of a supernet from live architecture probabilities, differentiably.

NNI 3.0's ``ExpectationProfilerPenalty`` receives probabilities as Python floats, so its penalty carries no
gradient to the architecture parameters, and its ``expression_expectation`` enumerates the joint grid of
every product term, which is exponential in the number of labels (research/nni_api.md B.3, B.4).

:class:`ExpectedCost` compiles the same symbolic cost expression that :class:`~nni_udc.evaluators.CostProfiler`
builds from the per-layer formulas into a small tree of tensor operations, once:

- a sub-expression over at most ``max_joint_labels`` labels (default 3: one layer's width, bits and
  sparsity) is tabulated over its labels' joint grid, and
  its expectation is the exact probability-weighted sum of the table;
- ``switch_case`` on one label (``LayerChoice``) is ``Σ_k p_k · E[branch_k]``;
- any other operator is applied to the expectations of its arguments, which treats different labels as
  independent (exact for sums, and for products of independent terms).

With one-hot probabilities every step is exact, so the expected cost equals the exact cost of the frozen
architecture; this invariant is tested for every module type.

Example:
    >>> import torch
    >>> from nni.mutable import Categorical
    >>> b, s = Categorical([2, 8], label='b'), Categorical([0.0, 0.5], label='s')
    >>> cost = ExpectedCost(b * 100 * (1 - s) + 10)
    >>> probs = {'b': torch.tensor([0.5, 0.5]), 's': torch.tensor([1.0, 0.0])}
    >>> float(cost(probs))
    510.0
"""
from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Mapping
from typing import Any

import torch
from nni.mutable import Categorical
from nni.mutable.symbol import SymbolicExpression

__all__ = ["ExpectedCost", "compile_expression"]

Probs = Mapping[str, torch.Tensor]
_Node = Callable[[Probs], Any]


def _labels(expr: SymbolicExpression) -> dict[str, Categorical]:
    out: dict[str, Categorical] = {}
    for symbol in expr.leaf_symbols():
        if not isinstance(symbol, Categorical):
            raise TypeError(f"expected costs need categorical choices, but {symbol!r} is {type(symbol).__name__}")
        out[symbol.label] = symbol
    return out


def compile_expression(expr: Any) -> Callable[[Mapping[str, Any]], Any]:
    """A fast evaluator of an NNI expression under samples: ``expr`` flattened once into a list of steps, each computed
    once per sample even where the expression shares sub-expressions (interpolation tables do), so a grid is evaluated
    far faster than with ``freeze``."""
    order: list[Any] = []
    slot: dict[int, int] = {}

    def visit(node: Any) -> None:
        if id(node) in slot:
            return
        if isinstance(node, SymbolicExpression) and not isinstance(node, Categorical):
            for a in node.arguments:
                visit(a)
        slot[id(node)] = len(order)
        order.append(node)

    visit(expr)
    steps: list[tuple[Any, Any]] = []
    for node in order:
        if isinstance(node, Categorical):
            steps.append((None, node.label))
        elif isinstance(node, SymbolicExpression):
            steps.append((node.function, [slot[id(a)] for a in node.arguments]))
        else:
            steps.append((False, node))

    def evaluate(sample: Mapping[str, Any]) -> Any:
        values: list[Any] = []
        for fn, data in steps:
            if fn is None:
                values.append(sample[data])
            elif fn is False:
                values.append(data)
            else:
                values.append(fn(*(values[i] for i in data)))
        return values[-1]

    return evaluate


def _table(expr: SymbolicExpression, labels: dict[str, Categorical]) -> _Node:
    """Exact expectation of ``expr`` over the joint grid of its few labels."""
    names = list(labels)
    grid = list(itertools.product(*(labels[n].values for n in names)))
    evaluate = compile_expression(expr)
    values = torch.tensor([float(evaluate(dict(zip(names, combo)))) for combo in grid], dtype=torch.float64)
    shape = [len(labels[n].values) for n in names]
    values = values.reshape(shape)

    placed: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}  # the table on each device it was asked on

    def node(probs: Probs) -> torch.Tensor:
        first = probs[names[0]]
        key = (first.device, first.dtype)
        if key not in placed:  # probabilities on a GPU contract with a copy of the table there
            placed[key] = values.to(device=first.device, dtype=first.dtype)
        out = placed[key]
        for p in reversed([probs[n] for n in names]):  # contract the last axis first
            out = out @ p
        return out

    return node


def _is_switch_case(expr: SymbolicExpression) -> bool:
    return getattr(expr.function, "__name__", "") == "_switch_fn" and isinstance(expr.arguments[0], Categorical)


class ExpectedCost:
    """A cost expression compiled for fast, differentiable expectations under ``{label: probabilities}``.

    Args:
        expression: an NNI expression over categorical choices (e.g. ``CostProfiler(...).expression``)
            or a number.
        max_joint_labels: sub-expressions over at most this many labels are computed exactly.

    Call it with ``{label: probability vector in the order of the choice's values}``.
    """

    def __init__(self, expression: Any, *, max_joint_labels: int = 3) -> None:
        self.max_joint_labels = max_joint_labels
        self.labels: dict[str, Categorical] = _labels(expression) if isinstance(expression, SymbolicExpression) else {}
        self._root = self._compile(expression)

    def _compile(self, expr: Any) -> _Node:
        if not isinstance(expr, SymbolicExpression):
            return lambda probs, value=expr: value  # type: ignore[misc]
        labels = _labels(expr)
        if len(labels) <= self.max_joint_labels:
            return _table(expr, labels)
        if _is_switch_case(expr):
            branch: Categorical = expr.arguments[0]
            keys, values = expr.arguments[1::2], [self._compile(v) for v in expr.arguments[2::2]]
            index = [branch.values.index(k) for k in keys]

            def switch(probs: Probs) -> Any:
                p = probs[branch.label]
                return sum(p[i] * v(probs) for i, v in zip(index, values))

            return switch
        args = [self._compile(a) for a in expr.arguments]
        fn = _TENSOR_FUNCTIONS.get(expr.function, expr.function)
        return lambda probs: fn(*(a(probs) for a in args))

    def __call__(self, probs: Probs) -> torch.Tensor:
        missing = [label for label in self.labels if label not in probs]
        if missing:
            raise KeyError(f"no probabilities for labels {missing}; given: {sorted(probs)}")
        return torch.as_tensor(self._root(probs))

    @staticmethod
    def one_hot(sample: Mapping[str, Any], labels: Mapping[str, Categorical]) -> dict[str, torch.Tensor]:
        """One-hot probabilities that select ``sample`` (for checks and for frozen architectures)."""
        return {label: torch.nn.functional.one_hot(torch.tensor(choice.values.index(sample[label])),
                                                   len(choice.values)).double()
                for label, choice in labels.items()}


def _tensor_min(*args: Any) -> Any:
    out = args[0]
    for a in args[1:]:
        out = torch.minimum(torch.as_tensor(out), torch.as_tensor(a))
    return out


def _tensor_max(*args: Any) -> Any:
    out = args[0]
    for a in args[1:]:
        out = torch.maximum(torch.as_tensor(out), torch.as_tensor(a))
    return out


def _expected_floordiv(a: Any, b: Any) -> Any:
    """``a // b`` where ``a`` may be an expectation (a tensor): true division. A convolution's ``in_channels //
    groups`` divides exactly for every architecture (PyTorch requires it), and division by a constant is linear, so
    ``E[a] / b`` *is* the expectation, where ``floor(E[a] / b)`` would be wrong and have no gradient."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return a / b
    return a // b


_TENSOR_FUNCTIONS: dict[Callable, Callable] = {min: _tensor_min, max: _tensor_max, operator.floordiv: _expected_floordiv}
