"""One registry per extension point: strategies, data sets, outer-loop samplers, outer variables, NPU accelerators.

The experiment file (:mod:`nni_udc.config`) is validated against these names, and the code that runs it looks
the same names up here: adding a strategy or a sampler is one entry in this file. Entries build their objects
lazily, so checking a file imports neither torch nor NNI (``nni-udc`` answers a bad file in a fraction of a
second). Hardware targets and model spaces have their own registries next to what they hold
(:func:`nni_udc.evaluators.targets.target_names`, :data:`nni_udc.spaces.registry.SPACES`).

Example:
    >>> STRATEGIES["udc"].kind, "cmaes" in SAMPLERS
    ('one-shot', False)
    >>> SAMPLERS["cmaes"]
    Traceback (most recent call last):
    ...
    nni_udc.registry.UnknownNameError: unknown sampler 'cmaes'; registered samplers: tpe, gp, random, qmc, nsga2
"""
from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

__all__ = ["ACCELERATORS", "DATASETS", "SAMPLERS", "STRATEGIES", "VARIABLES", "DatasetEntry", "Registry",
           "StrategyEntry", "StrategyKind", "UnknownNameError", "Variable", "VariableEntry"]

T = TypeVar("T")


class UnknownNameError(ValueError, LookupError):
    """A name that is not registered; the message lists the registered ones."""


class Registry(Generic[T]):
    """Names of one kind of thing, in registration order; a second entry under one name is refused."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered already (as {self._entries[name]!r})")
        self._entries[name] = entry
        return entry

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except (KeyError, TypeError):  # TypeError: an unhashable "name" from a malformed file
            raise UnknownNameError(f"unknown {self.kind} {name!r}; registered {self.kind}s: "
                                   f"{', '.join(self._entries)}") from None

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def where(self, test: Callable[[T], bool]) -> tuple[str, ...]:
        """The names whose entry passes ``test``."""
        return tuple(name for name, entry in self._entries.items() if test(entry))


# ----- strategies ------------------------------------------------------------------------------------------

StrategyKind = Literal["one-shot", "multi-trial", "baseline"]


@dataclass(frozen=True)
class StrategyEntry:
    """``build(**arguments)`` makes the strategy; the uniform baseline trains a grid and builds none."""

    kind: StrategyKind
    build: Callable[..., Any] | None = None

    def make(self, **arguments: Any) -> Any:
        """``build(**arguments)``; an entry that builds none (the uniform baseline) raises ``TypeError``."""
        if self.build is None:
            raise TypeError(f"this {self.kind} strategy trains a grid and builds no strategy object")
        return self.build(**arguments)


# Each builder imports its class when a search is built: validating a file must not load torch and NNI.
def _udc(**kwargs: Any) -> Any:
    from nni_udc.strategies import UDC
    return UDC(**kwargs)


def _haloc(**kwargs: Any) -> Any:
    from nni_udc.strategies import HALOC
    return HALOC(**kwargs)


def _channel_mixed_precision(**kwargs: Any) -> Any:
    from nni_udc.strategies import ChannelMixedPrecision
    return ChannelMixedPrecision(**kwargs)


def _dass(**kwargs: Any) -> Any:
    from nni_udc.strategies import DASS
    return DASS(**kwargs)


def _regularized_evolution(**kwargs: Any) -> Any:
    from nni.nas.strategy import RegularizedEvolution
    return RegularizedEvolution(**kwargs)


def _random(**kwargs: Any) -> Any:
    from nni.nas.strategy import Random
    return Random(**kwargs)


def _tpe(**kwargs: Any) -> Any:
    from nni.nas.strategy import TPE
    return TPE(**kwargs)


def _grid_search(**kwargs: Any) -> Any:
    from nni.nas.strategy import GridSearch
    return GridSearch(**kwargs)


STRATEGIES: Registry[StrategyEntry] = Registry("strategy")
STRATEGIES.register("udc", StrategyEntry("one-shot", _udc))
STRATEGIES.register("haloc", StrategyEntry("one-shot", _haloc))
STRATEGIES.register("channel-mixed-precision", StrategyEntry("one-shot", _channel_mixed_precision))
STRATEGIES.register("dass", StrategyEntry("one-shot", _dass))
STRATEGIES.register("regularized-evolution", StrategyEntry("multi-trial", _regularized_evolution))
STRATEGIES.register("random", StrategyEntry("multi-trial", _random))
STRATEGIES.register("tpe", StrategyEntry("multi-trial", _tpe))
STRATEGIES.register("grid-search", StrategyEntry("multi-trial", _grid_search))
STRATEGIES.register("uniform", StrategyEntry("baseline"))


# ----- data sets ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DatasetEntry:
    """A data set: one sample's input shape (checked against the space before any data loads) and its loader.

    ``check(root, args)``, for a data set read from a local ``root``, raises ``ValueError`` naming what the root
    must hold or which argument is wrong; a bundled data set has none and takes no root.
    """

    input_shape: tuple[int, ...]
    load: Callable[..., Any]
    check: Callable[[Any, Mapping[str, Any]], None] | None = None
    #: what a model learns from it, which picks the evaluator and the front's metric (nni_udc.evaluators.tasks)
    task: Literal["classification", "super-resolution"] = "classification"


def _lazy(module: str, name: str) -> Callable[..., Any]:
    """``module.name``, imported at the first call (checking a file loads no data code)."""
    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)
    return call


def _digits(**kwargs: Any) -> Any:
    from nni_udc.data.digits import load_digits_splits
    return load_digits_splits(**kwargs)


def _mnist1d(**kwargs: Any) -> Any:
    from nni_udc.data.mnist1d import load_mnist1d_splits
    return load_mnist1d_splits(**kwargs)


DATASETS: Registry[DatasetEntry] = Registry("data set")
DATASETS.register("digits", DatasetEntry((1, 8, 8), _digits))
DATASETS.register("mnist1d", DatasetEntry((1, 40), _mnist1d))
DATASETS.register("cifar10", DatasetEntry((3, 32, 32), _lazy("nni_udc.data.cifar", "load_cifar10_splits"),
                                          _lazy("nni_udc.data.cifar", "check_cifar10")))
DATASETS.register("cifar100", DatasetEntry((3, 32, 32), _lazy("nni_udc.data.cifar", "load_cifar100_splits"),
                                           _lazy("nni_udc.data.cifar", "check_cifar100")))
DATASETS.register("folder", DatasetEntry((3, 32, 32), _lazy("nni_udc.data.folder", "load_folder_splits"),
                                         _lazy("nni_udc.data.folder", "check_folder")))
DATASETS.register("speech-commands", DatasetEntry(
    (1, 49, 10), _lazy("nni_udc.data.speech_commands", "load_speech_commands_splits"),
    _lazy("nni_udc.data.speech_commands", "check_speech_commands")))
DATASETS.register("sr", DatasetEntry((3, 24, 24), _lazy("nni_udc.data.sr", "load_sr_splits"),
                                     _lazy("nni_udc.data.sr", "check_sr"), task="super-resolution"))


# ----- the outer loop: samplers and variables ------------------------------------------------------------------

# optuna loads with the first sampler built, not with the file check
def _tpe_sampler(seed: int) -> Any:
    from optuna.samplers import TPESampler
    return TPESampler(seed=seed)


def _gp_sampler(seed: int) -> Any:
    from optuna.samplers import GPSampler
    return GPSampler(seed=seed, deterministic_objective=False)


def _random_sampler(seed: int) -> Any:
    from optuna.samplers import RandomSampler
    return RandomSampler(seed=seed)


def _qmc_sampler(seed: int) -> Any:
    from optuna.samplers import QMCSampler
    return QMCSampler(seed=seed, warn_independent_sampling=False)


def _nsga2_sampler(seed: int) -> Any:
    from optuna.samplers import NSGAIISampler
    return NSGAIISampler(seed=seed, population_size=8)


#: Optuna samplers of the outer loop: name -> ``build(seed)``
SAMPLERS: Registry[Callable[[int], Any]] = Registry("sampler")
SAMPLERS.register("tpe", _tpe_sampler)
SAMPLERS.register("gp", _gp_sampler)
SAMPLERS.register("random", _random_sampler)
SAMPLERS.register("qmc", _qmc_sampler)
SAMPLERS.register("nsga2", _nsga2_sampler)

Variable = Literal["target", "weight"]


@dataclass(frozen=True)
class VariableEntry:
    """An outer variable: its default range (``pareto.low``/``high``) and the largest value it may take."""

    low: float
    high: float
    limit: float
    description: str


#: what the outer loop varies: the cost-target ratio or the penalty weight λ
VARIABLES: Registry[VariableEntry] = Registry("outer variable")
VARIABLES.register("target", VariableEntry(0.02, 0.5, 1.0, "the cost target as a fraction of the float model's"))
VARIABLES.register("weight", VariableEntry(0.01, 10.0, math.inf, "the linear penalty weight λ"))


# ----- hardware ------------------------------------------------------------------------------------------------

#: Ethos-U targets -> the member of vela's ``NpuAccelerator`` whose encoder they use
ACCELERATORS: Registry[str] = Registry("NPU accelerator")
ACCELERATORS.register("ethos-u55", "Ethos_U55_128")
ACCELERATORS.register("ethos-u65", "Ethos_U65_256")
