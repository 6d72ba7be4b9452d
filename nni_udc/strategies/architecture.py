"""The live architecture distribution of a one-shot supernet, and the most probable architectures within a budget.

:class:`ArchitectureDistribution` is built by :meth:`~nni_udc.strategies.UDC.mutate_model` from the
architecture parameters it finds in the supernet and is handed to the cost penalty: whoever needs the
live probabilities holds this object, nobody calls back into the strategy.

:func:`most_probable` lists architectures in decreasing joint probability (labels are independent, so the
joint log-probability is a sum) and keeps those that a cost function accepts: the export of a budgeted
search is the most probable architecture within budget, not an argmax moved around by cost alone.

Example:
    >>> import torch
    >>> from nni.mutable import Categorical
    >>> choices = {'b': Categorical([2, 8], label='b'), 's': Categorical([0.0, 0.5], label='s')}
    >>> alpha = {'b': torch.tensor([0.0, 2.0]), 's': torch.tensor([1.0, 0.0])}
    >>> dist = ArchitectureDistribution(choices, {k: (lambda a=a: a) for k, a in alpha.items()})
    >>> dist.argmax()
    {'b': 8, 's': 0.0}
    >>> cost = lambda sample: sample['b'] * (1 - sample['s'])
    >>> [sample for _, sample in most_probable(dist, cost, budget=4, k=2)]
    [{'b': 8, 's': 0.5}, {'b': 2, 's': 0.0}]
"""
from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from nni.mutable import Categorical
from nni.nas.nn.pytorch import LayerChoice, MutableModule
from torch import nn

__all__ = ["ArchitectureDistribution", "used_labels", "local_search", "most_probable", "ranked_samples"]


class ArchitectureDistribution:
    """Independent categorical distributions, one per label, read from live architecture parameters.

    Args:
        choices: ``{label: Categorical}`` of the space.
        logits: ``{label: () -> tensor}``, each returning that label's live logits (a view into the
            optimised parameter, so gradients flow).
        temperature: ``() -> float``, the current softmax temperature (annealed during the search); the
            probabilities are ``softmax(logits / temperature)``.
    """

    def __init__(self, choices: Mapping[str, Categorical], logits: Mapping[str, Callable[[], torch.Tensor]],
                 temperature: Callable[[], float] = lambda: 1.0) -> None:
        missing = sorted(set(choices) - set(logits))
        if missing:
            raise KeyError(f"no architecture parameters for labels {missing}")
        self.choices = {label: choices[label] for label in logits if label in choices}
        self._logits = dict(logits)
        self._temperature = temperature

    @property
    def temperature(self) -> float:
        return float(self._temperature())

    def logits(self, label: str) -> torch.Tensor:
        """The live logits of ``label`` (with gradient)."""
        return self._logits[label]()

    def probabilities(self) -> dict[str, torch.Tensor]:
        """``{label: softmax(logits / temperature)}`` with gradient, for every label."""
        t = self.temperature
        return {label: torch.softmax(self.logits(label) / t, dim=-1) for label in self._logits}

    def log_probabilities(self) -> dict[str, torch.Tensor]:
        """Detached float64 log-probabilities (for ranking architectures)."""
        t = self.temperature
        return {label: torch.log_softmax(self.logits(label).detach().double() / t, dim=-1) for label in self._logits}

    def argmax(self) -> dict[str, Any]:
        """The most probable value of every label."""
        return {label: self.choices[label].values[int(torch.argmax(self.logits(label)))] for label in self.choices}

    @torch.no_grad()
    def set(self, sample: Mapping[str, Any], *, confidence: float = 1e4) -> None:
        """Set the parameters so that the distribution selects ``sample`` (checks, warm starts, scoring)."""
        for label, value in sample.items():
            logits = self.logits(label)
            logits.fill_(-confidence)
            logits[self.choices[label].values.index(value)] = 0.0

    @torch.no_grad()
    def state(self) -> dict[str, torch.Tensor]:
        """A copy of every label's logits (restore it with :meth:`restore`)."""
        return {label: self.logits(label).detach().clone() for label in self._logits}

    @torch.no_grad()
    def restore(self, state: Mapping[str, torch.Tensor]) -> None:
        for label, value in state.items():
            self.logits(label).copy_(value)


def ranked_samples(log_probs: Mapping[str, torch.Tensor], choices: Mapping[str, Categorical]
                   ) -> Iterator[tuple[float, dict[str, Any]]]:
    """Every joint sample in decreasing joint log-probability, lazily (best-first over the rank lattice).

    Each label's values are sorted by probability; a state is one rank per label. The best state is
    all zeros and every state's successors raise one rank by one, so a heap yields states in order.
    """
    labels = list(log_probs)
    order = {lb: torch.argsort(log_probs[lb], descending=True).tolist() for lb in labels}
    sorted_lp = {lb: [float(log_probs[lb][i]) for i in order[lb]] for lb in labels}

    start = (0,) * len(labels)
    heap = [(-sum(sorted_lp[lb][0] for lb in labels), start)]
    seen = {start}
    while heap:
        neg, state = heapq.heappop(heap)
        yield -neg, {lb: choices[lb].values[order[lb][r]] for lb, r in zip(labels, state)}
        for i, lb in enumerate(labels):
            r = state[i]
            if r + 1 < len(order[lb]):
                nxt = state[:i] + (r + 1,) + state[i + 1:]
                if nxt not in seen:
                    seen.add(nxt)  # one label's rank up: its log-probability drop, not a new sum over all labels
                    heapq.heappush(heap, (neg + sorted_lp[lb][r] - sorted_lp[lb][r + 1], nxt))


def most_probable(distribution: ArchitectureDistribution, cost: Callable[[Mapping[str, Any]], float], *,
                  budget: float, k: int = 1, used: Callable[[Mapping[str, Any]], set[str]] | None = None,
                  fixed: Mapping[str, Any] | None = None, max_visits: int = 20000) -> list[tuple[float, dict[str, Any]]]:
    """Up to ``k`` most probable architectures with ``cost(sample) <= budget``, as ``(log-probability, sample)``.

    ``used`` (see :func:`used_labels`) says which labels a sample's architecture uses: samples that differ
    only in unused labels are one architecture, kept once (the most probable). ``fixed`` holds some labels at given
    values (the most probable architectures *given* them). Stops after ``max_visits`` samples; an empty list means
    nothing within budget was visited.
    """
    log_probs, choices = distribution.log_probabilities(), dict(distribution.choices)
    for label, value in (fixed or {}).items():
        index = choices[label].values.index(value)
        log_probs[label] = log_probs[label][index:index + 1]
        choices[label] = Categorical([value], label=label)
    out: list[tuple[float, dict[str, Any]]] = []
    seen: set[tuple] = set()
    for visits, (log_p, sample) in enumerate(ranked_samples(log_probs, choices)):
        if visits >= max_visits or len(out) >= k:
            break
        live = set(sample) if used is None else used(sample)
        key = tuple((lb, v) for lb, v in sample.items() if lb in live)
        if key in seen:
            continue
        seen.add(key)
        if cost(sample) <= budget:
            out.append((log_p, sample))
    return out


def used_labels(space: nn.Module) -> Callable[[Mapping[str, Any]], set[str]]:
    """A function of a sample: the labels that can matter under its ``LayerChoice`` picks.

    A label matters when a module outside every unchosen candidate holds it (a ``LayerChoice`` holds its own
    label); labels no module holds always count. Samples that differ only in unused labels (a low-rank rank
    when the op is a conv) freeze to the same architecture.

    Example:
        >>> from nni_udc.spaces import DigitsSpace
        >>> used = used_labels(DigitsSpace())
        >>> sample = {lb: c.values[0] for lb, c in DigitsSpace().simplify().items()}
        >>> sorted(set(sample) - used({**sample, 'op': 'conv'}))
        ['rank', 's_dass']
    """
    owners: dict[str, list[str]] = {}
    for path, module in space.named_modules():
        if isinstance(module, MutableModule):
            for mutable in module.mutables:
                for label in mutable.simplify():
                    owners.setdefault(label, []).append(path)
    choices = {path: m for path, m in space.named_modules() if isinstance(m, LayerChoice)}
    by_picks: dict[tuple, frozenset[str]] = {}  # only the LayerChoice picks matter: the fitter asks thousands of times

    def used(sample: Mapping[str, Any]) -> set[str]:
        picks = tuple(sample[choice.label] for choice in choices.values())
        if picks not in by_picks:
            unchosen = [f"{path}.{name}" for path, choice in choices.items() for name in choice.names
                        if name != sample[choice.label]]

            def live(path: str) -> bool:
                return not any(path == u or path.startswith(u + ".") for u in unchosen)

            by_picks[picks] = frozenset(label for label, paths in owners.items() if any(live(p) for p in paths))
        return set(by_picks[picks]) | (set(sample) - set(owners))

    return used


def local_search(start: Mapping[str, Any], choices: Mapping[str, Categorical], score: Callable[[Mapping[str, Any]], float],
                 fits: Callable[[Mapping[str, Any]], bool], *, used: Callable[[Mapping[str, Any]], set[str]] | None = None,
                 rounds: int = 5) -> dict[str, Any]:
    """Steepest descent of ``score`` over single-label changes that ``fits``: at most ``rounds`` moves.

    Changes of labels the current architecture does not use (see :func:`used_labels`) are skipped.

    Example:
        >>> choices = {'a': Categorical([1, 2, 3], label='a'), 'b': Categorical([1, 2, 3], label='b')}
        >>> local_search({'a': 1, 'b': 1}, choices, lambda x: -(x['a'] + 2 * x['b']), lambda x: x['a'] + x['b'] <= 4)
        {'a': 1, 'b': 3}
    """
    current = dict(start)
    here = score(current)
    for _ in range(rounds):
        best, best_score = None, here
        live = set(current) if used is None else used(current)
        for label, choice in choices.items():
            if label not in live:
                continue
            for value in choice.values:
                if value == current[label]:
                    continue
                candidate = {**current, label: value}
                if fits(candidate):
                    s = score(candidate)
                    if s < best_score:
                        best, best_score = candidate, s
        if best is None:
            break
        current, here = best, best_score
    return current
