"""Time of the differentiable expected-cost penalty per step on a 20-layer space (goal: under 5 ms).

Compares nni-udc's compiled ExpectedCost with NNI 3.0's own expression_expectation on the same
CostProfiler expression, both fed live softmax tensors, forward and backward, in one process.

    .venv/bin/python benchmarks/expected_cost_speed.py                 # memory_bits
    .venv/bin/python benchmarks/expected_cost_speed.py ethos-u55       # a target's optimised cost (Ethos-U bytes)
"""
from __future__ import annotations

import resource
import sys
import time

import nni
import torch
from nni.nas.nn.pytorch import ModelSpace
from nni.nas.oneshot.pytorch.supermodule._expression_utils import expression_expectation
from torch import nn

import nni_udc  # noqa: F401  (first: silences NNI's torch-version warnings)
from nni_udc.evaluators import CostProfiler
from nni_udc.nn import MutableQuantConv2d, bits_choice, channel_bits_choice, sparsity_choice
from nni_udc.strategies import ExpectedCost

LAYERS = 20
_NNI_MEMORY = 4 * 2**30  # memory NNI's expression_expectation may use beyond what the process has mapped (bytes)


def _mapped_bytes() -> int:
    """The process's address space now (Linux: /proc/self/statm), to cap what NNI's enumeration may add to it."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[0]) * resource.getpagesize()


class TwentyLayers(ModelSpace, label_prefix=None):
    def __init__(self):
        super().__init__()
        width = nni.choice("width", [16, 24, 32])
        layers = [MutableQuantConv2d(3, width, 3, padding=1, weight_bits=bits_choice("b0", [2, 4, 8]))]
        for i in range(1, LAYERS - 1):
            layers.append(MutableQuantConv2d(width, width, 3, padding=1, weight_bits=bits_choice(f"b{i}", [2, 4, 8]),
                                             act_bits=8, sparsity=sparsity_choice(f"s{i}", [0.0, 0.5, 0.75])))
        layers.append(MutableQuantConv2d(width, 16, 1, weight_bits=channel_bits_choice("head", 16, [0, 2, 4, 8])))
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x)


def _time_pair(fn, reference, repeats=50):
    """Medians of ``fn`` and ``reference`` timed in turns, so that both see the same load."""
    fn(), reference()  # warm-up
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for out, f in zip(times, (fn, reference)):
            t = time.perf_counter()
            f()
            out.append(time.perf_counter() - t)
    return tuple(sorted(t)[len(t) // 2] for t in times)


def _time(fn, repeats=50):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def main(target: str | None = None) -> None:
    from nni_udc.evaluators.targets import load_target

    space = TwentyLayers()
    cost = load_target(target).cost() if target else "memory_bits"
    cost_name = f"{target} {load_target(target).optimise}" if target else "memory_bits"
    expression = CostProfiler(space, torch.zeros(1, 3, 16, 16), cost).expression
    labels = ExpectedCost(expression).labels
    logits = {label: torch.zeros(len(c.values), requires_grad=True) for label, c in labels.items()}
    compiled = ExpectedCost(expression)

    def ours():
        compiled({label: torch.softmax(a, 0) for label, a in logits.items()}).backward()

    def nni_own():
        probs = {label: dict(zip(labels[label].values, torch.softmax(a, 0))) for label, a in logits.items()}
        value = expression_expectation(expression, probs)
        value.backward()

    def softmax_only():  # the part of every step that is not the cost: the labels' softmax and its backward
        sum(torch.softmax(a, 0).sum() for a in logits.values()).backward()

    t_ours, t_softmax = _time_pair(ours, softmax_only)
    print(f"{LAYERS} layers, {len(labels)} labels (incl. 16 per-channel), {cost_name}, forward + backward, median of 50:")
    print(f"  nni-udc ExpectedCost             {t_ours * 1e3:8.2f} ms   (goal < 5 ms; softmax included)")
    print(f"    the labels' softmax alone        {t_softmax * 1e3:8.2f} ms   (timed in turns with the step; step / "
          f"softmax alone: {t_ours / t_softmax:.2f}x, less sensitive to load)")
    for size in (1, 9):  # tables over one label only; over two labels of 3 values at most
        other = ExpectedCost(expression, max_table_size=size)
        t = _time(lambda other=other: other({label: torch.softmax(a, 0) for label, a in logits.items()}).backward(),
                  repeats=10)
        print(f"    with max_table_size={size}            {t * 1e3:8.2f} ms   (median of 10)")
    limit = resource.getrlimit(resource.RLIMIT_AS)
    try:  # NNI enumerates the joint grid of every product term: on this space that outgrows any memory, so cap it
        resource.setrlimit(resource.RLIMIT_AS, (_mapped_bytes() + _NNI_MEMORY, limit[1]))
        t_nni = _time(nni_own, repeats=3)
        print(f"  NNI expression_expectation        {t_nni * 1e3:8.2f} ms   ({t_nni / t_ours:.0f}x slower)")
    except (Exception, MemoryError) as exc:  # NNI's enumeration may fail or take too long on products of many labels
        print(f"  NNI expression_expectation        failed within {_NNI_MEMORY / 2**30:.0f} GiB more memory: "
              f"{type(exc).__name__}: {exc}")
    finally:
        resource.setrlimit(resource.RLIMIT_AS, limit)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
