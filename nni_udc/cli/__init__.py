"""The ``nni-udc`` command line.

Usage::

    nni-udc demo [--trials N] [--epochs E] [--strategy evolution|random] [--seed S] [--out DIR]

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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nni-udc", description="Compression-aware neural architecture search for NNI 3.0.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser("demo", help="multi-trial search on scikit-learn's digits; prints a results table",
                               description="Search DigitsSpace with an NNI multi-trial strategy and compare the "
                                           "found models with the float and uniform 8-bit baselines.")
    demo.add_argument("--trials", type=_positive, default=16, help="architectures to train (default: 16)")
    demo.add_argument("--epochs", type=_positive, default=12, help="training epochs per architecture (default: 12)")
    demo.add_argument("--strategy", choices=["evolution", "random"], default="evolution",
                      help="NNI strategy: RegularizedEvolution or Random (default: evolution)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    demo.add_argument("--verbose", action="store_true", help="show NNI and Lightning logs")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from nni_udc.cli.demo import run_demo  # heavy imports only when needed

        run_demo(trials=args.trials, epochs=args.epochs, strategy=args.strategy, seed=args.seed, out=args.out,
                 verbose=args.verbose)
    return 0


if __name__ == "__main__":
    sys.exit(main())
