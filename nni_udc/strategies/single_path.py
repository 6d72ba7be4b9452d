"""Single-path ("sandwich") training of a weight-shared supernet: each step trains whole architectures.

A DARTS supernet trains its weights under the *mixture* of every candidate. Scored later one architecture
at a time (the export's candidates, :class:`~nni_udc.strategies.udc.UDC` ``candidates``/``samples``), those
weights were never trained for that one architecture, and low-bit or narrow ones suffer most. Single-path
training (SPOS; BigNAS's sandwich rule) instead sets the architecture parameters to one sample per
forward pass: every step accumulates the gradients of the largest and the smallest architecture and of
``random_samples`` uniformly drawn ones. Small models then also start their fine-tune from weights trained
*as* small models. Measured on ``DigitsSpace`` (README, "Is the search worth it?"): fine-tuned from these
weights, a 9,184-bit model reaches 0.967 test accuracy where 16 epochs from scratch give 0.933.

"Largest" and "smallest" take every numeric label at its largest / smallest candidate; other labels (an
operator choice) are drawn at random, as there is no order on them.

Example:
    >>> import random
    >>> from nni.mutable import Categorical
    >>> choices = {'b': Categorical([2, 4, 8], label='b'), 'op': Categorical(['conv', 'lowrank'], label='op')}
    >>> [s['b'] for s in sandwich(choices, random.Random(0), random_samples=1)]
    [8, 2, 2]
"""
from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from nni.mutable import Categorical
from torch import nn

from nni_udc.evaluators.devices import torch_device
from nni_udc.evaluators.divergence import check_finite, check_loss
from nni_udc.evaluators.precision import Precision
from nni_udc.strategies.architecture import ArchitectureDistribution

__all__ = ["sandwich", "train_single_path"]


def _numeric(values: list[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def sandwich(choices: Mapping[str, Categorical], rng: random.Random, *, random_samples: int = 2) -> list[dict[str, Any]]:
    """The largest, the smallest and ``random_samples`` random architectures (label → value)."""
    def extreme(pick: Any) -> dict[str, Any]:
        return {label: pick(c.values) if _numeric(c.values) else rng.choice(c.values) for label, c in choices.items()}

    return [extreme(max), extreme(min)] + [{label: rng.choice(c.values) for label, c in choices.items()}
                                           for _ in range(random_samples)]


def train_single_path(supernet: nn.Module, distribution: ArchitectureDistribution, loader: Iterable, *,
                      epochs: int, learning_rate: float = 1e-2, random_samples: int = 2, seed: int = 0,
                      progress: bool = False, device: str | torch.device = "auto",
                      criterion: nn.Module | None = None, precision: str = "32-true") -> list[float]:
    """Train the supernet's weights (not its architecture parameters) with the sandwich rule; return the
    mean training loss of each epoch.

    Adam with cosine decay, as :func:`~nni_udc.evaluators.training.train_classifier`. The architecture
    parameters are restored afterwards. The supernet is moved to ``device`` (a torch device or a Lightning
    accelerator name, see :func:`~nni_udc.evaluators.devices.torch_device`) and left there. ``precision`` is
    Lightning's name (``training.precision``, :mod:`nni_udc.evaluators.precision`); the weights end in float32
    either way. A non-finite loss or weight raises :class:`~nni_udc.evaluators.divergence.DivergedError`.
    """
    from tqdm import tqdm

    rng = random.Random(seed)
    torch.manual_seed(seed)
    target = torch_device(device)
    mode = Precision.of(precision, target)
    mode.model(supernet.to(target))
    arch = {id(distribution.logits(label)) for label in distribution.choices}
    weights = [p for p in supernet.parameters() if id(p) not in arch and p.requires_grad]
    optimizer = torch.optim.Adam(weights, lr=learning_rate)
    steps = max(1, epochs * len(loader))  # type: ignore[arg-type]
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    criterion = criterion if criterion is not None else nn.CrossEntropyLoss()  # super-resolution: L1
    saved = distribution.state()
    losses = []
    supernet.train()
    try:
        for epoch in tqdm(range(epochs), desc="supernet (single-path)", unit="epoch", disable=not progress):
            total, count = 0.0, 0
            for step, (x, y) in enumerate(loader):
                x, y = mode.inputs(x.to(target, non_blocking=True)), mode.inputs(y.to(target, non_blocking=True))
                optimizer.zero_grad()
                samples = sandwich(distribution.choices, rng, random_samples=random_samples)
                for sample in samples:
                    distribution.set(sample)
                    with mode.autocast():
                        loss = criterion(supernet(x), y)
                    check_loss(loss, where=f"supernet epoch {epoch}, step {step}")
                    mode.backward(loss / len(samples))
                    total += float(loss.detach()) / len(samples)
                mode.step(optimizer)
                schedule.step()
                count += 1
            losses.append(total / max(count, 1))
        check_finite(supernet, where=f"supernet, end of epoch {epochs - 1}")
    finally:
        if mode.weight_dtype != torch.float32:  # 64-true: the search and its files take float32 weights
            supernet.float()
        distribution.restore(saved)
    return losses
