"""The ``nni-udc`` command line.

Usage::

    nni-udc search CONFIG [--target T | --weight W] [--out DIR]   one search from an experiment file
                                                                 (strategy uniform: the uniform baseline grid)
    nni-udc pareto CONFIG [--trials N] [--storage URL]           the Optuna outer loop: the accuracy-cost front,
                                                                 then the uniform baseline and the comparison
    nni-udc baseline CONFIG [--out DIR] [--workers N]            the uniform-compression baseline of any file
    nni-udc show RUN                                             the front of a finished (or running) pareto run
                                                                 (and its comparison with the baseline)
    nni-udc nnictl-register [--name N]                           register the Optuna tuner with nnictl
    nni-udc nnictl-trial CONFIG                                  an nnictl trial: one search, reported to NNI

    nni-udc demo [--strategy udc|evolution|random] [--targets T,T,...] [--epochs E] [--finetune-epochs F]
                 [--trials N] [--seed S] [--out DIR]

    nni-udc profile --space digits --out latency.yaml [--threads T] [--warmup W] [--repeats R]
    nni-udc npu-size MODEL.pt [--target ethos-u55|ethos-u65]

Bad arguments exit with status 2 and a one-line message, no traceback.
"""
from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the commands import what they run when they run
    from nni_udc.config import ExperimentConfig
    from nni_udc.pareto import Point

__all__ = ["main"]


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, but got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, but got {text!r}")
    return value


def _number(what: str, ok: Callable[[float], bool]) -> Callable[[str], float]:
    """An argparse type: a float for which ``ok`` holds, else "must be WHAT, but got 'TEXT'"."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or not ok(value):  # 'inf' parses as a float: refused, as the YAML refuses it
            raise argparse.ArgumentTypeError(f"must be {what}, but got {text!r}")
        return value
    return parse


_fraction = _number("a number in (0, 1]", lambda v: 0 < v <= 1)
_nonnegative = _number("a finite number >= 0", lambda v: v >= 0)


def _targets(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated numbers in (0, 1], but got {text!r}") from None
    if not values or any(not 0 < v <= 1 for v in values):
        raise argparse.ArgumentTypeError(f"must be comma-separated numbers in (0, 1], but got {text!r}")
    return values


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nni-udc", description="Compression-aware neural architecture search for NNI 3.0.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser("demo", help="search compressible CNNs on scikit-learn's digits; prints a results table",
                               description="Search DigitsSpace with the one-shot UDC strategy (or an NNI multi-trial "
                                           "strategy) and compare the found models with the float and uniform 8-bit "
                                           "baselines.")
    demo.add_argument("--strategy", choices=["udc", "evolution", "random"], default="udc",
                      help="udc: one-shot search per memory target; evolution/random: NNI's RegularizedEvolution or "
                           "Random multi-trial search (default: udc)")
    demo.add_argument("--targets", type=_targets, default=(0.03, 0.06, 0.12),
                      help="udc: memory targets as fractions of the widest float model (default: 0.03,0.06,0.12)")
    demo.add_argument("--epochs", type=_positive, default=12,
                      help="training epochs: of the supernet (udc), per architecture (multi-trial) and of the "
                           "baselines (default: 12)")
    demo.add_argument("--finetune-epochs", type=_positive, default=None,
                      help="udc: quantisation-aware fine-tuning epochs of each found model (default: --epochs)")
    demo.add_argument("--trials", type=_positive, default=16, help="multi-trial: architectures to train (default: 16)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    demo.add_argument("--verbose", action="store_true", help="show NNI and Lightning logs")

    search = commands.add_parser(
        "search", help="run one search described by an experiment file; write the model, architecture and report",
        description="Run the search of an experiment YAML file (see examples/) and write model.pt, "
                    "architecture.json, report.json and TensorBoard logs to its output directory.")
    search.add_argument("config", help="experiment YAML file")
    group = search.add_mutually_exclusive_group()
    group.add_argument("--target", type=_fraction, default=None,
                       help="cost target as a fraction of the uncompressed model (overrides search.target)")
    group.add_argument("--weight", type=_nonnegative, default=None, help="linear penalty weight λ instead of a target")
    search.add_argument("--out", default=None, help="output directory (default: the file's output)")

    pareto = commands.add_parser(
        "pareto", help="trace the accuracy-vs-cost front with an Optuna outer loop over the cost target",
        description="Run the file's search for many cost targets (an Optuna two-objective study), then write "
                    "front.csv, front.json, front.png and front.html to the output directory and print the front "
                    "and its hypervolume. Stopped runs resume where they were: run the same command again. "
                    "Run the command N times at once (on one or many machines, with a shared pareto.storage) "
                    "to have N workers.")
    pareto.add_argument("config", help="experiment YAML file")
    pareto.add_argument("--trials", type=_positive, default=None, help="completed searches to reach (overrides "
                                                                        "pareto.trials)")
    pareto.add_argument("--storage", default=None, help="Optuna storage URL (overrides pareto.storage; default: "
                                                        "sqlite:///OUTPUT/study.db)")
    pareto.add_argument("--verbose", action="store_true", help="show NNI and Lightning logs and per-epoch progress")

    baseline = commands.add_parser(
        "baseline", help="train the uniform-compression baseline of an experiment file's space",
        description="Train every model of the space's uniform grid (every compressible layer at the same bits, "
                    "sparsity or rank; smallest and largest width) from scratch with the training budget of one "
                    "search, whatever the file's strategy. Writes baseline.csv and baseline.json; models already "
                    "there are kept (run it again to resume). Compares with the searches when the directory holds "
                    "a pareto run's front.json.")
    baseline.add_argument("config", help="experiment YAML file")
    baseline.add_argument("--out", default=None, help="output directory (default: the file's output)")
    baseline.add_argument("--workers", type=_positive, default=None,
                          help="processes training models side by side (default: 2, or 1 on one core); the "
                               "numbers do not depend on it")

    show = commands.add_parser("show", help="print the front of a pareto run",
                               description="Print the front (front.json) of a pareto run directory as a table, and "
                                           "its comparison with the uniform baseline when baseline.json is there.")
    show.add_argument("run", help="a pareto run's output directory (or its front.json)")

    register = commands.add_parser("nnictl-register", help="register the Optuna outer-loop tuner with nnictl",
                                   description="Register nni_udc.pareto.tuner.OptunaTuner with 'nnictl algo register' "
                                               "so an NNI experiment config can use tuner: {name: NAME}.")
    register.add_argument("--name", default="nni_udc_optuna", help="the tuner's name (default: nni_udc_optuna)")
    trial = commands.add_parser("nnictl-trial", help="an nnictl trial: one search with the tuner's parameter",
                                description="Run by nnictl as the trial command: read the tuner's cost target, run "
                                            "the file's search and report accuracy, costs and architecture to NNI.")
    trial.add_argument("config", help="experiment YAML file")

    profile = commands.add_parser("profile", help="time every layer configuration of a space; write a latency target",
                                  description="Time every distinct layer configuration of a space with torch on this "
                                              "CPU and write a hardware-target YAML file whose latency_ms cost reads "
                                              "the table (use it as UDC(hardware='FILE')).")
    profile.add_argument("--space", default="digits", help="registered space name or module:Class (default: digits)")
    profile.add_argument("--input-shape", default=None,
                         help="one sample's input shape, e.g. 3,32,32 (needed for module:Class spaces)")
    profile.add_argument("--out", default="latency.yaml", help="target file to write (default: latency.yaml)")
    profile.add_argument("--threads", type=_positive, default=1, help="torch threads while timing (default: 1)")
    profile.add_argument("--warmup", type=_positive, default=10, help="untimed runs per layer (default: 10)")
    profile.add_argument("--repeats", type=_positive, default=50, help="timed runs per layer; the median is kept "
                                                                       "(default: 50)")

    npu = commands.add_parser("npu-size", help="true Ethos-U encoded weight size of a saved model (Arm's encoder)",
                              description="Encode every weight layer of a model saved with torch.save with Arm's "
                                          "Ethos-U weight encoder and print the bytes per layer and in total.")
    npu.add_argument("model", help="file written by torch.save(model)")
    npu.add_argument("--target", choices=["ethos-u55", "ethos-u65"], default="ethos-u55")
    return parser


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if not shape or any(v < 1 for v in shape):
        raise ValueError(f"--input-shape must be positive integers separated by commas, e.g. 3,32,32, but got {text!r}")
    return shape


def _profile(args: argparse.Namespace) -> None:
    import torch

    from nni_udc.evaluators.latency import measure_space, write_target
    from nni_udc.spaces.registry import resolve_space

    space_cls, shape = resolve_space(args.space)
    if args.input_shape is not None:
        shape = _shape(args.input_shape)
    if shape is None:
        raise ValueError(f"--input-shape is needed for space {args.space!r}")
    entries = measure_space(space_cls(), torch.zeros(1, *shape), threads=args.threads, warmup=args.warmup,
                            repeats=args.repeats, progress=True)
    write_target(entries, args.out, meta={"space": args.space, "threads": args.threads, "warmup": args.warmup,
                                          "repeats": args.repeats, "torch": torch.__version__})
    print(f"timed {len(entries)} layer configurations; wrote {args.out} (use hardware={args.out!r})")


def _search(args: argparse.Namespace) -> None:
    from nni_udc.config import load_config
    from nni_udc.experiment import quiet, run_search

    config = load_config(args.config)
    if config.strategy.baseline:
        _run_baseline(config, out=args.out, workers=None)
        return
    quiet()
    out = args.out or config.output
    print(f"Searching {config.space.name} with {config.strategy.name} on {config.data.name}, "
          f"optimising {config.hardware.cost} ({config.hardware.target}); writing to {out}")
    outcome = run_search(config, target=args.target, weight=args.weight, output=out, progress=sys.stderr.isatty())
    print(f"found: val acc {outcome.accuracy:.3f}, test acc {outcome.test_accuracy:.3f}, "
          f"{outcome.cost} {outcome.costs[outcome.cost]:,.6g} = {outcome.relative_cost:.4f} x the uncompressed model")
    print("architecture: " + ", ".join(f"{k}={v}" for k, v in outcome.sample.items()))
    print(f"wrote {out}/model.pt, architecture.json, report.json in {outcome.seconds:.0f} s")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _comparison(baseline: list[Point], searched: list[Point], *, cost: str, reference: tuple[float, float]) -> str:
    from nni_udc.pareto import compare, format_comparison

    return ("\nThe search against the uniform baseline (test accuracy):\n"
            + format_comparison(compare(baseline, searched, reference=reference), cost=cost))


def _run_baseline(config: ExperimentConfig, *, out: str | None, workers: int | None) -> None:
    from pathlib import Path

    from nni_udc.experiment import quiet, run_baseline
    from nni_udc.pareto import format_front, non_dominated, read_front

    quiet()
    out_dir = Path(out) if out is not None else config.output
    t = config.training
    print(f"Training the uniform baseline of {config.space.name} on {config.data.name} "
          f"({_plural(t.epochs + t.finetune_epochs, 'epoch')} per model, as one search), measuring {config.hardware.cost} "
          f"({config.hardware.target}); writing to {out_dir}")
    outcome = run_baseline(config, output=out_dir, progress=sys.stderr.isatty(), workers=workers)
    front = non_dominated(outcome.points, accuracy="test_accuracy")
    print(f"\n{len(outcome.points)} uniform models ({outcome.trained} trained now, "
          f"{len(outcome.points) - outcome.trained} kept from before) in {outcome.seconds:.0f} s; "
          f"{len(front)} on the test-accuracy front:")
    print(format_front(front, cost=outcome.cost, variable=None, label="model", architecture=True))
    if (out_dir / "front.json").is_file():
        searched = read_front(out_dir / "front.json")
        ref = searched["reference_point"]
        print(_comparison(outcome.points, searched["points"], cost=outcome.cost,
                          reference=(ref["accuracy"], ref["relative_cost"])))
    print("wrote " + ", ".join(str(f) for f in outcome.files.values()))


def _baseline(args: argparse.Namespace) -> None:
    from nni_udc.config import load_config

    _run_baseline(load_config(args.config), out=args.out, workers=args.workers)


def _pareto(args: argparse.Namespace) -> None:
    from nni_udc.config import load_config
    from nni_udc.experiment import quiet, run_pareto, storage_url
    from nni_udc.pareto import format_comparison, format_front

    config = load_config(args.config)
    if args.trials is not None:
        config.pareto.trials = args.trials
    if args.storage is not None:
        config.pareto.storage = args.storage
    if not args.verbose:
        quiet()
    p = config.pareto
    print(f"Tracing the front of {config.name}: {p.trials} searches over {p.variable} in [{p.low:g}, {p.high:g}] "
          f"({p.sampler}), optimising {config.hardware.cost} ({config.hardware.target}); study in {storage_url(config)}"
          + ("; then the uniform baseline" if p.baseline else ""))
    outcome = run_pareto(config, inner_progress=args.verbose)
    print()
    print(format_front(outcome.front, cost=config.hardware.cost or "", variable=p.variable))
    print(f"\n{len(outcome.front)} of {len(outcome.points)} searches on the front; hypervolume {outcome.hypervolume:.4f} "
          f"(reference point: accuracy {p.reference_point[0]:g}, relative cost {p.reference_point[1]:g})")
    if outcome.baseline is not None and outcome.comparison is not None:
        b = outcome.baseline
        print(f"\nUniform baseline: {len(b.points)} models ({b.trained} trained now) in {b.seconds:.0f} s. "
              "The search against it (test accuracy):")
        print(format_comparison(outcome.comparison, cost=config.hardware.cost or ""))
    print("wrote " + ", ".join(str(f) for f in outcome.files.values()))


def _show(args: argparse.Namespace) -> None:
    from pathlib import Path

    from nni_udc.pareto import format_front, read_baseline, read_front

    path = Path(args.run)
    path = path / "front.json" if path.is_dir() else path
    if not path.is_file():
        raise ValueError(f"{path}: no such file; give a pareto run's output directory or its front.json")
    try:
        data = read_front(path)
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: not a front.json written by 'nni-udc pareto': {error}") from None
    print(format_front(data["front"], cost=data["cost"], variable=data["variable"]))
    ref = data["reference_point"]
    print(f"\nhypervolume {data['hypervolume']:.4f} (reference point: accuracy {ref['accuracy']:g}, "
          f"relative cost {ref['relative_cost']:g})")
    baseline_path = path.parent / "baseline.json"
    if baseline_path.is_file():
        try:
            baseline = read_baseline(baseline_path)
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{baseline_path}: not a baseline.json written by 'nni-udc baseline': {error}") from None
        print(_comparison(baseline["points"], data["points"], cost=data["cost"],
                          reference=(ref["accuracy"], ref["relative_cost"])))


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    from nni_udc.config import ConfigError

    failures: tuple[type[Exception], ...] = (ConfigError,)
    if args.command in ("search", "pareto", "baseline"):  # they train: training that diverged ends in one line too
        from nni_udc.evaluators.divergence import DivergedError

        failures = (ConfigError, DivergedError)
    try:
        if args.command == "search":
            _search(args)
            return 0
        if args.command == "pareto":
            _pareto(args)
            return 0
        if args.command == "baseline":
            _baseline(args)
            return 0
    except failures as error:
        parser.exit(2, f"nni-udc {args.command}: error: {error}\n")
    except KeyboardInterrupt:
        parser.exit(130, f"\nnni-udc {args.command}: interrupted; finished searches and baseline models are kept: "
                         "run the same command again to resume\n")
    try:
        if args.command == "show":
            _show(args)
            return 0
        if args.command == "nnictl-register":
            from nni_udc.pareto.nnictl import register_main

            return register_main(["--name", args.name])
        if args.command == "nnictl-trial":
            from nni_udc.pareto.nnictl import trial_main

            return trial_main([args.config])
        if args.command == "profile":
            _profile(args)
            return 0
        if args.command == "npu-size":
            from nni_udc.evaluators.npu import size_main

            return size_main([args.model, "--target", args.target])
    except ValueError as error:
        parser.exit(2, f"nni-udc {args.command}: error: {error}\n")
    if args.command == "demo":
        from nni_udc.cli.demo import run_demo  # heavy imports only when needed

        run_demo(trials=args.trials, epochs=args.epochs, strategy=args.strategy, targets=args.targets,
                 finetune_epochs=args.finetune_epochs, seed=args.seed, out=args.out, verbose=args.verbose)
    return 0


if __name__ == "__main__":
    sys.exit(main())
