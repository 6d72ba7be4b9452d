"""YAML experiment files, validated into dataclasses.

One file describes one search (``nni-udc search``), the outer loop that repeats it over cost targets
(``nni-udc pareto``) and the uniform-compression baseline it is compared with (``nni-udc baseline``). Every section and field is optional except ``space``; the defaults run the UDC
one-shot search on the digits space and data set. A wrong file gives a :class:`ConfigError` that names
the file, the field, the bad value and what is allowed.

Example file (``examples/udc-digits.yaml``)::

    name: udc-digits
    space: {name: digits}                       # registered name or module:Class, with args
    data: {name: digits, seed: 0}               # digits | mnist1d
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
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "BASELINE",
    "ONE_SHOT",
    "MULTI_TRIAL",
    "STRATEGIES",
    "SAMPLERS",
    "ConfigError",
    "ExperimentConfig",
    "load_config",
    "parse_config",
]

#: one-shot strategies (the UDC presets) and NNI's multi-trial strategies, by their YAML names
ONE_SHOT = ("udc", "haloc", "channel-mixed-precision", "dass")
MULTI_TRIAL = ("regularized-evolution", "random", "tpe", "grid-search")
#: the uniform-compression baseline grid (trains every model of it; see nni_udc.strategies.uniform)
BASELINE = ("uniform",)
STRATEGIES = ONE_SHOT + MULTI_TRIAL + BASELINE
#: Optuna samplers of the outer loop
SAMPLERS = ("tpe", "gp", "random", "qmc", "nsga2")
DATASETS = ("digits", "mnist1d")


class ConfigError(ValueError):
    """A malformed experiment file: names the file, the field, the bad value and what is allowed."""


@dataclass
class SpaceConfig:
    name: str = "digits"
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    name: str = "digits"
    seed: int = 0


@dataclass
class TrainingConfig:
    epochs: int = 8
    batch_size: int = 64
    learning_rate: float = 0.01
    finetune_epochs: int = 4
    finetune_learning_rate: float | None = None


@dataclass
class StrategyConfig:
    """A one-shot preset and its knobs, an NNI multi-trial strategy and its arguments, or the uniform baseline."""

    name: str = "udc"
    arc_learning_rate: float = 0.05
    warmup_epochs: int = 0
    temperature: float | None = None
    step_size: float = 1.0
    max_trials: int = 16  # multi-trial only
    args: dict[str, Any] = field(default_factory=dict)  # passed on to the strategy's constructor

    @property
    def one_shot(self) -> bool:
        return self.name in ONE_SHOT

    @property
    def multi_trial(self) -> bool:
        return self.name in MULTI_TRIAL

    @property
    def baseline(self) -> bool:
        return self.name in BASELINE


@dataclass
class HardwareConfig:
    target: str = "generic"
    cost: str | None = None  # default: the target's ``optimise`` cost


@dataclass
class SearchConfig:
    """One search: ``cost <= target × reference`` (``target``), or the linear penalty weight λ."""

    target: float | None = 0.1
    weight: float = 0.0


@dataclass
class ParetoConfig:
    """The Optuna outer loop over the cost target (or λ)."""

    trials: int = 8
    variable: str = "target"
    low: float = 0.02
    high: float = 0.5
    initial: int = 4  # log-spaced values enqueued before the sampler takes over
    sampler: str = "tpe"
    storage: str | None = None  # default: sqlite:///<output>/study.db
    study_name: str | None = None  # default: the experiment's name
    seed: int = 0
    reference_point: tuple[float, float] = (0.0, 1.0)  # (accuracy, relative cost) for the hypervolume
    heartbeat_interval: int = 10
    grace_period: int = 30
    baseline: bool = True  # train (or reuse) the uniform baseline after the loop and compare
    supernet_epochs: int | None = None  # train one shared supernet for this many epochs; None: one per search


@dataclass
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


class _Section:
    """Reads one mapping of the file, naming ``file: section.field`` in every error."""

    def __init__(self, path: str, where: str, data: Any, allowed: list[str]) -> None:
        self.path, self.where = path, where
        if data is None:
            data = {}
        if not isinstance(data, dict):
            self.fail(None, data, "a mapping")
        unknown = sorted(str(k) for k in data if k not in allowed)
        if unknown:
            raise ConfigError(f"{path}: {self._name(unknown[0])}: unknown field; allowed fields"
                              f"{' of ' + where if where else ''}: {', '.join(allowed)}")
        self.data = data

    def _name(self, key: str | None) -> str:
        return ".".join(p for p in (self.where, key) if p) or "(top level)"

    def fail(self, key: str | None, value: Any, allowed: str) -> None:
        raise ConfigError(f"{self.path}: {self._name(key)}: must be {allowed}, but got {value!r}")

    def str(self, key: str, default: Any, choices: tuple[str, ...] | None = None) -> Any:
        value = self.data.get(key, default)
        if value is None and default is None:
            return None
        if not isinstance(value, str) or not value:
            self.fail(key, value, "a non-empty string")
        if choices is not None and value not in choices:
            self.fail(key, value, f"one of {', '.join(choices)}")
        return value

    def bool(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            self.fail(key, value, "true or false")
        return value

    def int(self, key: str, default: int | None, minimum: int = 1, *, optional: bool = False) -> Any:
        value = self.data.get(key, default)
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.fail(key, value, f"an integer >= {minimum}")
        return value

    def number(self, key: str, default: float | None, *, low: float = 0.0, high: float = math.inf,
               open_low: bool = True, optional: bool = False) -> Any:
        value = self.data.get(key, default)
        if value is None and optional:
            return None
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
              and (value > low if open_low else value >= low) and value <= high)
        if not ok:
            bound = f"> {low:g}" if open_low else f">= {low:g}"
            self.fail(key, value, f"a number {bound}" + (f" and <= {high:g}" if high < math.inf else "")
                      + (" (or null)" if optional else ""))
        return float(value)

    def mapping(self, key: str) -> dict[str, Any]:
        value = self.data.get(key, {})
        if value is None:
            return {}
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            self.fail(key, value, "a mapping of argument names to values")
        return dict(value)


def _names(cls: type) -> list[str]:
    return [f.name for f in fields(cls)]


def parse_config(data: Any, path: str | Path, *, base: Path | None = None) -> ExperimentConfig:
    """Validate a loaded YAML document; ``path`` names the file in errors, ``base`` anchors relative paths."""
    path = str(path)
    top = _Section(path, "", data, ["name", "space", "data", "training", "strategy", "hardware", "search", "pareto",
                                    "output", "seed"])
    if "space" not in top.data:
        raise ConfigError(f"{path}: space: missing field; give a registered space name (e.g. {{name: digits}}) "
                          "or {name: 'package.module:Class'}")
    name = top.str("name", Path(path).stem if path != "inline" else "experiment")
    seed = top.int("seed", 0, minimum=0)

    space_data = top.data["space"]
    if isinstance(space_data, str):
        space_data = {"name": space_data}
    s = _Section(path, "space", space_data, _names(SpaceConfig))
    space = SpaceConfig(s.str("name", "digits"), s.mapping("args"))
    from nni_udc.spaces.registry import SPACES  # only the registry's names; importing a space waits for the run
    if space.name not in SPACES and ":" not in space.name:
        s.fail("name", space.name, f"a registered space ({', '.join(sorted(SPACES))}) or 'package.module:Class'")

    d = _Section(path, "data", top.data.get("data"), _names(DataConfig))
    data_cfg = DataConfig(d.str("name", "digits", DATASETS), d.int("seed", seed, minimum=0))

    t = _Section(path, "training", top.data.get("training"), _names(TrainingConfig))
    training = TrainingConfig(t.int("epochs", 8), t.int("batch_size", 64), t.number("learning_rate", 0.01),
                              t.int("finetune_epochs", 4, minimum=0),
                              t.number("finetune_learning_rate", None, optional=True))

    st = _Section(path, "strategy", top.data.get("strategy"), _names(StrategyConfig))
    temperature = st.data.get("temperature")
    if isinstance(temperature, list):
        if len(temperature) != 2:
            st.fail("temperature", temperature, "a number > 0 or a list [start, end] of two")
        for value in temperature:
            _Section(path, "strategy", {"temperature": value}, ["temperature"]).number("temperature", None)
        temperature = tuple(float(v) for v in temperature)
    else:
        temperature = st.number("temperature", None, optional=True)
    strategy = StrategyConfig(st.str("name", "udc", STRATEGIES), st.number("arc_learning_rate", 0.05),
                              st.int("warmup_epochs", 0, minimum=0), temperature, st.number("step_size", 1.0),
                              st.int("max_trials", 16), st.mapping("args"))
    if strategy.baseline and strategy.args:
        st.fail("args", strategy.args, f"empty: {strategy.name} takes no arguments (the grid follows from the space)")

    h = _Section(path, "hardware", top.data.get("hardware"), _names(HardwareConfig))
    hardware = HardwareConfig(h.str("target", "generic"), h.str("cost", None))
    _check_hardware(path, hardware, base)

    se = _Section(path, "search", top.data.get("search"), _names(SearchConfig))
    search = SearchConfig(se.number("target", 0.1, high=1.0, optional=True), se.number("weight", 0.0, open_low=False))
    if search.target is None and search.weight == 0 and strategy.one_shot:
        raise ConfigError(f"{path}: search: give a target (a cost fraction in (0, 1]) or a weight > 0; with neither, "
                          "nothing steers the search towards low cost")

    p = _Section(path, "pareto", top.data.get("pareto"), _names(ParetoConfig))
    variable = p.str("variable", "target", ("target", "weight"))
    pareto = ParetoConfig(
        trials=p.int("trials", 8), variable=variable,
        low=p.number("low", 0.02 if variable == "target" else 0.01, high=1.0 if variable == "target" else math.inf),
        high=p.number("high", 0.5 if variable == "target" else 10.0, high=1.0 if variable == "target" else math.inf),
        initial=p.int("initial", 4, minimum=0), sampler=p.str("sampler", "tpe", SAMPLERS),
        storage=p.str("storage", None), study_name=p.str("study_name", None), seed=p.int("seed", seed, minimum=0),
        reference_point=_reference_point(p), heartbeat_interval=p.int("heartbeat_interval", 10),
        grace_period=p.int("grace_period", 30), baseline=p.bool("baseline", True),
        supernet_epochs=p.int("supernet_epochs", None, optional=True))
    if pareto.low >= pareto.high:
        p.fail("low", pareto.low, f"smaller than pareto.high ({pareto.high:g})")
    if pareto.grace_period <= pareto.heartbeat_interval:
        p.fail("grace_period", pareto.grace_period, f"longer than heartbeat_interval ({pareto.heartbeat_interval})")
    if pareto.storage is not None and not pareto.storage.startswith(("sqlite:///", "postgresql", "mysql", "journal:")):
        p.fail("storage", pareto.storage, "an SQLAlchemy URL (sqlite:///FILE, postgresql+psycopg2://USER@HOST/DB) "
                                          "or journal:FILE")

    output = Path(top.str("output", f"runs/{name}"))  # relative to the working directory, as on a command line
    return ExperimentConfig(name, path, space, data_cfg, training, strategy, hardware, search, pareto, output, seed)


def _reference_point(p: _Section) -> tuple[float, float]:
    value = p.data.get("reference_point", [0.0, 1.0])
    if (not isinstance(value, list) or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
            or not 0 <= value[0] < 1 or value[1] <= 0):
        p.fail("reference_point", value, "[accuracy, relative cost]: accuracy in [0, 1) and a cost > 0")
    return float(value[0]), float(value[1])


def _check_hardware(path: str, hardware: HardwareConfig, base: Path | None) -> None:
    from nni_udc.evaluators.costs import COSTS
    from nni_udc.evaluators.targets import TargetError, load_target

    target_name = hardware.target
    if base is not None and target_name.endswith((".yaml", ".yml")) and not Path(target_name).is_absolute():
        hardware.target = target_name = str(base / target_name)
    try:
        target = load_target(target_name)
    except TargetError as error:
        raise ConfigError(f"{path}: hardware.target: {error}") from None
    known = sorted({*COSTS, *target.costs})
    if hardware.cost is not None and hardware.cost not in known:
        raise ConfigError(f"{path}: hardware.cost: must be one of {', '.join(known)} (the costs of target "
                          f"{target.name!r}), but got {hardware.cost!r}")
    if hardware.cost is None:
        hardware.cost = target.optimise


def load_config(path: str | Path) -> ExperimentConfig:
    """Read and validate an experiment file; a relative hardware target file is relative to it."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the experiment file: {error.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    return parse_config(data, path, base=path.parent)
