"""``nni-udc search``, ``pareto``, ``baseline`` and ``retrain``: read the file with the command line's overrides, check the
space, strategy, output directory and storage (:mod:`nni_udc.cli._preflight`), then run."""
from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from nni_udc.cli._preflight import check_search, check_storage, output_directory
from nni_udc.config import ExperimentConfig, ParetoConfig, check_pareto, load_config

if TYPE_CHECKING:  # annotations only: the commands import what they run when they run
    from nni_udc.pareto import Point

__all__ = ["baseline_command", "comparison", "pareto_command", "retrain_command", "search_command"]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def comparison(baseline: list[Point], searched: list[Point], *, cost: str, reference: tuple[float, float],
               metric: str = "accuracy") -> str:
    from nni_udc.pareto import compare, format_comparison
    from nni_udc.pareto.metric import metric_named

    return (f"\nThe search against the uniform baseline (test {metric_named(metric).word}):\n"
            + format_comparison(compare(baseline, searched, reference=reference, metric=metric), cost=cost))


def search_command(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {}
    if args.out is not None:
        overrides["output"] = args.out
    if args.target is not None:
        overrides["search.target"] = args.target
    if args.weight is not None:  # a weight alone: a λ-only search (the file's target no longer applies)
        overrides.update({"search.weight": args.weight, "search.target": None})
    config = load_config(args.config, overrides)
    if config.strategy.baseline:
        return _run_baseline(config, workers=None)
    from nni_udc.experiment import distributed_rank, ladder_directory, quiet, run_search
    from nni_udc.pareto.metric import metric_of_data

    check_search(config)
    out = output_directory(config.output)
    # training.devices > 1: Lightning runs this command again for each other rank; only the first one reports
    primary = distributed_rank() == 0
    if primary:
        print(f"Searching {config.space.name} with {config.strategy.name} on {config.data.name}, "
              f"optimising {config.hardware.cost} ({config.hardware.target}); writing to {out}")
    with quiet():
        outcome = run_search(config, output=out, progress=sys.stderr.isatty() and primary)
    if not primary:
        return 0
    m = metric_of_data(config.data.name)  # accuracy, or PSNR (dB) for super-resolution
    print(f"found: {m.header('val')} {m.text(outcome.accuracy)}, {m.header('test')} {m.text(outcome.test_accuracy)}, "
          f"{outcome.cost} {outcome.costs[outcome.cost]:,.6g} = {outcome.relative_cost:.4f} x the uncompressed model")
    print("architecture: " + ", ".join(f"{k}={v}" for k, v in outcome.sample.items()))
    for k, other in enumerate(outcome.ladder, 1):  # UDC's exports > 1: the cheaper models beside it
        print(f"cheaper export {k} ({ladder_directory(out, k)}): {m.header('val')} {m.text(other.accuracy)}, "
              f"{m.header('test')} {m.text(other.test_accuracy)}, {other.cost} {other.costs[other.cost]:,.6g} = "
              f"{other.relative_cost:.4f} x")
    print(f"wrote {out}/model.pt (and baked: model.pt2, model.state_dict.pt, model.record.json), architecture.json, "
          f"report.json in {outcome.seconds:.0f} s; deploy with: nni-udc export {out}")
    return 0


def _run_baseline(config: ExperimentConfig, *, workers: int | None) -> int:
    from nni_udc.experiment import baseline_epochs, quiet, run_baseline
    from nni_udc.pareto import format_front, non_dominated, read_front
    from nni_udc.pareto.metric import metric_of_data

    check_pareto(config, "nni-udc baseline")  # one training device, as the front's searches
    check_search(config)
    metric = metric_of_data(config.data.name)
    out_dir = output_directory(config.output)
    print(f"Training the uniform baseline of {config.space.name} on {config.data.name} "
          f"({_plural(baseline_epochs(config), 'epoch')} per model, as one search), measuring "
          f"{config.hardware.cost} ({config.hardware.target}); writing to {out_dir}")
    with quiet():
        outcome = run_baseline(config, output=out_dir, progress=sys.stderr.isatty(), workers=workers)
    front = non_dominated(outcome.points, accuracy="test_accuracy")
    print(f"\n{len(outcome.points)} uniform models ({outcome.trained} trained now, "
          f"{len(outcome.points) - outcome.trained} kept from before) in {outcome.seconds:.0f} s; "
          f"{len(front)} on the test-{metric.word} front:")
    print(format_front(front, cost=outcome.cost, variable=None, label="model", architecture=True, metric=metric.name))
    if (out_dir / "front.json").is_file():
        searched = read_front(out_dir / "front.json")
        ref = searched["reference_point"]
        print(comparison(outcome.points, searched["points"], cost=outcome.cost,
                         reference=(ref["accuracy"], ref["relative_cost"]), metric=metric.name))
    print("wrote " + ", ".join(str(f) for f in outcome.files.values()))
    return 0


def baseline_command(args: argparse.Namespace) -> int:
    return _run_baseline(load_config(args.config, {"output": args.out} if args.out is not None else {}),
                         workers=args.workers)


def retrain_command(args: argparse.Namespace) -> int:
    from nni_udc.experiment import baseline_epochs, quiet, run_retrain
    from nni_udc.pareto import format_comparison

    config = load_config(args.config, {"output": args.out} if args.out is not None else {})
    check_pareto(config, "nni-udc retrain")  # one training device, as the baseline's models
    out = config.output  # read, not made: run_retrain says which file of a finished run is missing
    print(f"Retraining the searched and uniform front models of {out} from scratch under seeds 0-{args.seeds - 1} "
          f"({_plural(baseline_epochs(config), 'epoch')} each, as the uniform baseline)")
    with quiet():
        outcome = run_retrain(config, seeds=args.seeds, output=out, progress=sys.stderr.isatty(), workers=args.workers)
    print(f"\n{outcome.trained} trainings now ({_plural(len(outcome.searched), 'searched model')}, "
          f"{_plural(len(outcome.uniform), 'uniform front model')}) in {outcome.seconds:.0f} s. The search against "
          f"the uniform baseline, mean test accuracy over {_plural(outcome.seeds, 'seed')}:")
    print(format_comparison(outcome.comparison, cost=config.hardware.cost or ""))
    print(f"wrote {outcome.path}")
    return 0


def how_chosen(pareto: ParetoConfig) -> str:
    """How the outer loop picks its values, for the header line: the ``initial`` log-spaced ones, then the sampler.

    Example:
        >>> how_chosen(ParetoConfig(trials=10, initial=10))
        'log-spaced'
        >>> how_chosen(ParetoConfig(trials=10, initial=5, sampler="tpe"))
        '5 log-spaced, then tpe'
    """
    if pareto.initial >= pareto.trials:
        return "log-spaced"
    return f"{pareto.initial} log-spaced, then {pareto.sampler}"


def pareto_command(args: argparse.Namespace) -> int:
    from nni_udc.config import ConfigError
    from nni_udc.experiment import quiet, run_pareto, storage_url
    from nni_udc.pareto import format_comparison, format_front
    from nni_udc.pareto.front import count_text
    from nni_udc.pareto.metric import metric_of_data

    overrides = {key: value for key, value in (("pareto.trials", args.trials), ("pareto.storage", args.storage),
                                               ("pareto.workers", args.workers)) if value is not None}
    config = load_config(args.config, overrides)
    if not config.strategy.one_shot:  # before anything is built or written
        raise ConfigError(f"{config.path}: strategy.name: the outer loop varies the one-shot search's cost target; "
                          f"it must be one-shot, but got {config.strategy.name!r} (use 'nni-udc search' for "
                          f"multi-trial strategies, 'nni-udc baseline' for the uniform grid)")
    check_pareto(config)  # one training device
    check_search(config)
    output_directory(config.output)
    check_storage(storage_url(config))
    p, metric = config.pareto, metric_of_data(config.data.name)
    print(f"Tracing the front of {config.name}: {p.trials} searches over {p.variable} in [{p.low:g}, {p.high:g}] "
          f"({how_chosen(p)}), optimising {config.hardware.cost} ({config.hardware.target}); study in {storage_url(config)}"
          + ("; then the uniform baseline" if p.baseline else ""))
    with quiet(enabled=not args.verbose):
        outcome = run_pareto(config, inner_progress=args.verbose)
    print()
    print(format_front(outcome.front, cost=config.hardware.cost or "", variable=p.variable, metric=metric.name))
    print(f"\n{len(outcome.front)} of {count_text(outcome.points)} on the front; hypervolume {outcome.hypervolume:.4f} "
          f"(reference point: {metric.word} {metric.amount(p.reference_point[0])}, relative cost {p.reference_point[1]:g})")
    if outcome.baseline is not None and outcome.comparison is not None:
        b = outcome.baseline
        print(f"\nUniform baseline: {len(b.points)} models ({b.trained} trained now) in {b.seconds:.0f} s. "
              f"The search against it (test {metric.word}):")
        print(format_comparison(outcome.comparison, cost=config.hardware.cost or ""))
        print(f"(one training of each model; for mean accuracies over 3 seeds: nni-udc retrain {config.path})")
    print("wrote " + ", ".join(str(f) for f in outcome.files.values()))
    return 0
