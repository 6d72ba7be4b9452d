"""Is the search worth it? The searched Pareto front against the uniform-compression baseline, per experiment file.

For each experiment file it runs what ``nni-udc pareto`` runs — the Optuna outer loop of one-shot searches,
then the uniform baseline (every compressible layer at the same bits × sparsity or rank, each model trained
with the budget of one search) — into a scratch directory (or ``--out DIR/<name>``), timing the two apart,
and prints, by TEST accuracy:

- per point of the baseline's front (``*``: test accuracy >= 0.95) the smallest searched model at least as
  accurate and the size ratio ``uniform cost / searched cost`` (``0``: no searched model is that accurate);
- the median ratio over the starred points and whether the search is never worse there;
- both hypervolumes (one reference point) and the wall time of the search loop and of the baseline.

    .venv/bin/python benchmarks/front_vs_uniform.py                        # udc-digits and dass-sparse-cell
    .venv/bin/python benchmarks/front_vs_uniform.py examples/udc-digits.yaml --out runs/front-vs-uniform
    .venv/bin/python benchmarks/front_vs_uniform.py examples/udc-digits.yaml --seeds 3   # + mean of 3 retrainings
                                                                           # (nni-udc retrain, retrained.json)
    .venv/bin/python benchmarks/front_vs_uniform.py examples/udc-digits.yaml --runs 3    # 3 whole runs, seeds 0-2

One run's comparison is one draw: on digits' 359 test images the same configuration's median ratio has spanned
0.24× to 1.39× between seeds. ``--runs N`` repeats everything (searches, baseline, comparison) under the
experiment seeds 0..N-1, each run compared with its own baseline as ``nni-udc pareto`` compares, and prints the
mean over the runs: the expected result of one run, with the spread beside it.

Not a test: the numbers depend on the machine, and the runs take minutes (on 2 cores, the main job's loop
about 1¾ minutes with its two worker processes, its baseline about 3, its 3-seed retraining about 3). Results so far:
``benchmarks/front_vs_uniform.md``.
"""
from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from nni_udc._table import format_table
from nni_udc.config import load_config
from nni_udc.experiment import quiet, run_baseline, run_pareto, run_retrain
from nni_udc.pareto import Comparison, format_comparison

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = [ROOT / "examples" / "udc-digits.yaml", ROOT / "examples" / "dass-sparse-cell.yaml"]


@dataclass
class Row:
    name: str
    seed: int
    searches: int
    models: int
    comparison: Comparison
    loop_seconds: float
    baseline_seconds: float
    retrained: Comparison | None = None


def _ratio(value: float | None) -> str:
    if value is None:
        return "none"
    return "inf" if math.isinf(value) else f"{value:.2f}x"


def run(path: Path, out: Path, *, workers: int | None, seeds: int, seed: int | None = None) -> Row:
    """The outer loop, then the baseline, timed apart; then the comparison (and plots) as ``nni-udc pareto`` makes
    them. ``seed``: the experiment seed instead of the file's (searches and baseline trainings; not the data split)."""
    config = load_config(path)
    name = config.name if seed is None else f"{config.name}-seed{seed}"
    config = replace(config, seed=config.seed if seed is None else seed, output=out / name,
                     pareto=replace(config.pareto, baseline=False,
                                    workers=config.pareto.workers if workers is None else workers))
    print(f"\n=== {path.name}, seed {config.seed}: {config.pareto.trials} searches, then the uniform baseline; "
          f"output in {config.output}")
    started = time.time()
    run_pareto(config)
    loop_seconds = time.time() - started
    started = time.time()
    baseline = run_baseline(config, workers=workers)
    baseline_seconds = time.time() - started
    config = replace(config, pareto=replace(config.pareto, baseline=True))
    outcome = run_pareto(config, progress=False)  # both are done: this draws and compares
    if outcome.comparison is None:
        raise RuntimeError("run_pareto with pareto.baseline gives a comparison")
    cost = config.hardware.cost or ""
    print(format_comparison(outcome.comparison, cost=cost))
    retrained = None
    if seeds > 1:
        retrained = run_retrain(config, seeds=seeds, workers=workers).comparison  # writes retrained.json
        print(f"\n--- architectures retrained from scratch with the baseline's recipe, mean over {seeds} seeds ---")
        print(format_comparison(retrained, cost=cost))
    return Row(config.name, config.seed, len(outcome.points), len(baseline.points), outcome.comparison, loop_seconds,
               baseline_seconds, retrained)


def standard_error(values: list[float]) -> float:
    """The standard error of the mean of ``values`` (0 for fewer than two)."""
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0


def _mean_rows(rows: list[Row]) -> list[list[str]]:
    """Per experiment: the mean median ratio and hypervolumes over its runs (± the standard error of the mean), and
    in how many it was never worse. A run's ratio moves by up to 0.7× when only rounding changes
    (``front_vs_uniform.md``), so a difference of means within about two standard errors is not a result."""
    table = []
    for name in dict.fromkeys(r.name for r in rows):
        mine = [r.comparison for r in rows if r.name == name]
        medians = [c.median_ratio for c in mine if c.median_ratio is not None and not math.isinf(c.median_ratio)]
        volumes = [c.search_hypervolume for c in mine]
        table.append([name, len(mine),
                      f"{statistics.mean(medians):.2f}x ± {standard_error(medians):.2f}" if medians else "n/a",
                      f"{min(medians):.2f}x-{max(medians):.2f}x" if medians else "n/a",
                      f"{sum(bool(c.never_worse) for c in mine)} of {len(mine)}",
                      f"{statistics.mean(volumes):.4f} ± {standard_error(volumes):.4f}",
                      f"{statistics.mean(c.baseline_hypervolume for c in mine):.4f}"])
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="*", type=Path, default=DEFAULT, help="experiment files (default: "
                        "examples/udc-digits.yaml examples/dass-sparse-cell.yaml)")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: a scratch directory)")
    parser.add_argument("--workers", type=int, default=None, help="processes running the searches, the baseline's "
                        "and the retraining's trainings (default: as nni-udc pareto and nni-udc baseline choose)")
    parser.add_argument("--seeds", type=int, default=1, help="also retrain both fronts' architectures from scratch "
                        "with this many seeds and compare mean accuracies (default: 1, off)")
    parser.add_argument("--runs", type=int, default=1, help="repeat every run under the experiment seeds 0..N-1 and "
                        "print the mean (default: 1, the file's seed)")
    parser.add_argument("--first-seed", type=int, default=0, help="with --runs: start at this experiment seed "
                        "(--runs 5 --first-seed 5: seeds 5-9, to extend an earlier batch of runs)")
    args = parser.parse_args()
    if args.runs < 1 or args.seeds < 1:
        parser.error(f"--runs and --seeds must be at least 1, but got {args.runs} and {args.seeds}")
    if args.first_seed < 0:
        parser.error(f"--first-seed must be at least 0, but got {args.first_seed}")
    quiet()
    out = args.out if args.out is not None else Path(tempfile.mkdtemp(prefix="front-vs-uniform-"))
    first = args.first_seed
    seeds: list[int | None] = [None] if args.runs == 1 and not first else list(range(first, first + args.runs))
    rows = [run(path, out, workers=args.workers, seeds=args.seeds, seed=seed) for path in args.configs for seed in seeds]
    verdict = {True: "yes", False: "no", None: "n/a"}
    print("\n" + format_table(
        ["experiment", "seed", "searches", "uniform models", "median ratio (acc >= 0.95)", "never worse",
         "HV search", "HV uniform", "loop s", "baseline s"],
        [[r.name, r.seed, r.searches, r.models, _ratio(r.comparison.median_ratio), verdict[r.comparison.never_worse],
          f"{r.comparison.search_hypervolume:.4f}", f"{r.comparison.baseline_hypervolume:.4f}",
          f"{r.loop_seconds:.0f}", f"{r.baseline_seconds:.0f}"] for r in rows]))
    if len(seeds) > 1:
        print(f"\nmean over {args.runs} runs (seeds {first}-{first + args.runs - 1}), each against its own baseline:")
        print(format_table(["experiment", "runs", "median ratio ± SE", "range", "never worse", "HV search ± SE",
                            "HV uniform"],
                           _mean_rows(rows)))
    if args.seeds > 1:
        print(f"\nretrained from scratch, mean over {args.seeds} seeds:")
        print(format_table(["experiment", "median ratio (acc >= 0.95)", "never worse", "HV search", "HV uniform"],
                           [[r.name, _ratio(r.retrained.median_ratio), verdict[r.retrained.never_worse],
                             f"{r.retrained.search_hypervolume:.4f}", f"{r.retrained.baseline_hypervolume:.4f}"]
                            for r in rows if r.retrained is not None]))
    print(f"\nhypervolumes by test accuracy, reference point (0, 1); runs in {out}")


if __name__ == "__main__":
    main()
