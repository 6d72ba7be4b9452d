"""YAML experiment files, validated into frozen dataclasses.

One file describes one search (``nni-udc search``), the outer loop that repeats it over cost targets
(``nni-udc pareto``) and the uniform-compression baseline it is compared with (``nni-udc baseline``). Every
section and field is optional except ``space``; the defaults run the UDC one-shot search on the digits space
and data set. Each field states its default and its rule once, in the dataclass below; names (strategies,
samplers, data sets, outer variables) are checked against :mod:`nni_udc.registry`. A wrong file gives a
:class:`ConfigError` that names the file, the field, the bad value (cut to a readable length) and what is
allowed. Command-line options go through the same rules (``overrides``; :func:`option_type`).

Example file (``examples/udc-digits.yaml``)::

    name: udc-digits
    space: {name: digits}                       # registered name or module:Class, with args
    data: {name: digits, seed: 0}               # digits | mnist1d | cifar10 | cifar100 | folder | speech-commands | sr
    training: {epochs: 8, batch_size: 64, learning_rate: 0.01, finetune_epochs: 4}
    strategy: {name: udc, arc_learning_rate: 0.05}
    hardware: {target: generic, cost: memory_bits}
    search: {target: 0.06}                       # one search: cost <= 6% of the float model's
    pareto: {trials: 6, low: 0.02, high: 0.3, sampler: tpe, baseline: true}
    output: runs/udc-digits

Example:
    >>> config = parse_config({"space": {"name": "digits"}}, "inline")
    >>> config.strategy.name, config.hardware.target, config.pareto.sampler
    ('udc', 'generic', 'tpe')
    >>> parse_config({"space": {"name": "digits"}, "training": {"epochs": 0}}, "x.yaml")
    Traceback (most recent call last):
    ...
    nni_udc.config.ConfigError: x.yaml: training.epochs: must be an integer >= 1, but got 0
    >>> parse_config({"space": "digits"}, "x.yaml", overrides={"pareto.trials": 3}).pareto.trials
    3
"""
from __future__ import annotations

import argparse
import functools
import math
import reprlib
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from nni_udc.registry import DATASETS, SAMPLERS, STRATEGIES, VARIABLES, Registry, Variable

__all__ = [
    "ACCELERATORS",
    "BASELINE",
    "MAX_INITIAL",
    "MAX_TRIALS",
    "MULTI_TRIAL",
    "ONE_SHOT",
    "PRECISIONS",
    "ConfigError",
    "DataConfig",
    "ExperimentConfig",
    "HardwareConfig",
    "ParetoConfig",
    "SearchConfig",
    "SpaceConfig",
    "StrategyConfig",
    "TrainingConfig",
    "brief",
    "check_pareto",
    "clip",
    "load_config",
    "option_type",
    "parse_config",
]

#: strategy names by kind, as registered in nni_udc.registry.STRATEGIES
ONE_SHOT = STRATEGIES.where(lambda entry: entry.kind == "one-shot")
MULTI_TRIAL = STRATEGIES.where(lambda entry: entry.kind == "multi-trial")
BASELINE = STRATEGIES.where(lambda entry: entry.kind == "baseline")
#: the most searches one study may ask for, and the most values enqueued before the sampler takes over
MAX_TRIALS = 10_000
MAX_INITIAL = 100
#: YAML aliases can multiply a small file into a huge document ("billion laughs"); no experiment needs this many nodes
_MAX_NODES = 100_000


class ConfigError(ValueError):
    """A malformed experiment file: names the file, the field, the bad value and what is allowed."""


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict, _REPR.maxset = 3, 4, 4, 4, 4
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = 60, 60, 40


def brief(value: Any, limit: int = 120) -> str:
    """``repr(value)`` cut to a readable length, in bounded time even for a huge or self-similar value.

    Example:
        >>> brief(list(range(100)))
        '[0, 1, 2, 3, ...]'
    """
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def clip(text: str, limit: int = 200) -> str:
    """The first line of ``text`` cut to ``limit`` characters (a message quoted inside another)."""
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= limit else line[:limit - 3] + "..."


# ----- rules: one per field, stating what is allowed --------------------------------------------------------

class _Invalid(Exception):
    """Raised by a rule; ``allowed`` completes "must be ..."."""

    def __init__(self, allowed: str) -> None:
        super().__init__(allowed)
        self.allowed = allowed


@dataclass(frozen=True)
class _Integer:
    minimum: int = 1
    maximum: int | None = None
    optional: bool = False

    def __call__(self, value: Any) -> int | None:
        if value is None and self.optional:
            return None
        if (isinstance(value, bool) or not isinstance(value, int) or value < self.minimum
                or (self.maximum is not None and value > self.maximum)):
            bound = f">= {self.minimum}" if self.maximum is None else f"from {self.minimum} to {self.maximum:,}"
            raise _Invalid(f"an integer {bound}" + (" (or null)" if self.optional else ""))
        return value


@dataclass(frozen=True)
class _Number:
    low: float = 0.0
    high: float = math.inf
    open_low: bool = True
    optional: bool = False

    def __call__(self, value: Any) -> float | None:
        if value is None and self.optional:
            return None
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
              and (value > self.low if self.open_low else value >= self.low) and value <= self.high)
        if not ok:
            bound = f"> {self.low:g}" if self.open_low else f">= {self.low:g}"
            text = f"a number {bound} and <= {self.high:g}" if self.high < math.inf else f"a finite number {bound}"
            raise _Invalid(text + (" (or null)" if self.optional else ""))
        return float(value)


@dataclass(frozen=True)
class _Text:
    choices: Registry[Any] | None = None
    optional: bool = False

    def __call__(self, value: Any) -> str | None:
        if value is None and self.optional:
            return None
        if not isinstance(value, str) or not value:
            raise _Invalid("a non-empty string" + (" (or null)" if self.optional else ""))
        if self.choices is not None and value not in self.choices:
            raise _Invalid(f"one of {', '.join(self.choices)}")
        return value


#: Lightning's accelerator and precision names that the training loops accept
ACCELERATORS = ("auto", "cpu", "cuda", "gpu", "mps")
PRECISIONS = ("32-true", "16-mixed", "bf16-mixed", "64-true")


@dataclass(frozen=True)
class _OneOf:
    choices: tuple[str, ...]

    def __call__(self, value: Any) -> str:
        if not isinstance(value, str) or value not in self.choices:
            raise _Invalid(f"one of {', '.join(self.choices)}")
        return value


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Invalid("true or false")
    return value


def _arguments(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise _Invalid("a mapping of argument names to values")
    return dict(value)


def _temperature(value: Any) -> float | tuple[float, float] | None:
    allowed = "a number > 0, a list [start, end] of two, or null"
    if isinstance(value, list):
        if len(value) != 2:
            raise _Invalid(allowed)
        try:
            start, end = (_Number()(v) for v in value)
        except _Invalid:
            raise _Invalid(allowed) from None
        return float(start), float(end)  # type: ignore[arg-type]
    try:
        return _Number(optional=True)(value)
    except _Invalid:
        raise _Invalid(allowed) from None


def _reference_point(value: Any, *, psnr: bool = False) -> tuple[float, float]:
    """``[accuracy, relative cost]``; for super-resolution data (``psnr``) the first is a PSNR in dB."""
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
            or not 0 <= value[0] < (math.inf if psnr else 1) or value[1] <= 0):
        raise _Invalid("[PSNR in dB, relative cost]: a PSNR >= 0 and a cost > 0" if psnr else
                       "[accuracy, relative cost]: accuracy in [0, 1) and a cost > 0")
    return float(value[0]), float(value[1])


_STORAGE = ("an SQLAlchemy URL (sqlite:///FILE, postgresql+psycopg2://USER@HOST/DB) or journal:FILE")


def _storage(value: Any) -> str | None:
    """An Optuna storage URL; a file (SQLite, journal) must lie in an existing directory."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith(("sqlite:///", "postgresql", "mysql", "journal:")):
        raise _Invalid(_STORAGE)
    if value.startswith(("sqlite:///", "journal:")):
        file = value[len("sqlite:///"):] if value.startswith("sqlite") else value[len("journal:"):]
        if not file or file.endswith("/"):
            raise _Invalid(f"{_STORAGE} naming a file")
        folder = Path(file).parent
        if not folder.is_dir():
            raise _Invalid(f"a file in an existing directory ({str(folder)!r} is not one)")
        if Path(file).is_dir():
            raise _Invalid("a file, not a directory")
        return value
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        make_url(value).get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError) as error:
        raise _Invalid(f"{_STORAGE} ({clip(str(error), 80)})") from None
    except ImportError as error:  # the dialect's driver is not installed
        raise _Invalid(f"a URL whose database driver is installed ({error.name or error})") from None
    return value


def _rule(default: Any, check: Callable[[Any], Any]) -> Any:
    """A field with its default and its rule, stated once."""
    return field(default=default, metadata={"rule": check})


def _arguments_field() -> Any:
    return field(default_factory=dict, metadata={"rule": _arguments})


# ----- the sections ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SpaceConfig:
    name: str = _rule("digits", _Text())  # a registered space or 'package.module:Class'
    args: dict[str, Any] = _arguments_field()  # the space's (or the model's) constructor arguments
    # your own network instead: 'package.module:callable' returning an nn.Module, made searchable by
    # nni_udc.make_compressible with the keyword arguments of ``compress`` (``policy`` as a mapping)
    model: str | None = _rule(None, _Text(optional=True))
    compress: dict[str, Any] = _arguments_field()


@dataclass(frozen=True)
class DataConfig:
    """A registered data set; one read from disk takes its folder (``root``) and its loader's ``args``."""

    name: str = _rule("digits", _Text(DATASETS))
    seed: int = _rule(0, _Integer(minimum=0))  # default: the experiment's seed
    root: str | None = _rule(None, _Text(optional=True))  # relative to the experiment file; bundled sets take none
    args: dict[str, Any] = _arguments_field()  # the loader's arguments (val_fraction, augment, size, words, ...)

    @property
    def loader_arguments(self) -> dict[str, Any]:
        """The keyword arguments of the data set's loader: ``seed``, then ``root`` when given, then ``args``.

        Example:
            >>> DataConfig("cifar10", 1, "/data", {"augment": False}).loader_arguments
            {'seed': 1, 'root': '/data', 'augment': False}
        """
        return {"seed": self.seed, **({"root": self.root} if self.root is not None else {}), **self.args}


@dataclass(frozen=True)
class TrainingConfig:
    epochs: int = _rule(8, _Integer())
    batch_size: int = _rule(64, _Integer())
    learning_rate: float = _rule(0.01, _Number())
    finetune_epochs: int = _rule(4, _Integer(minimum=0))
    finetune_learning_rate: float | None = _rule(None, _Number(optional=True))
    # Lightning's names; every training loop (supernet, fine-tune, multi-trial, baselines) follows them
    accelerator: str = _rule("auto", _OneOf(ACCELERATORS))  # auto: cuda when available, else cpu
    devices: int = _rule(1, _Integer())  # > 1: Lightning's DDP for the one-shot search
    precision: str = _rule("32-true", _OneOf(PRECISIONS))


@dataclass(frozen=True)
class StrategyConfig:
    """A one-shot preset and its knobs, an NNI multi-trial strategy and its arguments, or the uniform baseline."""

    name: str = _rule("udc", _Text(STRATEGIES))
    arc_learning_rate: float = _rule(0.05, _Number())
    warmup_epochs: int = _rule(0, _Integer(minimum=0))
    temperature: float | tuple[float, float] | None = _rule(None, _temperature)
    step_size: float = _rule(1.0, _Number())
    max_trials: int = _rule(16, _Integer(maximum=MAX_TRIALS))  # multi-trial only
    args: dict[str, Any] = _arguments_field()  # passed on to the strategy's constructor

    @property
    def one_shot(self) -> bool:
        return STRATEGIES[self.name].kind == "one-shot"

    @property
    def multi_trial(self) -> bool:
        return STRATEGIES[self.name].kind == "multi-trial"

    @property
    def baseline(self) -> bool:
        return STRATEGIES[self.name].kind == "baseline"


@dataclass(frozen=True)
class HardwareConfig:
    target: str = _rule("generic", _Text())  # a registered target or a YAML file (relative to the experiment file)
    cost: str | None = _rule(None, _Text(optional=True))  # default: the target's ``optimise`` cost


@dataclass(frozen=True)
class SearchConfig:
    """One search: ``cost <= target × reference`` (``target``), or the linear penalty weight λ."""

    target: float | None = _rule(0.1, _Number(high=1.0, optional=True))
    weight: float = _rule(0.0, _Number(open_low=False))


@dataclass(frozen=True)
class ParetoConfig:
    """The Optuna outer loop over the cost target (or λ)."""

    trials: int = _rule(8, _Integer(maximum=MAX_TRIALS))
    variable: Variable = _rule("target", _Text(VARIABLES))
    low: float = _rule(VARIABLES["target"].low, _Number())  # default: the variable's (nni_udc.registry.VARIABLES)
    high: float = _rule(VARIABLES["target"].high, _Number())
    initial: int = _rule(4, _Integer(minimum=0, maximum=MAX_INITIAL))  # log-spaced values enqueued first
    sampler: str = _rule("tpe", _Text(SAMPLERS))
    storage: str | None = _rule(None, _storage)  # default: sqlite:///<output>/study.db
    study_name: str | None = _rule(None, _Text(optional=True))  # default: the experiment's name
    seed: int = _rule(0, _Integer(minimum=0))  # default: the experiment's seed
    reference_point: tuple[float, float] = _rule((0.0, 1.0), _reference_point)  # (accuracy, relative cost)
    heartbeat_interval: int = _rule(10, _Integer())
    grace_period: int = _rule(30, _Integer())
    baseline: bool = _rule(True, _flag)  # train (or reuse) the uniform baseline after the loop and compare
    supernet_epochs: int | None = _rule(None, _Integer(optional=True))  # one shared supernet; None: one per search
    workers: int | None = _rule(None, _Integer(optional=True))  # processes running searches; None: experiment.pareto_workers


@dataclass(frozen=True)
class ExperimentConfig:
    name: str
    path: str
    space: SpaceConfig
    data: DataConfig
    training: TrainingConfig
    strategy: StrategyConfig
    hardware: HardwareConfig
    search: SearchConfig
    pareto: ParetoConfig
    output: Path
    seed: int = 0


_SECTIONS: dict[str, type] = {"space": SpaceConfig, "data": DataConfig, "training": TrainingConfig,
                              "strategy": StrategyConfig, "hardware": HardwareConfig, "search": SearchConfig,
                              "pareto": ParetoConfig}
_TOP: dict[str, Callable[[Any], Any]] = {"name": _Text(), "seed": _Integer(minimum=0), "output": _Text()}


def _default(f: Any) -> Any:
    return f.default_factory() if f.default is MISSING else f.default


class _Reader:
    """Reads the mappings of one file, naming ``file: section.field`` in every error; ``overrides`` (dotted
    field -> value, from the command line) replace what the file says and pass the same rules."""

    def __init__(self, path: str, overrides: Mapping[str, Any]) -> None:
        self.path, self.overrides = path, overrides

    def fail(self, where: str, value: Any, allowed: str) -> None:
        raise ConfigError(f"{self.path}: {where or '(top level)'}: must be {allowed}, but got {brief(value)}")

    def mapping(self, where: str, data: Any, allowed: list[str]) -> dict[str, Any]:
        if data is None:
            return {}
        if not isinstance(data, dict):
            self.fail(where, data, "a mapping")
        unknown = sorted(brief(k, 40) if not isinstance(k, str) else brief(k, 40)[1:-1] for k in data
                         if k not in allowed)
        if unknown:
            name = ".".join(p for p in (where, unknown[0]) if p)
            raise ConfigError(f"{self.path}: {name}: unknown field; allowed fields"
                              f"{' of ' + where if where else ''}: {', '.join(allowed)}")
        return data

    def value(self, where: str, key: str, data: dict[str, Any], default: Any, check: Callable[[Any], Any]) -> Any:
        dotted = f"{where}.{key}" if where else key
        value = self.overrides[dotted] if dotted in self.overrides else data.get(key, default)
        try:
            return check(value)
        except _Invalid as error:
            self.fail(f"{dotted} (from the command line)" if dotted in self.overrides else dotted, value, error.allowed)

    def section(self, cls: type, where: str, data: Any, *, defaults: Mapping[str, Any] = {},
                rules: Mapping[str, Callable[[Any], Any]] = {}) -> Any:
        """The dataclass ``cls`` from its mapping: each field's default and rule (``defaults``/``rules`` replace
        those that depend on other fields)."""
        data = self.mapping(where, data, [f.name for f in fields(cls)])
        return cls(**{f.name: self.value(where, f.name, data, defaults.get(f.name, _default(f)),
                                         rules.get(f.name, f.metadata["rule"])) for f in fields(cls)})


def parse_config(data: Any, path: str | Path, *, base: Path | None = None,
                 overrides: Mapping[str, Any] | None = None) -> ExperimentConfig:
    """Validate a loaded YAML document; ``path`` names the file in errors, ``base`` anchors relative paths.

    ``overrides``: dotted field names (``pareto.trials``, ``output``) and the values that replace the file's,
    checked by the same rules.
    """
    path = str(path)
    read = _Reader(path, overrides or {})
    top = read.mapping("", data, ["name", *_SECTIONS, "output", "seed"])
    if "space" not in top:
        raise ConfigError(f"{path}: space: missing field; give a registered space name (e.g. {{name: digits}}) "
                          "or {name: 'package.module:Class'}")
    name = read.value("", "name", top, Path(path).stem if path != "inline" else "experiment", _TOP["name"])
    seed = read.value("", "seed", top, 0, _TOP["seed"])

    space_data = {"name": top["space"]} if isinstance(top["space"], str) else top["space"]
    space = read.section(SpaceConfig, "space", space_data)
    from nni_udc.spaces.registry import SPACES  # only the registry's names; importing a space waits for the run
    if space.model is not None:
        if "name" in space_data:
            read.fail("space.name", space.name, "left out when space.model gives your own network")
        if ":" not in space.model:
            read.fail("space.model", space.model, "'package.module:callable' returning a torch.nn.Module "
                                                  "(e.g. 'torchvision.models:mobilenet_v3_small')")
        if "example_input" in space.compress:  # the data set's input shape gives it
            read.fail("space.compress.example_input", space.compress["example_input"],
                      "left out: a batch of the data set's input shape is used")
    elif space.compress:
        read.fail("space.compress", space.compress, "empty unless space.model gives a network to make compressible")
    elif space.name not in SPACES and ":" not in space.name:
        read.fail("space.name", space.name, f"a registered space ({', '.join(sorted(SPACES))}) or "
                                            "'package.module:Class'")
    data_cfg = _data(read, top.get("data"), seed, base)
    training = read.section(TrainingConfig, "training", top.get("training"))
    strategy = read.section(StrategyConfig, "strategy", top.get("strategy"))
    if strategy.baseline and strategy.args:
        read.fail("strategy.args", strategy.args,
                  f"empty: {strategy.name} takes no arguments (the grid follows from the space)")
    hardware = _hardware(read, top.get("hardware"), base)

    search = read.section(SearchConfig, "search", top.get("search"))
    if search.target is None and search.weight == 0 and strategy.one_shot:
        raise ConfigError(f"{path}: search: give a target (a cost fraction in (0, 1]) or a weight > 0; with neither, "
                          "nothing steers the search towards low cost")

    pareto_data = read.mapping("pareto", top.get("pareto"), [f.name for f in fields(ParetoConfig)])
    variable = read.value("pareto", "variable", pareto_data, "target", _Text(VARIABLES))
    v = VARIABLES[variable]
    bound = _Number(high=v.limit)
    psnr = DATASETS[data_cfg.name].task == "super-resolution"  # the front's quality is PSNR in dB
    pareto = read.section(ParetoConfig, "pareto", pareto_data, defaults={"low": v.low, "high": v.high, "seed": seed},
                          rules={"low": bound, "high": bound,
                                 "reference_point": functools.partial(_reference_point, psnr=psnr)})
    if pareto.low >= pareto.high:
        read.fail("pareto.low", pareto.low, f"smaller than pareto.high ({pareto.high:g})")
    if pareto.grace_period <= pareto.heartbeat_interval:
        read.fail("pareto.grace_period", pareto.grace_period,
                  f"longer than heartbeat_interval ({pareto.heartbeat_interval})")

    output = Path(read.value("", "output", top, f"runs/{name}", _TOP["output"]))  # relative to the working directory
    return ExperimentConfig(name, path, space, data_cfg, training, strategy, hardware, search, pareto, output, seed)


def check_pareto(config: ExperimentConfig, command: str = "nni-udc pareto") -> None:
    """Refuse what ``nni-udc pareto`` does not run: several training devices. Its searches run one after another
    inside an Optuna study in this process; Lightning's DDP would start copies of the whole command, each running
    the study's loop (issue 14). One search (``nni-udc search``) takes ``training.devices: N``. The uniform
    baseline (``command='nni-udc baseline'``) trains its models one at a time on one device likewise.

    Example:
        >>> check_pareto(parse_config({"space": "digits", "training": {"devices": 2}}, "x.yaml"))
        Traceback (most recent call last):
        ...
        nni_udc.config.ConfigError: x.yaml: training.devices: nni-udc pareto trains on one device, but got 2; use 1 ...
    """
    devices = config.training.devices
    if devices > 1:
        raise ConfigError(f"{config.path}: training.devices: {command} trains on one device, but got {devices}; "
                          f"use 1 (several devices (DDP) serve one search: nni-udc search)")


def _data(read: _Reader, data: Any, seed: int, base: Path | None) -> DataConfig:
    """The data section; a data set read from disk checks its root and arguments now, before anything runs."""
    given: DataConfig = read.section(DataConfig, "data", data, defaults={"seed": seed})
    check = DATASETS[given.name].check
    if check is None:
        if given.root is not None:
            read.fail("data.root", given.root, f"left out: {given.name} is bundled and reads no files")
        if given.args:
            read.fail("data.args", given.args, f"empty: {given.name} takes no arguments")
        return given
    root = given.root
    if root is not None and base is not None and not Path(root).expanduser().is_absolute():
        root = str(base / root)
    try:
        check(root, given.args)
    except ValueError as error:  # DataRootError included: names the missing path and what to put there
        raise ConfigError(f"{read.path}: data: {error}") from None
    return replace(given, root=root)


def _hardware(read: _Reader, data: Any, base: Path | None) -> HardwareConfig:
    """The target (a file relative to the experiment file) and the cost, the target's ``optimise`` by default."""
    from nni_udc.evaluators.costs import COSTS
    from nni_udc.evaluators.targets import TargetError, load_target

    given = read.section(HardwareConfig, "hardware", data)
    target_name = given.target
    if base is not None and target_name.endswith((".yaml", ".yml")) and not Path(target_name).is_absolute():
        target_name = str(base / target_name)
    try:
        target = load_target(target_name)
    except TargetError as error:
        raise ConfigError(f"{read.path}: hardware.target: {error}") from None
    known = sorted({*COSTS, *target.costs})
    if given.cost is not None and given.cost not in known:
        raise ConfigError(f"{read.path}: hardware.cost: must be one of {', '.join(known)} (the costs of target "
                          f"{target.name!r}), but got {brief(given.cost)}")
    return HardwareConfig(target_name, given.cost if given.cost is not None else target.optimise)


def option_type(dotted: str) -> Callable[[str], Any]:
    """An argparse ``type`` for the command-line option that overrides field ``dotted``: the field's own rule,
    so the option and the file accept the same values (message: "must be ..., but got 'TEXT'").

    Example:
        >>> option_type("pareto.trials")("12")
        12
    """
    section, _, name = dotted.rpartition(".")
    cls = _SECTIONS[section] if section else None
    check: Callable[[Any], Any] = _TOP[name] if cls is None else next(f.metadata["rule"] for f in fields(cls) if f.name == name)

    def parse(text: str) -> Any:
        value: Any = text
        if isinstance(check, (_Integer, _Number)):
            try:
                value = int(text) if isinstance(check, _Integer) else float(text)
            except ValueError:
                pass
        try:
            return check(value)
        except _Invalid as error:
            allowed = error.allowed.removesuffix(" (or null)")  # no null on a command line
            raise argparse.ArgumentTypeError(f"must be {allowed}, but got {brief(text)}") from None
    return parse


# ----- reading the file -----------------------------------------------------------------------------------------

class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {brief(key, 40)} (the file gives it twice)", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def _nodes(data: Any, seen: dict[int, int]) -> int:
    """Nodes of ``data`` with every alias expanded, counted in time linear in the distinct objects."""
    if id(data) in seen:
        return seen[id(data)]
    seen[id(data)] = 1  # a cycle (a recursive alias) counts once
    children = (list(data.keys()) + list(data.values()) if isinstance(data, dict)
                else data if isinstance(data, list) else [])
    total = 1 + sum(_nodes(child, seen) for child in children)
    seen[id(data)] = total
    return total


def load_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> ExperimentConfig:
    """Read and validate an experiment file; a relative hardware target file is relative to it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text (UTF-8) file; an experiment file is YAML") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the experiment file: {error.strerror}") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{where}: {clip(problem)}") from None
    if _nodes(data, {}) > _MAX_NODES:
        raise ConfigError(f"{path}: the document expands to more than {_MAX_NODES:,} values (YAML aliases "
                          "repeating aliases?); an experiment file is small")
    return parse_config(data, path, base=path.parent, overrides=overrides)
