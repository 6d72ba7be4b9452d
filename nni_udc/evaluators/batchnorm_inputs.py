"""Which costed layers feed a BatchNorm directly: the layers that export folds a BatchNorm into.

:func:`~nni_udc.export.bake.bake` folds an evaluation-mode BatchNorm (``BatchNorm1d``/``BatchNorm2d`` with running
statistics) that takes a weight layer's output as its input into that layer's scales and a bias, and the packed file
stores that bias: 32 bits per kept output channel, also for a layer declared ``bias=False``. ``memory_bits`` counts it
(:mod:`nni_udc.evaluators.costs`), so the cost model must know which layers a BatchNorm follows.

:class:`BatchNormInputs` finds them in a forward pass, by object identity: a layer's output tensor is the very tensor
a BatchNorm's forward receives (``nn.Sequential(conv, bn)``, ``self.bn(self.conv(x))``). It works in the forward pass
of a frozen model (:func:`~nni_udc.evaluators.exact.model_specs`) and in NNI's shape-inference pass over a model space
(:class:`~nni_udc.evaluators.CostProfiler`), where a ``LayerChoice`` or ``Repeat`` that feeds a BatchNorm passes it on
to the layer ending each of its candidates (each candidate runs there). A linear layer counts only on ``(N, C)``
outputs, as ``bake`` folds only there (``BatchNorm1d`` on ``(N, C, L)`` normalises another axis than the features).

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))
    >>> with BatchNormInputs(net, lambda m: isinstance(m, nn.Conv2d)) as found:
    ...     _ = net(torch.zeros(1, 1, 5, 5))
    >>> found.layers()
    {'0'}
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from nni.nas.nn.pytorch import LayerChoice, Repeat
from torch import nn

from nni_udc.evaluators.spec import LayerSpec

__all__ = ["BatchNormInputs", "followed_by_batchnorm", "folds_into"]

_FOLDED = (nn.BatchNorm1d, nn.BatchNorm2d)  # nni_udc/export/bake.py folds these (and NNI's mutable twins)


def folds_into(module: nn.Module) -> bool:
    """Whether ``module`` is a BatchNorm that export folds into the layer before it (1-D or 2-D, running statistics)."""
    return isinstance(module, _FOLDED) and module.track_running_stats


class BatchNormInputs:
    """A context manager that watches ``model``'s forward passes and names the costed layers that a foldable
    BatchNorm takes its input from (:meth:`layers`).

    Args:
        model: the model or model space; its modules get forward hooks while the context is open.
        costed: whether a module is a costed layer (one with a spec builder); its own children are not watched.
    """

    def __init__(self, model: nn.Module, costed: Callable[[nn.Module], bool]) -> None:
        self.model = model
        self.costed = costed
        self._modules: dict[str, nn.Module] = {}
        self._outputs: dict[int, list[str]] = {}  # id of an output tensor -> modules that returned it
        self._last: dict[str, int] = {}  # module -> id of its last output
        self._alive: list[Any] = []  # every output seen: no id is reused while the context is open
        self._fed: list[tuple[list[str], int]] = []  # per BatchNorm call: modules its input came from, its dims
        self._handles: list[Any] = []

    def __enter__(self) -> BatchNormInputs:
        owners: list[str] = []
        for name, module in self.model.named_modules():
            if any(owner == "" or name.startswith(owner + ".") for owner in owners):
                continue
            self._modules[name] = module
            if self.costed(module):
                owners.append(name)
            if folds_into(module):
                self._handles.append(module.register_forward_pre_hook(self._batchnorm_hook))
            else:
                self._handles.append(module.register_forward_hook(
                    lambda m, args, out, name=name: self._output_hook(name, out)))
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _output_hook(self, name: str, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            self._alive.append(output)
            self._outputs.setdefault(id(output), []).append(name)
            self._last[name] = id(output)

    def _batchnorm_hook(self, module: nn.Module, args: Any) -> None:
        if args and isinstance(args[0], torch.Tensor):
            self._fed.append((list(self._outputs.get(id(args[0]), [])), args[0].dim()))

    def layers(self) -> set[str]:
        """The costed layers (module paths) whose output a foldable BatchNorm took as its input."""
        found: set[str] = set()
        for names, dims in self._fed:
            seen: set[str] = set()
            for name in names:
                found |= self._ending(name, dims, seen)
        return found

    def _ending(self, name: str, dims: int, seen: set[str]) -> set[str]:
        """The costed layers whose output is ``name``'s output (every candidate's, for a choice)."""
        if name in seen or name not in self._modules:
            return set()
        seen.add(name)
        module = self._modules[name]
        if self.costed(module):
            linear = hasattr(module, "in_features") or isinstance(getattr(module, "second", None), nn.Linear)
            return {name} if dims == 2 or not linear else set()
        candidates: list[str] = []
        if isinstance(module, LayerChoice):
            candidates = [f"{name}.{key}" for key in module.names]
        elif isinstance(module, Repeat):
            depths = [module.depth_choice] if isinstance(module.depth_choice, int) else module.depth_choice.values
            candidates = [f"{name}.blocks.{d - 1}" for d in depths if d >= 1]
        out: set[str] = set()
        for candidate in candidates:
            if candidate in self._last:
                for producer in self._outputs[self._last[candidate]]:
                    out |= self._ending(producer, dims, seen)
        return out


def followed_by_batchnorm(specs: list[LayerSpec], followed: bool) -> list[LayerSpec]:
    """``specs`` of one layer, the last (the one whose output leaves the layer) marked ``batchnorm`` if ``followed``.

    Example:
        >>> specs = [LayerSpec('lr.first', 'linear', 8, 2), LayerSpec('lr.second', 'linear', 2, 8)]
        >>> [s.batchnorm for s in followed_by_batchnorm(specs, True)]
        [False, True]
    """
    if not followed or not specs:
        return specs
    return [*specs[:-1], dataclasses.replace(specs[-1], batchnorm=True)]
