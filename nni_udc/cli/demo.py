"""``nni-udc demo``: compression-aware NAS on scikit-learn's digits, with a results table.

By default it runs the one-shot :class:`~nni_udc.strategies.UDC` search over :class:`~nni_udc.spaces.DigitsSpace`
through a real ``NasExperiment``, once per memory target (a fraction of the widest float model's size):
each search trains the weight-shared supernet, exports the architecture that fits the target with its
trained weights and fine-tunes it quantisation-aware. With ``--strategy evolution|random`` it runs NNI's
multi-trial search instead and retrains its accuracy-vs-size Pareto front. Either way two baselines (the
widest float model and the same model at uniform 8 bits) are trained with one recipe, and accuracy,
compressed size and BitOps are printed side by side. Each search is kept as a
:class:`~nni_udc.pareto.record.TrialRecord` (``trials`` of ``results.json``), as ``nni-udc pareto`` keeps its
trials.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from nni.nas.experiment import NasExperiment, NasExperimentConfig
from nni.nas.strategy import Random, RegularizedEvolution

from nni_udc._table import format_table
from nni_udc.data import load_digits_splits
from nni_udc.evaluators import exact_costs
from nni_udc.evaluators.lightning import classification_evaluator
from nni_udc.evaluators.training import accuracy, train_classifier
from nni_udc.experiment import quiet
from nni_udc.pareto import TrialRecord, non_dominated
from nni_udc.spaces import DigitsSpace
from nni_udc.strategies import UDC, run_multitrial

__all__ = ["pareto_front", "run_demo"]

#: the cost the demo's targets, front and relative costs are about
COST = "memory_bits"

EXAMPLE_INPUT = torch.zeros(1, 1, 8, 8)
WIDEST = {"width": 24, "b_stem": 32, "op": "conv", "b_block": 32, "s_block": 0.0, "rank": 8, "s_dass": 0.5, "b_down": 32,
          "s_down": 0.0, "head_g0": 32, "head_g1": 32}


def pareto_front(records: list[TrialRecord]) -> list[TrialRecord]:
    """The records not dominated in (higher accuracy, lower relative cost), cheapest first
    (:func:`~nni_udc.pareto.non_dominated`; records are numbered in order).

    Example:
        >>> reference = {"memory_bits": 100.0}
        >>> records = [_record(i, {"w": w}, acc, {"memory_bits": bits}, reference)
        ...            for i, (w, acc, bits) in enumerate([(8, 0.9, 40.0), (4, 0.8, 50.0), (2, 0.7, 10.0)])]
        >>> [(r.architecture, r.relative_cost) for r in pareto_front(records)]
        [({'w': 2}, 0.1), ({'w': 8}, 0.4)]
    """
    by_number = {r.number: r for r in records}
    return [by_number[p.number] for p in non_dominated([r.point() for r in records])]


def _record(number: int, sample: dict[str, Any], accuracy: float, costs: dict[str, float],
            reference_costs: dict[str, float], **more: Any) -> TrialRecord:
    """One search of the demo; its relative cost is its :data:`COST` as a fraction of the reference's."""
    return TrialRecord(number=number, accuracy=accuracy, relative_cost=costs[COST] / reference_costs[COST],
                       costs=dict(costs), reference_costs=dict(reference_costs), cost=COST, architecture=dict(sample),
                       **more)


def _baselines() -> dict[str, tuple[dict[str, Any], torch.nn.Module]]:
    """The widest architecture of the space, in float and at uniform 8 bits (weights and activations)."""
    float_space = DigitsSpace(weight_bits=(32,), sparsity=(0.0,), head_bits=(32,), act_bits=32, stem_bits=(32,))
    int8_space = DigitsSpace(weight_bits=(8,), sparsity=(0.0,), head_bits=(8,), act_bits=8, stem_bits=(8,))
    int8 = {**WIDEST, "b_stem": 8, "b_block": 8, "b_down": 8, "head_g0": 8, "head_g1": 8}
    return {"float32 (widest)": (WIDEST, float_space.freeze(WIDEST)), "uniform 8-bit": (int8, int8_space.freeze(int8))}


def _describe(sample: dict[str, Any]) -> str:
    op = sample["op"]
    block = {"conv": f"conv w{sample['b_block']} s{sample['s_block']}", "lowrank": f"lowrank r{sample['rank']}",
             "sparse": f"dass s{sample['s_dass']}"}[op]
    return (f"width {sample['width']} | stem w{sample['b_stem']} | {block} | down w{sample['b_down']} s{sample['s_down']}"
            f" | head w{sample['head_g0']}/{sample['head_g1']}")


def _one_shot(targets: list[float], epochs: int, finetune_epochs: int, seed: int,
              out: Path) -> list[tuple[TrialRecord, torch.nn.Module]]:
    """One UDC search per memory target; returns each search's record and its fine-tuned model."""
    found = []
    for i, target in enumerate(targets):
        started = time.time()
        print(f"  UDC search {i + 1}/{len(targets)}: memory target {target:g} x float "
              f"({epochs} epochs supernet, {finetune_epochs} epochs fine-tune)...", flush=True)
        torch.manual_seed(seed)
        strategy = UDC(cost=COST, target=target, weight=0.0, arc_learning_rate=0.05, finetune_epochs=finetune_epochs,
                       seed=seed)
        config = NasExperimentConfig("sequential", "raw")
        config.experiment_working_directory = str((out / "nni-experiments").resolve())
        evaluator = classification_evaluator("digits", epochs=epochs, learning_rate=1e-2, seed=seed)
        experiment = NasExperiment(DigitsSpace(), evaluator, strategy, config)
        experiment.run(debug=False)
        experiment.export_top_models(formatter="instance")
        accuracy = strategy.finetune()
        result = strategy.result
        record = _record(i, result.sample, accuracy, result.costs, result.reference_costs, variable="target",
                         value=target, seconds=time.time() - started)
        found.append((record, result.model))
    return found


def run_demo(*, trials: int = 16, epochs: int = 12, strategy: str = "udc", targets: tuple[float, ...] = (0.03, 0.06, 0.12),
             finetune_epochs: int | None = None, seed: int = 0, out: str | Path = "runs/demo",
             verbose: bool = False) -> dict[str, Any]:
    """Run the demo search and print the table; returns what it wrote to ``out/results.json``."""
    with quiet(enabled=not verbose):
        return _demo(trials=trials, epochs=epochs, strategy=strategy, targets=targets, finetune_epochs=finetune_epochs,
                     seed=seed, out=Path(out))


def _demo(*, trials: int, epochs: int, strategy: str, targets: tuple[float, ...], finetune_epochs: int | None,
          seed: int, out: Path) -> dict[str, Any]:
    started = time.time()
    torch.manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    space = DigitsSpace()
    splits = load_digits_splits(seed=seed)
    if strategy == "udc":
        print(f"Searching DigitsSpace with the one-shot UDC strategy, {len(targets)} memory targets...")
        searched = _one_shot(list(targets), epochs, finetune_epochs or epochs, seed, out)
        records = [record for record, _ in searched]
        found = {f"found @{r.value:g}": (r.architecture, model) for r, model in searched}
    else:
        search = (RegularizedEvolution(population_size=max(2, trials // 2), sample_size=max(1, trials // 4), seed=seed)
                  if strategy == "evolution" else Random(seed=seed))
        print(f"Searching {trials} architectures of DigitsSpace with NNI's {type(search).__name__} "
              f"({epochs} epochs each, validation accuracy)...")
        results = run_multitrial(space, classification_evaluator("digits", epochs=epochs, learning_rate=1e-2, seed=seed),
                                 search, example_input=EXAMPLE_INPUT, max_trials=trials, workdir=out / "nni-experiments")
        reference = exact_costs(_baselines()["float32 (widest)"][1], EXAMPLE_INPUT)
        records = [_record(i, r.sample, r.accuracy, r.costs, reference) for i, r in enumerate(results)]
        found = {f"found #{i + 1}": (r.architecture, space.freeze(r.architecture))
                 for i, r in enumerate(pareto_front(records))}

    print(f"Training the 2 baselines{'' if strategy == 'udc' else f' and retraining the {len(found)} found architectures'}"
          " with one recipe...")
    rows: list[dict[str, Any]] = []
    for name, (sample, model) in {**_baselines(), **found}.items():
        torch.manual_seed(seed)
        if strategy == "udc" and name in found:  # already fine-tuned from the supernet's weights
            scores = {"val": accuracy(model, splits.val), "test": accuracy(model, splits.test)}
        else:
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
    report = {"strategy": strategy, "trials": [asdict(r) for r in records], "table": rows, "seconds": elapsed}
    (out / "results.json").write_text(json.dumps(report, indent=2))
    print(f"\nSize = weight memory after compression (bitmap-sparse or dense, whichever is smaller), "
          f"BitOps = MACs x weight bits x activation bits.\nWrote {out / 'results.json'} in {elapsed:.0f} s.")
    return report
