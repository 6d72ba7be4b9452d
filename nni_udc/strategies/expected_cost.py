"""Expected cost of a supernet from live architecture probabilities, differentiably.

NNI 3.0's ``ExpectationProfilerPenalty`` receives probabilities as Python floats, so its penalty carries no
gradient to the architecture parameters, and its ``expression_expectation`` enumerates the joint grid of
every product term, which is exponential in the number of labels (research/nni_api.md B.3, B.4).

:class:`ExpectedCost` compiles the same symbolic cost expression that :class:`~nni_udc.evaluators.CostProfiler`
builds from the per-layer formulas, once, into tables that are contracted with the probabilities at each call:

- sums, differences and products by a constant are kept linear (expectation is linear, so this is exact);
- a sub-expression whose labels' joint grid has at most ``max_table_size`` points (default 4096: a layer's
  width, bits and sparsity, or a few groups of its channels) is tabulated over that grid: its expectation is
  the exact probability-weighted sum of the table, also where labels are shared between layers (each table
  holds one axis per label, and the sum over layers is exact by linearity);
- a product of two such parts is expanded into products of their tables (one axis per label: exact, also
  for a label on both sides) while each product's grid stays within ``max_table_size``;
- every table of a sum is contracted at once: tables over a subset of another's labels are added into it,
  the rest stacked by number of labels and contracted with one ``einsum`` each, with all the labels'
  probabilities gathered from one vector. The 20-layer benchmark (``benchmarks/expected_cost_speed.py``)
  contracts 2 stacks instead of ~90 tables one by one;
- ``switch_case`` on one label (``LayerChoice``) over more labels than that is ``Σ_k p_k · E[branch_k]``;
  any other operator over too many labels (``min`` of a pruned layer with bits per channel, a rounding
  ``//``) is applied to the expectations of its arguments, which treats its arguments as independent.

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
import math
import operator
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from nni.mutable import Categorical
from nni.mutable.symbol import SymbolicExpression

__all__ = ["ExpectedCost", "compile_expression"]

Probs = Mapping[str, torch.Tensor]
_Node = Callable[[Probs], Any]
_MAX_PRODUCTS = 1024  # a product of two forms is expanded into at most this many tables


def _labels(expr: SymbolicExpression) -> dict[str, Categorical]:
    out: dict[str, Categorical] = {}
    for symbol in expr.leaf_symbols():
        if not isinstance(symbol, Categorical):
            raise TypeError(f"expected costs need categorical choices, but {symbol!r} is {type(symbol).__name__}")
        out[symbol.label] = symbol
    return out


def _steps(expr: Any) -> list[tuple[Any, Any]]:
    """``expr`` flattened into steps, each computed once even where the expression shares sub-expressions
    (interpolation tables do): ``(None, label)`` reads a label, ``(False, value)`` is a constant, ``(fn, [slots])``
    applies ``fn`` to earlier steps."""
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
    return steps


def _run(steps: list[tuple[Any, Any]], sample: Mapping[str, Any], on_arrays: bool = False) -> Any:
    """The value of ``steps`` at ``sample``; ``on_arrays``: the labels are numpy arrays (see :func:`_on_arrays`)."""
    values: list[Any] = []
    for fn, data in steps:
        if fn is None:
            values.append(sample[data])
        elif fn is False:
            values.append(data)
        else:
            if on_arrays:
                fn = _array_switch if getattr(fn, "__name__", "") == "_switch_fn" else _ARRAY_FUNCTIONS.get(fn, fn)
            values.append(fn(*(values[i] for i in data)))
    return values[-1]


def compile_expression(expr: Any) -> Callable[[Mapping[str, Any]], Any]:
    """A fast evaluator of an NNI expression under samples: ``expr`` flattened once into a list of steps, each computed
    once per sample even where the expression shares sub-expressions (interpolation tables do), so a grid is evaluated
    far faster than with ``freeze``."""
    steps = _steps(expr)
    return lambda sample: _run(steps, sample)


def _grid_size(labels: Mapping[str, Categorical]) -> int:
    return math.prod(len(c.values) for c in labels.values())


def _tabulate(expr: SymbolicExpression, labels: Mapping[str, Categorical]) -> tuple[tuple[str, ...], np.ndarray]:
    """``expr`` evaluated at every point of its labels' joint grid: ``(labels, table)``, one axis per label.

    The grid is evaluated at once on numpy arrays (each label an array along its own axis) where every operation of
    the expression works elementwise; that is checked against point-by-point evaluation at a few grid points, and a
    sub-expression that does not work so is evaluated point by point.
    """
    names = tuple(labels)
    shape = [len(labels[n].values) for n in names]
    steps = _steps(expr)
    grid = list(itertools.product(*(labels[n].values for n in names)))
    table = _on_arrays(steps, names, labels, shape)
    if table is not None:
        rng = np.random.default_rng(len(grid))
        for i in {0, len(grid) - 1, *rng.integers(0, len(grid), size=min(len(grid), 16)).tolist()}:
            exact = float(_run(steps, dict(zip(names, grid[i]))))
            if not math.isclose(float(table.flat[i]), exact, rel_tol=1e-12, abs_tol=1e-9):
                table = None
                break
    if table is None:
        table = np.asarray([float(_run(steps, dict(zip(names, combo)))) for combo in grid], dtype=np.float64)
    return names, table.reshape(shape)


def _array_values(choice: Categorical, axis: int, ndim: int) -> np.ndarray:
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in choice.values)
    values = np.asarray(choice.values, dtype=np.float64 if numeric else object)
    return values.reshape([-1 if a == axis else 1 for a in range(ndim)])


def _on_arrays(steps: list[tuple[Any, Any]], names: tuple[str, ...], labels: Mapping[str, Categorical],
               shape: list[int]) -> np.ndarray | None:
    """The whole grid of ``steps`` at once, as float64 of ``shape``; ``None`` where an operation refuses arrays."""
    sample = {name: _array_values(labels[name], axis, len(names)) for axis, name in enumerate(names)}
    try:
        with np.errstate(all="ignore"):
            out = np.broadcast_to(np.asarray(_run(steps, sample, on_arrays=True), dtype=np.float64), shape)
    except Exception:  # an operation that needs one number (an if, int(), a library call): point by point
        return None
    return np.array(out, dtype=np.float64).reshape(-1) if np.isfinite(out).all() else None


def _array_switch(branch: Any, *cases: Any) -> Any:
    """NNI's ``switch_case`` on arrays: the value of the case whose key equals the branch, elementwise."""
    keys, values = cases[::2], cases[1::2]
    return np.select([np.asarray(branch == key, dtype=bool) for key in keys], list(np.broadcast_arrays(*values)),
                     default=np.nan)


def _array_extreme(reduce: Any) -> Callable[..., Any]:
    def extreme(*args: Any) -> Any:
        items = list(args[0]) if len(args) == 1 else list(args)
        out = items[0]
        for item in items[1:]:
            out = reduce(out, item)
        return out

    return extreme


def _array_round(x: Any) -> Any:
    return np.round(x) if isinstance(x, np.ndarray) else round(x)  # both round half to even


def _embed(table: np.ndarray, labels: tuple[str, ...], into: tuple[str, ...], shape: tuple[int, ...]) -> np.ndarray:
    """``table`` over ``labels`` broadcast to the axes ``into`` (a superset of ``labels``) of ``shape``."""
    ordered = table.transpose([labels.index(name) for name in into if name in labels])
    return np.broadcast_to(ordered.reshape([n if name in labels else 1 for name, n in zip(into, shape)]), shape)


class _Form:
    """An expectation kept linear as long as possible: ``constant + Σ tables·probabilities + Σ other nodes``.

    The sum of two forms is a form (expectation is linear), and a form times a constant is one; the tables
    are contracted together at call time (:class:`_Tables`), so a sum over many layers costs a few tensor
    operations, not a few per layer.
    """

    def __init__(self, constant: Any = 0.0, tables: list[tuple[tuple[str, ...], np.ndarray]] | None = None,
                 others: list[tuple[float, _Node]] | None = None) -> None:
        self.constant = constant
        self.tables = tables or []
        self.others = others or []  # (factor, node)

    def __add__(self, other: _Form) -> _Form:
        return _Form(self.constant + other.constant, self.tables + other.tables, self.others + other.others)

    def scaled(self, factor: float) -> _Form:
        return _Form(self.constant * factor, [(n, t * factor) for n, t in self.tables],
                     [(f * factor, node) for f, node in self.others])

    def node(self, flat: _Flat) -> _Node:
        """The form as one node: its tables merged and contracted in batches, plus its other nodes."""
        if not self.tables and not self.others:
            return lambda probs, value=self.constant: value  # type: ignore[misc]
        tables = _Tables(self.tables, flat) if self.tables else None
        constant, others = self.constant, self.others

        def evaluate(probs: Probs) -> Any:
            out: Any = constant
            if tables is not None:
                out = out + tables(probs)
            for factor, node in others:
                out = out + (node(probs) if factor == 1 else factor * node(probs))
            return out

        return evaluate


class _Flat:
    """Every label's probabilities in one vector, and where each label sits in it; the last entry is a 0 that padded
    table axes read. :class:`ExpectedCost` builds the vector once per call (:meth:`load`), and every table reads it."""

    def __init__(self, labels: Mapping[str, Categorical]) -> None:
        self.names = list(labels)
        self.offset: dict[str, int] = {}
        at = 0
        for name in self.names:
            self.offset[name] = at
            at += len(labels[name].values)
        self.zero = at
        self.current: torch.Tensor | None = None

    def load(self, probs: Probs) -> None:
        first = probs[self.names[0]]
        self.current = torch.cat([*(probs[n] for n in self.names), first.new_zeros(1)])


class _Tables:
    """``Σ_t Σ_grid table_t · Π p_label`` for many tables at once.

    A table whose labels are a subset of another table's labels is added into that one (broadcast), then tables of
    the same number of labels are stacked (axes padded to the longest with zeros) and contracted in one ``einsum``:
    a few operations per call for a whole network, instead of several per layer.
    """

    def __init__(self, tables: list[tuple[tuple[str, ...], np.ndarray]], flat: _Flat) -> None:
        merged: list[tuple[tuple[str, ...], np.ndarray]] = []
        for names, table in sorted(tables, key=lambda t: -len(t[0])):
            host = next((i for i, (big, _) in enumerate(merged) if set(names) <= set(big)), None)
            if host is None:
                merged.append((names, np.array(table, dtype=np.float64)))
            else:
                big, values = merged[host]
                merged[host] = (big, values + _embed(table, names, big, values.shape))
        self.flat = flat
        self.groups: list[tuple[np.ndarray, list[np.ndarray], str]] = []
        by_arity: dict[int, list[tuple[tuple[str, ...], np.ndarray]]] = {}
        for names, table in merged:
            by_arity.setdefault(len(names), []).append((names, table))
        letters = "abcdefghijklmnopqrstuvwxyz"
        for arity, members in sorted(by_arity.items()):
            if arity == 0:  # a table over no label is a number
                self.groups.append((np.array([sum(float(t) for _, t in members)]), [], ""))
                continue
            if arity > len(letters):
                raise ValueError(f"a table over {arity} labels has too many axes to contract (at most {len(letters)})")
            sizes = [max(t.shape[a] for _, t in members) for a in range(arity)]
            stacked = np.zeros([len(members), *sizes])
            index = [np.full((len(members), n), flat.zero, dtype=np.int64) for n in sizes]
            for g, (names, table) in enumerate(members):
                region: tuple[Any, ...] = (g,) + tuple(slice(0, n) for n in table.shape)
                stacked[region] = table
                for a, name in enumerate(names):
                    index[a][g, :table.shape[a]] = np.arange(table.shape[a]) + flat.offset[name]
            axes = letters[:arity]  # the stacked tables' axis is "Z"
            spec = "Z" + axes + "," + ",".join("Z" + x for x in axes) + "->"
            self.groups.append((stacked, index, spec))
        self._placed: dict[tuple[torch.device, torch.dtype], list[tuple[torch.Tensor, list[torch.Tensor]]]] = {}

    def __call__(self, probs: Probs) -> torch.Tensor:
        flat = self.flat.current
        assert flat is not None, "ExpectedCost loads the probabilities before it contracts the tables"
        key = (flat.device, flat.dtype)
        if key not in self._placed:  # probabilities on a GPU contract with a copy of the tables there
            self._placed[key] = [(torch.as_tensor(t, dtype=flat.dtype, device=flat.device),
                                  [torch.as_tensor(i, device=flat.device) for i in index]) for t, index, _ in self.groups]
        out: Any = 0.0
        for (table, index), (_, _, spec) in zip(self._placed[key], self.groups):
            out = out + (torch.einsum(spec, table, *(flat[i] for i in index)) if index else table.sum())
        return out


def _is_switch_case(expr: SymbolicExpression) -> bool:
    return getattr(expr.function, "__name__", "") == "_switch_fn" and isinstance(expr.arguments[0], Categorical)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class ExpectedCost:
    """A cost expression compiled for fast, differentiable expectations under ``{label: probabilities}``.

    Args:
        expression: an NNI expression over categorical choices (e.g. ``CostProfiler(...).expression``)
            or a number.
        max_table_size: a sub-expression whose labels' joint grid has at most this many points is tabulated
            (its expectation is exact); a layer's cost over its own labels (width, bits, sparsity, a few
            groups of channels) fits.

    Call it with ``{label: probability vector in the order of the choice's values}``.
    """

    def __init__(self, expression: Any, *, max_table_size: int = 4096) -> None:
        self.max_table_size = max_table_size
        self.labels: dict[str, Categorical] = _labels(expression) if isinstance(expression, SymbolicExpression) else {}
        self._flat = _Flat(self.labels) if self.labels else None
        form = self._form(expression)
        self._root = form.node(self._flat) if self._flat is not None else (lambda probs: form.constant)

    def _form(self, expr: Any) -> _Form:
        if not isinstance(expr, SymbolicExpression):
            return _Form(constant=expr)
        fn, args = getattr(expr, "function", None), getattr(expr, "arguments", [])  # a Categorical has neither
        # linear operations first: their parts are tabulated on their own and contracted together (exact)
        if fn is operator.add:
            return self._form(args[0]) + self._form(args[1])
        if fn is operator.sub:
            return self._form(args[0]) + self._form(args[1]).scaled(-1.0)
        if fn is operator.neg:
            return self._form(args[0]).scaled(-1.0)
        if fn is operator.mul and (_is_number(args[0]) or _is_number(args[1])):
            factor, other = (args[0], args[1]) if _is_number(args[0]) else (args[1], args[0])
            return self._form(other).scaled(float(factor))
        labels = _labels(expr)
        if len(labels) == 1 or _grid_size(labels) <= self.max_table_size:
            return _Form(tables=[_tabulate(expr, labels)])
        if fn is operator.mul:  # (Σ a_i)(Σ b_j) = Σ a_i b_j: exact where each product's grid is small
            left, right = self._form(args[0]), self._form(args[1])
            product = self._product(left, right)
            if product is not None:
                return product
            assert self._flat is not None
            nodes = (left.node(self._flat), right.node(self._flat))
            return _Form(others=[(1.0, lambda probs: nodes[0](probs) * nodes[1](probs))])
        return _Form(others=[(1.0, self._node(expr))])

    def _product(self, left: _Form, right: _Form) -> _Form | None:
        """``left · right`` as a form: products of their tables (over the union of their labels; a label on both is
        one axis, so the product is exact also for shared labels), or ``None`` where a product's grid is too large,
        there are too many products, or either has a non-linear part."""
        if left.others or right.others or len(left.tables) * len(right.tables) > _MAX_PRODUCTS:
            return None
        sizes = {name: len(choice.values) for name, choice in self.labels.items()}
        tables = [(n, t * right.constant) for n, t in left.tables] + [(n, t * left.constant) for n, t in right.tables]
        for names_a, a in left.tables:
            for names_b, b in right.tables:
                names = names_a + tuple(n for n in names_b if n not in names_a)
                shape = tuple(sizes[n] for n in names)
                if math.prod(shape) > self.max_table_size:
                    return None
                tables.append((names, _embed(a, names_a, names, shape) * _embed(b, names_b, names, shape)))
        return _Form(left.constant * right.constant, tables)

    def _node(self, expr: SymbolicExpression) -> _Node:
        """A non-linear operation: applied to the expectations of its arguments (different labels taken as
        independent: exact for products of independent terms)."""
        assert self._flat is not None
        if _is_switch_case(expr):
            branch: Categorical = expr.arguments[0]
            keys = expr.arguments[1::2]
            values = [self._form(v).node(self._flat) for v in expr.arguments[2::2]]
            index = [branch.values.index(k) for k in keys]

            def switch(probs: Probs) -> Any:
                p = probs[branch.label]
                return sum(p[i] * v(probs) for i, v in zip(index, values))

            return switch
        args = [self._form(a).node(self._flat) for a in expr.arguments]
        fn = _TENSOR_FUNCTIONS.get(expr.function, expr.function)
        return lambda probs: fn(*(a(probs) for a in args))

    def __call__(self, probs: Probs) -> torch.Tensor:
        missing = [label for label in self.labels if label not in probs]
        if missing:
            raise KeyError(f"no probabilities for labels {missing}; given: {sorted(probs)}")
        if self._flat is None:
            return torch.as_tensor(self._root(probs))
        self._flat.load(probs)
        try:
            return torch.as_tensor(self._root(probs))
        finally:
            self._flat.current = None  # the graph is the caller's, not kept here

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


_ARRAY_FUNCTIONS: dict[Any, Callable] = {min: _array_extreme(np.minimum), max: _array_extreme(np.maximum),
                                         round: _array_round}

_TENSOR_FUNCTIONS: dict[Callable, Callable] = {min: _tensor_min, max: _tensor_max, operator.floordiv: _expected_floordiv}
