"""How well does a search's supernet rank architectures? Its loss against their accuracy trained alone.

``front_vs_uniform.py`` judges a whole front, and one run of it is one noisy draw: on digits the median size
ratio of one run moved by up to 0.7× when only the rounding of one expression changed
(``front_vs_uniform.md``, session 13). What a search exports is decided by the supernet's loss
(:meth:`nni_udc.strategies.UDC.supernet_loss`): the budget fitter, ``parsimony`` and the ladder all rank scored
architectures by it. This benchmark measures that predictor with much less noise. Per experiment seed it runs one
search at the file's ``search.target`` (no fine-tune, one export), scores every model of the space's uniform
grid with the supernet's loss, and prints the Spearman rank correlation of ``-loss`` with each model's test
accuracy trained alone (the uniform baseline, ``nni-udc baseline``; trained into ``OUT/grid-seed<s>`` or reused
from there): over all models, and over those at or above ``--floor`` test accuracy, where the front lives.

``--variant NAME=JSON`` sets the strategy's fields (``warmup_epochs``, ``temperature``, ``arc_learning_rate``, ...)
and merges everything else into ``strategy.args`` (repeatable; default one variant, the file as it is).
The first variant is the reference: every other one is also shown as the paired difference (same seed, same grid)
with its standard error over the seeds.

    .venv/bin/python benchmarks/supernet_ranking.py examples/udc-digits.yaml --runs 5 --out runs/ranking \\
        --variant mixed='{}' --variant drawn='{"sampled": ["sparsity", "weight_bits"]}'

Not a test: the grids take about 100 s per seed on 2 cores (once), each search about 10 s.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from front_vs_uniform import standard_error  # this script's neighbour (its folder is on sys.path)

from nni_udc._table import format_table
from nni_udc.config import ExperimentConfig, StrategyConfig, load_config
from nni_udc.evaluators.npu_calibration import spearman
from nni_udc.experiment import build_strategy, quiet, run_baseline, run_search


@dataclass
class Ranking:
    variant: str
    seed: int
    spearman: float
    spearman_top: float
    top: int
    export_bits: float
    seconds: float


def rank(config: ExperimentConfig, variant: str, args: dict[str, Any], out: Path, floor: float) -> Ranking:
    grid = run_baseline(config, output=out / f"grid-seed{config.seed}", progress=False).points
    own = {f.name for f in fields(StrategyConfig)} - {"name", "args"}  # the strategy section's fields, not args
    strategy_fields = {k: v for k, v in args.items() if k in own}
    extra = {k: v for k, v in args.items() if k not in own}
    searched = replace(config, training=replace(config.training, finetune_epochs=0),
                       strategy=replace(config.strategy, **strategy_fields,
                                        args={**config.strategy.args, **extra, "exports": 1}))
    strategy = build_strategy(searched)
    started = time.time()
    outcome = run_search(searched, output=out / f"{variant}-seed{config.seed}", logger=False, strategy=strategy)
    losses = [-strategy.supernet_loss(p.architecture) for p in grid]
    tests = [float(p.test_accuracy) for p in grid]
    top = [i for i, t in enumerate(tests) if t >= floor]
    return Ranking(variant, config.seed, spearman(losses, tests),
                   spearman([losses[i] for i in top], [tests[i] for i in top]), len(top),
                   outcome.costs[config.hardware.cost or "memory_bits"], time.time() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path, help="experiment file (one-shot strategy)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=JSON",
                        help="strategy fields to set and strategy.args to merge in, e.g. "
                        "drawn='{\"sampled\": [\"sparsity\"]}' or warm='{\"warmup_epochs\": 3}' (repeatable)")
    parser.add_argument("--runs", type=int, default=3, help="experiment seeds (default: 3)")
    parser.add_argument("--first-seed", type=int, default=0, help="the first experiment seed (default: 0)")
    parser.add_argument("--floor", type=float, default=0.93, help="test accuracy of the grid's top part (default: 0.93)")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: a scratch directory)")
    args = parser.parse_args()
    variants: dict[str, dict[str, Any]] = {}
    for text in args.variant or ["file={}"]:
        name, _, value = text.partition("=")
        try:
            variants[name] = json.loads(value)
        except json.JSONDecodeError as error:
            parser.error(f"--variant {text!r}: the part after '=' must be a JSON object: {error}")
        if not name or not isinstance(variants[name], dict):
            parser.error(f"--variant {text!r}: expected NAME={{...}}, a name and a JSON object")
    if args.runs < 1 or args.first_seed < 0:
        parser.error(f"--runs must be at least 1 and --first-seed at least 0, but got {args.runs} and {args.first_seed}")
    quiet()
    config = load_config(args.config)
    out = args.out if args.out is not None else Path(tempfile.mkdtemp(prefix="supernet-ranking-"))
    rows = []
    for seed in range(args.first_seed, args.first_seed + args.runs):
        for name, extra in variants.items():
            row = rank(replace(config, seed=seed), name, extra, out, args.floor)
            print(f"seed {seed} {name}: Spearman {row.spearman:.3f}, top {row.top} {row.spearman_top:.3f}, "
                  f"export {row.export_bits:,.0f} bits, {row.seconds:.0f} s", flush=True)
            rows.append(row)
    print("\n" + format_table(["variant", "seed", "Spearman (all)", f"Spearman (test acc >= {args.floor:g})",
                               "models", "export", "search s"],
                              [[r.variant, r.seed, f"{r.spearman:.3f}", f"{r.spearman_top:.3f}", r.top,
                                f"{r.export_bits:,.0f}", f"{r.seconds:.0f}"] for r in rows]))
    reference = next(iter(variants))
    summary = []
    for name in variants:
        mine = {r.seed: r for r in rows if r.variant == name}
        base = {r.seed: r for r in rows if r.variant == reference}
        alls, tops = [r.spearman for r in mine.values()], [r.spearman_top for r in mine.values()]
        diffs = [mine[s].spearman_top - base[s].spearman_top for s in mine]
        summary.append([name, len(mine), f"{statistics.mean(alls):.3f} ± {standard_error(alls):.3f}",
                        f"{statistics.mean(tops):.3f} ± {standard_error(tops):.3f}",
                        "reference" if name == reference else
                        f"{statistics.mean(diffs):+.3f} ± {standard_error(diffs):.3f} "
                        f"({sum(d > 0 for d in diffs)} of {len(diffs)} higher)"])
    print(f"\nmean ± standard error over seeds {args.first_seed}-{args.first_seed + args.runs - 1}:")
    print(format_table(["variant", "runs", "Spearman (all)", f"Spearman (>= {args.floor:g})",
                        f"paired difference vs {reference}"], summary))
    print(f"\nruns in {out}")


if __name__ == "__main__":
    main()
