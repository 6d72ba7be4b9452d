"""``nni-udc profile`` (a latency target measured on this CPU) and ``nni-udc npu-size`` (Arm's encoder)."""
from __future__ import annotations

import argparse

__all__ = ["npu_size_command", "profile_command"]


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if not shape or any(v < 1 for v in shape):
        raise ValueError(f"--input-shape must be positive integers separated by commas, e.g. 3,32,32, but got {text!r}")
    return shape


def profile_command(args: argparse.Namespace) -> int:
    import torch

    from nni_udc.evaluators.latency import measure_space, write_target
    from nni_udc.spaces.registry import resolve_space

    space_cls, shape = resolve_space(args.space)
    if args.input_shape is not None:
        shape = _shape(args.input_shape)
    if shape is None:
        raise ValueError(f"--input-shape is needed for space {args.space!r}")
    entries = measure_space(space_cls(), torch.zeros(1, *shape), threads=args.threads, warmup=args.warmup,
                            repeats=args.repeats, progress=True)
    write_target(entries, args.out, meta={"space": args.space, "threads": args.threads, "warmup": args.warmup,
                                          "repeats": args.repeats, "torch": torch.__version__})
    print(f"timed {len(entries)} layer configurations; wrote {args.out} (use hardware={args.out!r})")
    return 0


def npu_size_command(args: argparse.Namespace) -> int:
    """True encoded weight bytes of a saved model, per layer and in total."""
    from nni_udc.evaluators.npu import npu_encoded_size
    from nni_udc.export.load import load_model

    # weights_only=True, and only torch/torchvision/nni/nni_udc module classes: a hostile pickle is refused unread
    # (ModelFileError, a ValueError: one line, status 2)
    model = load_model(args.model)
    sizes = npu_encoded_size(model, args.target)
    for name, size in sizes.items():
        print(f"{name or '(model)':<30} {size:>10,} B")
    print(f"{'total':<30} {sum(sizes.values()):>10,} B  ({args.target}, Arm's weight encoder)")
    return 0
