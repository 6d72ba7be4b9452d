"""Which torch device a training loop uses, from Lightning's accelerator names (``training.accelerator``).

The Lightning loops (one-shot search, fine-tune) hand the names to ``pl.Trainer``; the plain loops
(single-path supernet, :func:`~nni_udc.evaluators.training.train_classifier`) move the model and batches to
:func:`torch_device`. Both read ``auto`` the same way, so a file trains on the GPU when there is one.
"""
from __future__ import annotations

import torch

__all__ = ["DeviceUnavailable", "torch_device"]


class DeviceUnavailable(ValueError):
    """An accelerator (or a number of devices) that this machine does not have."""


def _mps() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def torch_device(accelerator: str | torch.device = "auto", devices: int = 1) -> torch.device:
    """The device of ``accelerator``: ``auto`` is cuda when available, then mps, else cpu; ``gpu`` is cuda.

    Raises :class:`DeviceUnavailable` (not a torch error from deep inside a step) when the machine lacks it.

    Example:
        >>> torch_device("cpu")
        device(type='cpu')
        >>> torch_device("auto").type in ("cpu", "cuda", "mps")
        True
    """
    if isinstance(accelerator, torch.device):
        return accelerator
    name = "cuda" if accelerator == "gpu" else accelerator
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if _mps() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise DeviceUnavailable(f"accelerator {accelerator!r} needs a CUDA GPU, but torch {torch.__version__} "
                                    f"sees none (torch.cuda.is_available() is False); use 'auto' or 'cpu'")
        if devices > torch.cuda.device_count():
            raise DeviceUnavailable(f"{devices} devices asked for, but torch sees {torch.cuda.device_count()} "
                                    f"CUDA GPU(s)")
        return torch.device("cuda")
    if name == "mps":
        if not _mps():
            raise DeviceUnavailable(f"accelerator 'mps' needs Apple's Metal backend, which torch "
                                    f"{torch.__version__} does not have here; use 'auto' or 'cpu'")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise DeviceUnavailable(f"unknown accelerator {accelerator!r}: one of auto, cpu, cuda, gpu, mps")
