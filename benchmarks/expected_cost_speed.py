"""Time of the differentiable expected-cost penalty per step on a 20-layer space (goal: under 5 ms).

Compares nni-udc's compiled ExpectedCost with NNI 3.0's own expression_expectation on the same
CostProfiler expression, both fed live softmax tensors, forward and backward, in one process.

    .venv/bin/python benchmarks/expected_cost_speed.py                 # memory_bits
    .venv/bin/python benchmarks/expected_cost_speed.py ethos-u55       # a target's optimised cost (Ethos-U bytes)
"""
from __future__ import annotations

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

    t_ours = _time(ours)
    print(f"{LAYERS} layers, {len(labels)} labels (incl. 16 per-channel), {cost_name}, forward + backward, median of 50:")
    print(f"  nni-udc ExpectedCost             {t_ours * 1e3:8.2f} ms   (goal < 5 ms)")
    for joint in (1, 2):
        other = ExpectedCost(expression, max_joint_labels=joint)
        t = _time(lambda other=other: other({label: torch.softmax(a, 0) for label, a in logits.items()}).backward())
        print(f"    with max_joint_labels={joint}          {t * 1e3:8.2f} ms")
    try:
        t_nni = _time(nni_own, repeats=3)
        print(f"  NNI expression_expectation        {t_nni * 1e3:8.2f} ms   ({t_nni / t_ours:.0f}x slower)")
    except Exception as exc:  # NNI's enumeration may fail or take too long on products of many labels
        print(f"  NNI expression_expectation        failed: {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
