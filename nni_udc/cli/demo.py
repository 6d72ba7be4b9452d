"""``nni-udc demo``: a multi-trial NAS over compressible CNNs on scikit-learn's digits, with a results table.

It searches :class:`~nni_udc.spaces.DigitsSpace` with NNI's ``RegularizedEvolution`` (or ``Random``) through
a real ``NasExperiment``, keeps the accuracy-vs-size Pareto front, retrains those architectures and two
baselines (the widest float model and the same model at uniform 8 bits) with one recipe, and prints
accuracy, compressed size and BitOps side by side.
"""
from __future__ import annotations

import json
import logging
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from nni.nas.strategy import Random, RegularizedEvolution

from nni_udc.cli._table import format_table
from nni_udc.data import load_digits_splits
from nni_udc.evaluators import exact_costs
from nni_udc.evaluators.lightning import classification_evaluator
from nni_udc.evaluators.training import train_classifier
from nni_udc.spaces import DigitsSpace
from nni_udc.strategies import TrialResult, run_multitrial

__all__ = ["pareto_front", "run_demo"]

EXAMPLE_INPUT = torch.zeros(1, 1, 8, 8)
WIDEST = {"width": 24, "op": "conv", "b_block": 32, "s_block": 0.0, "rank": 8, "s_dass": 0.5, "b_down": 32,
          "s_down": 0.0, "head_g0": 32, "head_g1": 32}


def pareto_front(results: list[TrialResult], cost: str = "memory_bits") -> list[TrialResult]:
    """Results not dominated in (higher accuracy, lower ``cost``), cheapest first."""
    front = [r for r in results
             if not any(o.accuracy >= r.accuracy and o.costs[cost] <= r.costs[cost]
                        and (o.accuracy > r.accuracy or o.costs[cost] < r.costs[cost]) for o in results)]
    unique = {json.dumps(r.sample, sort_keys=True): r for r in front}
    return sorted(unique.values(), key=lambda r: r.costs[cost])


def _baselines() -> dict[str, tuple[dict[str, Any], torch.nn.Module]]:
    """The widest architecture of the space, in float and at uniform 8 bits (weights and activations)."""
    float_space = DigitsSpace(weight_bits=(32,), sparsity=(0.0,), head_bits=(32,), act_bits=32)
    int8_space = DigitsSpace(weight_bits=(8,), sparsity=(0.0,), head_bits=(8,), act_bits=8)
    int8 = {**WIDEST, "b_block": 8, "b_down": 8, "head_g0": 8, "head_g1": 8}
    return {"float32 (widest)": (WIDEST, float_space.freeze(WIDEST)), "uniform 8-bit": (int8, int8_space.freeze(int8))}


def _describe(sample: dict[str, Any]) -> str:
    op = sample["op"]
    block = {"conv": f"conv w{sample['b_block']} s{sample['s_block']}", "lowrank": f"lowrank r{sample['rank']}",
             "sparse": f"dass s{sample['s_dass']}"}[op]
    return (f"width {sample['width']} | {block} | down w{sample['b_down']} s{sample['s_down']}"
            f" | head w{sample['head_g0']}/{sample['head_g1']}")


def _quiet() -> None:
    warnings.filterwarnings("ignore")
    for name in ("nni", "pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)


def run_demo(*, trials: int = 16, epochs: int = 12, strategy: str = "evolution", seed: int = 0,
             out: str | Path = "runs/demo", verbose: bool = False) -> dict[str, Any]:
    """Run the demo search and print the table; returns what it wrote to ``out/results.json``."""
    if not verbose:
        _quiet()
    started = time.time()
    torch.manual_seed(seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    space = DigitsSpace()
    search = (RegularizedEvolution(population_size=max(2, trials // 2), sample_size=max(1, trials // 4), seed=seed)
              if strategy == "evolution" else Random(seed=seed))
    print(f"Searching {trials} architectures of DigitsSpace with NNI's {type(search).__name__} "
          f"({epochs} epochs each, validation accuracy)...")
    results = run_multitrial(space, classification_evaluator("digits", epochs=epochs, learning_rate=1e-2, seed=seed),
                             search, example_input=EXAMPLE_INPUT, max_trials=trials, workdir=out / "nni-experiments")
    front = pareto_front(results)

    print(f"Retraining the {len(front)} Pareto-front architectures and 2 baselines with one recipe...")
    splits = load_digits_splits(seed=seed)
    rows: list[dict[str, Any]] = []
    models = {**_baselines(), **{f"found #{i + 1}": (r.sample, space.freeze(r.sample)) for i, r in enumerate(front)}}
    for name, (sample, model) in models.items():
        torch.manual_seed(seed)
        scores = train_classifier(model, splits, epochs=epochs, seed=seed)
        costs = exact_costs(model, EXAMPLE_INPUT)
        rows.append({"model": name, "architecture": _describe(sample), **scores, **costs, "sample": sample})
    reference = rows[0]["memory_bits"]
    table = [[r["model"], f"{r['test']:.3f}", f"{r['val']:.3f}", f"{r['memory_bits'] / 8:,.0f}",
              f"{reference / r['memory_bits']:.1f}x", f"{r['bitops'] / 1e6:,.1f}", f"{r['params']:,.0f}"]
             for r in rows]
    print()
    print(format_table(["model", "test acc", "val acc", "size (bytes)", "smaller", "BitOps (M)", "params"], table))
    print()
    for r in rows:
        print(f"  {r['model']:<17} {r['architecture']}")
    elapsed = time.time() - started
    report = {"trials": [asdict(r) for r in results], "table": rows, "seconds": elapsed}
    (out / "results.json").write_text(json.dumps(report, indent=2))
    print(f"\nSize = weight memory after compression (bitmap-sparse or dense, whichever is smaller), "
          f"BitOps = MACs x weight bits x activation bits.\nWrote {out / 'results.json'} in {elapsed:.0f} s.")
    return report
