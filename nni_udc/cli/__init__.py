"""The ``nni-udc`` command line.

Usage::

    nni-udc demo [--strategy udc|evolution|random] [--targets T,T,...] [--epochs E] [--finetune-epochs F]
                 [--trials N] [--seed S] [--out DIR]

    nni-udc profile --space digits --out latency.yaml [--threads T] [--warmup W] [--repeats R]
    nni-udc npu-size MODEL.pt [--target ethos-u55|ethos-u65]

Bad arguments exit with status 2 and a one-line message, no traceback.
"""
from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, but got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, but got {text!r}")
    return value


def _targets(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated numbers in (0, 1], but got {text!r}") from None
    if not values or any(not 0 < v <= 1 for v in values):
        raise argparse.ArgumentTypeError(f"must be comma-separated numbers in (0, 1], but got {text!r}")
    return values


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nni-udc", description="Compression-aware neural architecture search for NNI 3.0.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser("demo", help="search compressible CNNs on scikit-learn's digits; prints a results table",
                               description="Search DigitsSpace with the one-shot UDC strategy (or an NNI multi-trial "
                                           "strategy) and compare the found models with the float and uniform 8-bit "
                                           "baselines.")
    demo.add_argument("--strategy", choices=["udc", "evolution", "random"], default="udc",
                      help="udc: one-shot search per memory target; evolution/random: NNI's RegularizedEvolution or "
                           "Random multi-trial search (default: udc)")
    demo.add_argument("--targets", type=_targets, default=(0.03, 0.06, 0.12),
                      help="udc: memory targets as fractions of the widest float model (default: 0.03,0.06,0.12)")
    demo.add_argument("--epochs", type=_positive, default=12,
                      help="training epochs: of the supernet (udc), per architecture (multi-trial) and of the "
                           "baselines (default: 12)")
    demo.add_argument("--finetune-epochs", type=_positive, default=None,
                      help="udc: quantisation-aware fine-tuning epochs of each found model (default: --epochs)")
    demo.add_argument("--trials", type=_positive, default=16, help="multi-trial: architectures to train (default: 16)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    demo.add_argument("--verbose", action="store_true", help="show NNI and Lightning logs")

    profile = commands.add_parser("profile", help="time every layer configuration of a space; write a latency target",
                                  description="Time every distinct layer configuration of a space with torch on this "
                                              "CPU and write a hardware-target YAML file whose latency_ms cost reads "
                                              "the table (use it as UDC(hardware='FILE')).")
    profile.add_argument("--space", default="digits", help="registered space name or module:Class (default: digits)")
    profile.add_argument("--input-shape", default=None,
                         help="one sample's input shape, e.g. 3,32,32 (needed for module:Class spaces)")
    profile.add_argument("--out", default="latency.yaml", help="target file to write (default: latency.yaml)")
    profile.add_argument("--threads", type=_positive, default=1, help="torch threads while timing (default: 1)")
    profile.add_argument("--warmup", type=_positive, default=10, help="untimed runs per layer (default: 10)")
    profile.add_argument("--repeats", type=_positive, default=50, help="timed runs per layer; the median is kept "
                                                                       "(default: 50)")

    npu = commands.add_parser("npu-size", help="true Ethos-U encoded weight size of a saved model (Arm's encoder)",
                              description="Encode every weight layer of a model saved with torch.save with Arm's "
                                          "Ethos-U weight encoder and print the bytes per layer and in total.")
    npu.add_argument("model", help="file written by torch.save(model)")
    npu.add_argument("--target", choices=["ethos-u55", "ethos-u65"], default="ethos-u55")
    return parser


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if not shape or any(v < 1 for v in shape):
        raise ValueError(f"--input-shape must be positive integers separated by commas, e.g. 3,32,32, but got {text!r}")
    return shape


def _profile(args: argparse.Namespace) -> None:
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


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "profile":
            _profile(args)
            return 0
        if args.command == "npu-size":
            from nni_udc.evaluators.npu import size_main

            return size_main([args.model, "--target", args.target])
    except ValueError as error:
        parser.exit(2, f"nni-udc {args.command}: error: {error}\n")
    if args.command == "demo":
        from nni_udc.cli.demo import run_demo  # heavy imports only when needed

        run_demo(trials=args.trials, epochs=args.epochs, strategy=args.strategy, targets=args.targets,
                 finetune_epochs=args.finetune_epochs, seed=args.seed, out=args.out, verbose=args.verbose)
    return 0


if __name__ == "__main__":
    sys.exit(main())
