"""The one test space with every module: shared by the profiler, expected-cost and UDC tests.

A cost formula, NNI's profilers, the expected cost and the supernet must all agree on the same structures, so they are
tested on one space rather than on three that each miss something.
"""
from __future__ import annotations

import random
from collections.abc import Callable

import nni
import torch
from nni.nas.nn.pytorch import LayerChoice, ModelSpace, MutableBatchNorm2d, MutableConv2d, Repeat
from torch import nn

from nni_udc.nn import (
    MutableLowRankConv2d,
    MutableLowRankLinear,
    MutableQuantConv2d,
    MutableQuantLinear,
    MutableSparseConv2d,
    MutableSparseLinear,
    act_bits_choice,
    bits_choice,
    channel_bits_choice,
    rank_choice,
    sparsity_choice,
)

__all__ = ["CHANNEL_GROUPS", "EveryModule", "keeps_a_channel"]

CHANNEL_GROUPS = [f"ch_g{g}" for g in range(4)]
"""The labels of ``q2``'s per-channel bits (8 channels in groups of 2); 0 bits removes a group."""


class EveryModule(ModelSpace, label_prefix=None):
    """Every nni-udc module and the NNI mutables that change shapes and structure.

    NNI's own mutable conv and batch norm under a width choice; quantised, sparse and low-rank convs and linears;
    per-channel bits whose removed channels feed the next layer (``q2`` → ``q3``, stride 2); a ``LayerChoice`` with an
    ``Identity`` candidate; a ``Repeat``; a layer with no choice (``head2``); and tied labels (``b_tied`` on two layers,
    ``b_op`` on both compressed candidates of the ``LayerChoice``).
    """

    def __init__(self) -> None:
        super().__init__()
        width = nni.choice("width", [4, 8])
        self.stem = nn.Sequential(MutableConv2d(1, width, 3, padding=1), MutableBatchNorm2d(width), nn.ReLU())
        self.q1 = MutableQuantConv2d(width, 8, 3, padding=1, weight_bits=bits_choice("b_tied", [2, 8]),
                                     sparsity=sparsity_choice("s1", [0.0, 0.5]), act_bits=act_bits_choice("a1", [4, 8]))
        bits = channel_bits_choice("ch", 8, [0, 4, 8], group_size=2)
        self.q2 = MutableQuantConv2d(8, 8, 3, stride=2, padding=1, weight_bits=bits)
        self.q3 = MutableQuantConv2d(8, 8, 1, weight_bits=bits_choice("b_tied", [2, 8]), in_channel_bits=bits)
        self.choice = LayerChoice({
            "lowrank": MutableLowRankConv2d(8, 8, 3, padding=1, rank=rank_choice("r", [2, 4], max_rank=8),
                                            weight_bits=bits_choice("b_op", [4, 8])),
            "sparse": MutableSparseConv2d(8, 8, 3, padding=1, sparsity=sparsity_choice("s2", [0.5, 0.75]),
                                          weight_bits=bits_choice("b_op", [4, 8])),
            "skip": nn.Identity(),
        }, label="op")
        self.blocks = Repeat(lambda i: nn.Sequential(
            MutableQuantConv2d(8, 8, 3, padding=1, bias=False, act_bits=8, weight_bits=bits_choice(f"b_rep{i}", [4, 8])),
            nn.ReLU(),
        ), (1, 2), label="depth")
        self.fc = MutableSparseLinear(8, 8, sparsity=sparsity_choice("s3", [0.0, 0.5]))
        self.head = MutableLowRankLinear(8, 3, rank=rank_choice("r_head", [1, 3], max_rank=3))
        self.head2 = MutableQuantLinear(3, 3, weight_bits=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.q3(torch.relu(self.q2(torch.relu(self.q1(self.stem(x))))))
        x = self.blocks(self.choice(x))
        return self.head2(self.head(torch.relu(self.fc(x.mean((2, 3))))))


def keeps_a_channel(sample: dict) -> bool:
    """Whether ``sample`` keeps a channel of ``q2``: with every group at 0 bits there is no model to freeze."""
    return any(sample[label] for label in CHANNEL_GROUPS)


def random_samples(space: ModelSpace, n: int, *, seed: int = 0,
                   keep: Callable[[dict], bool] = lambda sample: True) -> list[dict]:
    """``n`` samples of ``space`` drawn uniformly (seeded), keeping those ``keep`` accepts (e.g. a sample with
    every channel of a per-channel layer removed is not a model)."""
    labels = space.simplify()
    rng = random.Random(seed)
    out: list[dict] = []
    while len(out) < n:
        sample = {label: rng.choice(m.values) for label, m in labels.items()}
        if keep(sample):
            out.append(sample)
    return out
