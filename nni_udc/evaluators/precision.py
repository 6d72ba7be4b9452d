"""``training.precision`` for the plain training loops, as Lightning reads the same names for its loops.

The Lightning loops (one-shot search, fine-tune) hand ``precision`` to ``pl.Trainer``. The plain loops
(:func:`~nni_udc.evaluators.training.train_classifier`, the single-path supernet of
:mod:`nni_udc.strategies.single_path`) run each step inside :meth:`Precision.autocast`, scale the loss with
:meth:`Precision.backward` and cast inputs with :meth:`Precision.inputs`:

* ``32-true``: float32, nothing changes;
* ``64-true``: the model and floating inputs in float64;
* ``bf16-mixed``: ``torch.autocast`` with bfloat16 (weights stay float32; no loss scaling);
* ``16-mixed``: ``torch.autocast`` with float16 and a ``GradScaler`` on a GPU; on the CPU, which has no float16
  autocast worth the name, bfloat16 instead, as Lightning 2 does (``accelerator_connector.py``).

Example:
    >>> from torch import nn
    >>> p = Precision.of("bf16-mixed", torch.device("cpu"))
    >>> net = p.model(nn.Linear(4, 2))
    >>> with p.autocast():
    ...     y = net(p.inputs(torch.ones(3, 4)))
    >>> y.dtype, net.weight.dtype
    (torch.bfloat16, torch.float32)
    >>> Precision.of("8-mixed", torch.device("cpu"))
    Traceback (most recent call last):
    ...
    ValueError: precision '8-mixed': the plain training loops take 32-true, 64-true, bf16-mixed or 16-mixed
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["PRECISIONS", "Precision"]

#: the Lightning precision names the plain loops take (those ``training.precision`` allows)
PRECISIONS = ("32-true", "64-true", "bf16-mixed", "16-mixed")


@dataclass
class Precision:
    """How one training loop computes: the autocast dtype (``None``: none), the weights' dtype and a loss scaler."""

    name: str
    device: torch.device
    autocast_dtype: torch.dtype | None = None
    weight_dtype: torch.dtype = torch.float32
    scaler: Any = None  # torch.amp.GradScaler for float16 on a GPU

    @classmethod
    def of(cls, precision: str, device: torch.device) -> Precision:
        """The precision named ``precision`` (Lightning's name) for a loop on ``device``."""
        if precision == "32-true":
            return cls(precision, device)
        if precision == "64-true":
            return cls(precision, device, weight_dtype=torch.float64)
        if precision == "bf16-mixed" or (precision == "16-mixed" and device.type == "cpu"):
            return cls(precision, device, autocast_dtype=torch.bfloat16)
        if precision == "16-mixed":
            return cls(precision, device, autocast_dtype=torch.float16, scaler=torch.amp.GradScaler(device.type))
        raise ValueError(f"precision {precision!r}: the plain training loops take {', '.join(PRECISIONS[:-1])} "
                         f"or {PRECISIONS[-1]}")

    def model(self, module: nn.Module) -> nn.Module:
        """``module`` with its weights in this precision's dtype (float64 for ``64-true``; else unchanged)."""
        return module.to(self.weight_dtype) if self.weight_dtype != torch.float32 else module

    def inputs(self, x: Any) -> Any:
        """A floating tensor in the weights' dtype (autocast casts inside the step); other values as they are."""
        if isinstance(x, torch.Tensor) and x.is_floating_point() and x.dtype != self.weight_dtype:
            return x.to(self.weight_dtype)
        return x

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """The forward pass and loss of one step."""
        if self.autocast_dtype is None:
            yield
            return
        with torch.autocast(self.device.type, dtype=self.autocast_dtype):
            yield

    def backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()``, scaled for float16."""
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """``optimizer.step()``; with float16 the scaler skips a step whose gradients overflowed."""
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)
        self.scaler.update()
