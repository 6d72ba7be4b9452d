"""Cost of the UDC one-shot search against plain training and against NNI's multi-trial evolution.

Measures, in one run on the CPU (fixed thread count):

1. One supernet training step of ``DigitsSpace`` (batch 64: forward, cross-entropy + expected-cost
   penalty, backward, Adam step over weights and architecture parameters) against the same step of the
   plain largest architecture (``reference_sample``, frozen), as a ratio (goal <= 2.5x). Memory is the
   bytes of the distinct tensor storages autograd saves for backward during one forward
   (``torch.autograd.graph.saved_tensors_hooks``): deterministic, and what dominates training memory
   (goal <= 3x). Times are medians of ``--repeats`` steps after warm-up.
2. The penalty alone per step (expected cost from live probabilities, forward + backward) on the
   20-layer space of ``benchmarks/expected_cost_speed.py``, built through ``UDC.prepare_cost`` (goal < 5 ms).
3. Wall time of a whole UDC search (supernet + export + fine-tune) on DigitsSpace/digits against NNI's
   ``RegularizedEvolution`` (same evaluator, same epochs), timed until the first trial that is at least
   as accurate (validation) and at most as large (``memory_bits``) as the one-shot result.

    .venv/bin/python benchmarks/oneshot_speed.py                 # about 6-8 minutes on 2 cores
    .venv/bin/python benchmarks/oneshot_speed.py --epochs 3 --max-trials 10   # a quick check
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from nni.nas.experiment import NasExperiment, NasExperimentConfig
from nni.nas.strategy import RegularizedEvolution
from torch import nn

import nni_udc  # noqa: F401  (first: silences NNI's torch-version warnings)
from nni_udc.evaluators import exact_costs
from nni_udc.evaluators.lightning import classification_evaluator
from nni_udc.experiment import quiet
from nni_udc.spaces import DigitsSpace
from nni_udc.strategies import UDC, reference_sample, run_multitrial

sys.path.insert(0, str(Path(__file__).resolve().parent))
from expected_cost_speed import TwentyLayers, _time  # noqa: E402  (reuse the 20-layer space)

X1 = torch.zeros(1, 1, 8, 8)
STAMPS: list[tuple[float, float, float]] = []  # (time, val acc, memory_bits) of every trained trial


def _saved_bytes(fn) -> int:
    """Bytes of the distinct storages autograd saves for backward while ``fn`` runs (params included)."""
    storages: dict[int, int] = {}
    alive = []  # keep every saved tensor alive, so that no freed address is reused and miscounted

    def pack(t: torch.Tensor) -> torch.Tensor:
        alive.append(t)
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())


def _step_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor, penalty=None):
    """A training step: forward, CE (+ penalty), backward, Adam step; returns (step, forward-only loss)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)  # weights and (for the supernet) alphas

    def loss() -> torch.Tensor:
        out = nn.functional.cross_entropy(model(x), y)
        return out + penalty() if penalty is not None else out

    def step() -> None:
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    return step, loss


def bench_step(repeats: int) -> None:
    torch.manual_seed(0)
    x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,))
    plain = DigitsSpace().freeze(reference_sample(DigitsSpace()))
    strategy = UDC(weight=1.0)
    space = DigitsSpace()
    strategy.prepare_cost(space, X1)
    supernet = strategy.mutate_model(space)  # in place: weight-shared mixed ops with alphas as parameters

    def penalty() -> torch.Tensor:
        return strategy.penalty.rule(strategy.penalty.expected(strategy.distribution.probabilities()))

    steps = [_step_fn(plain, x, y), _step_fn(supernet, x, y, penalty)]
    for step, _ in steps * 5:  # warm-up (also initialises the activation clips)
        step()
    times: list[list[float]] = [[], []]
    for _ in range(repeats):  # interleaved, so that load from other processes hits both alike
        for step, out in zip(steps, times):
            t = time.perf_counter()
            step[0]()
            out.append(time.perf_counter() - t)
    rows = [(name, statistics.median(t), _saved_bytes(loss))
            for name, t, (_, loss) in zip(("plain largest", "supernet"), times, steps)]
    t_pen = _time(lambda: penalty().backward(), repeats)
    (_, t0, m0), (_, t1, m1) = rows
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores (other processes slow every number)")
    print(f"1. Training step, DigitsSpace, batch 64, {torch.get_num_threads()} threads, median of {repeats}:")
    for name, t, m in rows:
        print(f"   {name:<14} {t * 1e3:8.2f} ms   saved for backward {m / 1024:8.1f} KiB")
    print(f"   ratio          {t1 / t0:8.2f} x  (goal <= 2.5x)   memory {m1 / m0:5.2f} x  (goal <= 3x)")
    print(f"   of which the penalty (fwd+bwd) {t_pen * 1e3:.2f} ms")


def bench_penalty(repeats: int) -> None:
    strategy = UDC(weight=1.0)
    space = TwentyLayers()
    strategy.prepare_cost(space, torch.zeros(1, 3, 16, 16))
    strategy.mutate_model(space)
    t = _time(lambda: strategy.penalty.rule(strategy.penalty.expected(strategy.distribution.probabilities())).backward(), repeats)
    print(f"2. Penalty per step, 20-layer space ({len(strategy.distribution.probabilities())} labels), fwd+bwd, median of {repeats}:"
          f" {t * 1e3:.2f} ms  (goal < 5 ms)")


class _Stamp(pl.Callback):
    """Records when each multi-trial architecture finished training, with its accuracy and size."""

    def on_fit_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        acc = float(trainer.callback_metrics["val_acc"])  # what NNI reports as the final metric
        STAMPS.append((time.perf_counter(), acc, exact_costs(module.model, X1, ["memory_bits"])["memory_bits"]))


def bench_search(args: argparse.Namespace, workdir: Path) -> None:
    evaluator = dict(epochs=args.epochs, learning_rate=1e-2, seed=0)
    torch.manual_seed(0)
    start = time.perf_counter()
    strategy = UDC(weight=args.weight, finetune_epochs=args.finetune_epochs, seed=0, arc_learning_rate=0.05)
    config = NasExperimentConfig("sequential", "raw")
    config.experiment_working_directory = str(workdir / "oneshot")
    experiment = NasExperiment(DigitsSpace(), classification_evaluator("digits", **evaluator), strategy, config)
    experiment.run(debug=False)
    experiment.export_top_models(formatter="instance")
    strategy.finetune()
    t_one = time.perf_counter() - start
    acc, bits = strategy.result.accuracy, strategy.result.costs["memory_bits"]

    torch.manual_seed(0)
    evolution = RegularizedEvolution(population_size=args.population, sample_size=args.sample_size, seed=0)
    start = time.perf_counter()
    results = run_multitrial(DigitsSpace(), classification_evaluator("digits", callbacks=[_Stamp()], **evaluator),
                             evolution, example_input=X1, max_trials=args.max_trials, engine="sequential",
                             workdir=workdir / "evolution", progress=False)
    t_evo = time.perf_counter() - start
    hit = next((i for i, (_, a, m) in enumerate(STAMPS) if a >= acc and m <= bits), None)

    print(f"3. Search on DigitsSpace/digits, {args.epochs} epochs per training, UDC weight {args.weight:g}"
          f" + {args.finetune_epochs} fine-tune epochs:")
    print(f"   UDC one-shot        {t_one:7.1f} s   val acc {acc:.3f}, {bits / 8:,.0f} bytes")
    if hit is None:
        print(f"   RegularizedEvolution not reached in {len(STAMPS)} trials, {t_evo:.1f} s"
              f"  (>= {t_evo / t_one:.1f}x the one-shot time)")
    else:
        t_hit = STAMPS[hit][0] - start
        print(f"   RegularizedEvolution {t_hit:6.1f} s   reached at trial {hit + 1}"
              f" (val acc {STAMPS[hit][1]:.3f}, {STAMPS[hit][2] / 8:,.0f} bytes): {t_hit / t_one:.1f}x the one-shot time")
    best = max(results, key=lambda r: r.accuracy)
    small = [r.accuracy for r in results if r.costs["memory_bits"] <= bits]
    print(f"   evolution's best: val acc {best.accuracy:.3f} at {best.costs['memory_bits'] / 8:,.0f} bytes;"
          f" best at <= one-shot size: {max(small) if small else float('nan'):.3f} ({len(small)} of {len(results)} trials)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30, help="timed steps per measurement (median)")
    parser.add_argument("--epochs", type=int, default=4, help="supernet epochs = epochs per evolution trial")
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--weight", type=float, default=1.0, help="UDC's penalty weight")
    parser.add_argument("--max-trials", type=int, default=20, help="cap of the evolution's trials")
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--sample-size", type=int, default=3)
    parser.add_argument("--skip-search", action="store_true", help="only parts 1 and 2")
    args = parser.parse_args()
    quiet()
    torch.set_num_threads(args.threads)
    bench_step(args.repeats)
    bench_penalty(args.repeats)
    if not args.skip_search:
        with tempfile.TemporaryDirectory() as tmp:
            bench_search(args, Path(tmp))


if __name__ == "__main__":
    main()
