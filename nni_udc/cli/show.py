"""``nni-udc show RUN``: the front of a pareto run, checked field by field before it is printed; its comparison with
the uniform baseline, and again on mean accuracies when ``nni-udc retrain`` has retrained its models."""
from __future__ import annotations

import argparse
from pathlib import Path

from nni_udc.cli.run import comparison
from nni_udc.pareto.files import RunFileError

__all__ = ["show_command"]


def show_command(args: argparse.Namespace) -> int:
    from nni_udc.pareto import compare, format_comparison, format_front, read_baseline, read_front
    from nni_udc.pareto.metric import metric_named
    from nni_udc.pareto.retrained import RETRAINED_JSON, complete_seeds, mean_points, read_retrained, retrained_models

    path = Path(args.run)
    path = path / "front.json" if path.is_dir() else path
    if not path.is_file():
        raise RunFileError(f"{path}: no such file; give a pareto run's output directory or its front.json")
    data = read_front(path)  # RunFileError names the file and the field
    metric = metric_named(data.get("metric"))  # accuracy, or PSNR (dB) for super-resolution
    print(format_front(data["front"], cost=data["cost"], variable=data["variable"], metric=metric.name))
    ref = data["reference_point"]
    print(f"\nhypervolume {data['hypervolume']:.4f} (reference point: {metric.word} {metric.amount(ref['accuracy'])}, "
          f"relative cost {ref['relative_cost']:g})")
    baseline_path = path.parent / "baseline.json"
    if baseline_path.is_file():
        baseline = read_baseline(baseline_path)
        print(comparison(baseline["points"], data["points"], cost=data["cost"],
                         reference=(ref["accuracy"], ref["relative_cost"]), metric=metric.name))
        retrained_path = path.parent / RETRAINED_JSON
        if retrained_path.is_file():
            results = read_retrained(retrained_path)["results"]
            uniform, searched = retrained_models(baseline["points"], data["points"])
            seeds = complete_seeds(results, uniform + searched)
            if seeds:
                means = compare(mean_points(uniform, results, seeds), mean_points(searched, results, seeds),
                                reference=(ref["accuracy"], ref["relative_cost"]), metric=metric.name)
                which = "seed 0" if seeds == 1 else f"seeds 0-{seeds - 1}"
                print(f"\nRetrained from scratch (nni-udc retrain, {retrained_path}), mean {metric.word} over {which}:")
                print(format_comparison(means, cost=data["cost"]))
            else:
                print(f"\n{retrained_path}: not every compared model is retrained yet; run 'nni-udc retrain' to finish")
    return 0
