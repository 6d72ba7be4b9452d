"""Supernet training step against the plain largest model, at CIFAR scale, on the CPU or a GPU.

For each registered CIFAR space (``resnet-cifar``, ``mobilenetv2-cifar``; :mod:`nni_udc.spaces.registry`) on
synthetic ``3×32×32`` batches: the UDC supernet's training step (forward, cross-entropy + expected-cost penalty,
backward, Adam over weights and architecture parameters; built and stepped as in
``benchmarks/oneshot_speed.py``, whose helpers it imports) against the same step of the space frozen at its
largest architecture (``reference_sample``). Printed as ratios (supernet ÷ plain) with the absolute numbers
beside them:

* step time: median of ``--repeats`` steps after warm-up, the two models interleaved (so that load from other
  processes hits both alike); on CUDA, timed between ``torch.cuda.synchronize()`` calls;
* peak memory of three training steps above the built model: on CUDA ``torch.cuda.max_memory_allocated``;
  on the CPU the growth of the resident set (sampled every millisecond from ``/proc/self/statm``, Linux),
  each model in a fresh process (the allocator keeps what an earlier model freed);
* bytes autograd saves for backward in one forward (deterministic; see ``oneshot_speed._saved_bytes``).

    .venv/bin/python benchmarks/cifar_throughput.py                       # cuda when available, else cpu
    .venv/bin/python benchmarks/cifar_throughput.py --device cpu --batch 64 --repeats 5 --threads 2
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

import nni_udc  # noqa: F401  (first: silences NNI's torch-version warnings)
from nni_udc.experiment import quiet
from nni_udc.spaces.registry import resolve_space
from nni_udc.strategies import UDC, reference_sample

sys.path.insert(0, str(Path(__file__).resolve().parent))
from oneshot_speed import _saved_bytes, _step_fn  # noqa: E402  (the same step as the DigitsSpace benchmark)

SPACES = ("resnet-cifar", "mobilenetv2-cifar")
KINDS = ("plain largest", "supernet")


def build(space_name: str, kind: str, device: torch.device) -> tuple[nn.Module, Callable[[], torch.Tensor] | None]:
    """The plain largest model (no penalty) or the UDC supernet with its expected-cost penalty, on ``device``."""
    space_class, shape = resolve_space(space_name)
    torch.manual_seed(0)
    if kind == "plain largest":
        return space_class().freeze(reference_sample(space_class())).to(device), None
    strategy = UDC(weight=1.0)
    space = space_class()
    strategy.prepare_cost(space, torch.zeros(1, *(shape or (3, 32, 32))))
    supernet = strategy.mutate_model(space).to(device)  # in place: weight-shared mixed ops, alphas as parameters

    def penalty() -> torch.Tensor:
        # The cost tables are CPU tensors; autograd carries the gradient back to the alphas on ``device``.
        probabilities = {label: p.cpu() for label, p in strategy.distribution.probabilities().items()}
        return strategy.penalty.rule(strategy.penalty.expected(probabilities)).to(device)

    return supernet, penalty


def _batch(batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(batch, 3, 32, 32, generator=generator), torch.randint(0, 10, (batch,), generator=generator)
    return x.to(device), y.to(device)


def _model_and_penalty(space_name: str, kind: str, device: torch.device, x: torch.Tensor, y: torch.Tensor
                       ) -> tuple[nn.Module, torch.Tensor, torch.Tensor, Callable[[], torch.Tensor] | None]:
    model, penalty = build(space_name, kind, device)
    return model, x, y, penalty


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_times(space_name: str, device: torch.device, batch: int, repeats: int) -> list[float]:
    """Median step seconds of the plain largest model and of the supernet (interleaved)."""
    x, y = _batch(batch, device)
    steps = [_step_fn(*_model_and_penalty(space_name, kind, device, x, y))[0] for kind in KINDS]
    for step in steps * 3:  # warm-up (also initialises the activation clips)
        step()
    times: list[list[float]] = [[], []]
    for _ in range(repeats):
        for step, out in zip(steps, times):
            _sync(device)
            start = time.perf_counter()
            step()
            _sync(device)
            out.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


class _ResidentPeak:
    """Growth of the resident set while the block runs, sampled every millisecond from ``/proc/self/statm``
    (the process's lifetime peak, ``ru_maxrss``, is often set by importing torch and NNI, not by the steps)."""

    def __enter__(self) -> _ResidentPeak:
        self.before = self.peak = _resident_bytes()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._done.wait(0.001):
            self.peak = max(self.peak, _resident_bytes())

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, _resident_bytes())

    @property
    def growth(self) -> int:
        return self.peak - self.before


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def peak_memory(space_name: str, kind: str, device_name: str, batch: int, threads: int) -> tuple[int, int]:
    """(peak bytes of three training steps above the built model, bytes saved for backward in one forward)."""
    torch.set_num_threads(threads)
    quiet()
    device = torch.device(device_name)
    model, penalty = build(space_name, kind, device)
    x, y = _batch(batch, device)
    step, loss = _step_fn(model, x, y, penalty)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        for _ in range(3):
            step()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - before
    else:
        with _ResidentPeak() as resident:  # no forward has run yet
            for _ in range(3):
                step()
        peak = resident.growth
    return peak, _saved_bytes(loss)  # after the steps: its forward must not raise the peak measured above


def _memories(space_name: str, device: torch.device, batch: int, threads: int) -> list[tuple[int, int]]:
    if device.type == "cuda":  # the peak counter resets, so one process measures both
        return [peak_memory(space_name, kind, "cuda", batch, threads) for kind in KINDS]
    with multiprocessing.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:  # a fresh process per model
        return [pool.apply(peak_memory, (space_name, kind, "cpu", batch, threads)) for kind in KINDS]


def _mib(n: float) -> str:
    return f"{n / 2**20:8.1f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, choices=(64, 128), default=128)
    parser.add_argument("--repeats", type=int, default=20, help="timed steps per model (median)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--spaces", nargs="+", choices=SPACES, default=list(SPACES))
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.exit(2, f"{parser.prog}: error: --device cuda, but torch {torch.__version__} sees no CUDA GPU\n")
    quiet()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {args.threads} threads"
    print(f"device {where}; batch {args.batch} of 3x32x32; median of {args.repeats} steps; "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print(f"{'space':<18} {'model':<14} {'step':>11} {'peak memory':>13} {'saved for backward':>19}")
    for name in args.spaces:
        times = step_times(name, device, args.batch, args.repeats)
        memories = _memories(name, device, args.batch, args.threads)
        for kind, t, (peak, saved) in zip(KINDS, times, memories):
            print(f"{name:<18} {kind:<14} {t * 1e3:8.1f} ms {_mib(peak):>13} {_mib(saved):>19}")
        (t0, t1), ((p0, s0), (p1, s1)) = times, memories
        print(f"{name:<18} {'ratio':<14} {t1 / t0:9.2f} x {p1 / max(p0, 1):11.2f} x {s1 / s0:17.2f} x")


if __name__ == "__main__":
    main()
