"""``nni-udc npu-calibrate``: the Ethos-U weight-size model's error against Arm's encoder, and its refit.

Prints, for the target's shipped model, the error per layer family (every shape of the four networks and the
synthetic ones, and the held-out shapes alone), the error on whole networks (MobileNetV2, MobileNetV3-small,
ResNet-18, DS-CNN × bits {2, 4, 8} × sparsity {0, 0.5, 0.75, 0.9}) and Spearman's rank correlation. With
``--write`` it first refits the model on the calibration shapes and writes the target file.
See :mod:`nni_udc.evaluators.npu_calibration`; ``scripts/calibrate_ethos_u.py`` runs the same.

    nni-udc npu-calibrate --target ethos-u55 [--write]
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["add_calibrate_command", "calibrate_command"]

EVAL_BITS = (2, 3, 4, 6, 8)
EVAL_SPARSITY = (0.0, 0.5, 0.75, 0.9)
NETWORK_BITS = (2, 4, 8)


def add_calibrate_command(commands: Any) -> None:
    """The ``npu-calibrate`` subcommand of the ``nni-udc`` parser."""
    from nni_udc.registry import ACCELERATORS

    parser = commands.add_parser(
        "npu-calibrate", help="the Ethos-U size model's error against Arm's encoder (and --write: refit it)",
        description="Measure the Ethos-U weight-size model against Arm's encoder per layer family and on whole "
                    "networks; with --write, refit it first and write the target file.")
    parser.add_argument("--target", choices=ACCELERATORS.names(), default="ethos-u55")
    parser.add_argument("--write", action="store_true", help="refit the model and write the shipped target file")
    parser.add_argument("--seed", type=int, default=1, help="seed of the checked weights (default: 1; the fit uses 0)")
    parser.set_defaults(func=calibrate_command, errors=(ValueError,))


def _target_file(name: str) -> Path:
    from importlib.resources import files

    return Path(str(files("nni_udc.evaluators").joinpath("target_files").joinpath(f"{name}.yaml")))


def _print_families(title: str, rows: dict[str, dict[str, float]]) -> None:
    print(f"\n{title}\n| family | cases | total error | median per-layer error | worst | Spearman |\n|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['cases']} | {r['total']:+.1%} | {r['median']:.1%} | {r['worst']:.0%} | "
              f"{r['spearman']:.4f} |")


def calibrate_command(args: argparse.Namespace) -> int:
    import numpy as np

    from nni_udc.evaluators import npu_calibration as cal
    from nni_udc.evaluators.targets import load_target

    if args.write:
        cases = cal.timed("calibration cases encoded", lambda: cal.calibration_cases(args.target, seed=0))
        coefficients = cal.fit(cases)
        cal.write_target(_target_file(args.target), args.target, coefficients)
        print(f"wrote {_target_file(args.target)}")
    cost = load_target(args.target).cost("npu_weight_bytes")
    held_out = cal.unique([s for n in cal.HELD_OUT_NETWORKS for s in cal.network_shapes(n)] + cal.HELD_OUT_SHAPES)
    everything = cal.unique([s for n in cal.TRAIN_NETWORKS + cal.HELD_OUT_NETWORKS for s in cal.network_shapes(n)]
                            + cal.TRAIN_SHAPES + cal.HELD_OUT_SHAPES)
    cases = cal.timed("layer cases encoded", lambda: cal.measure(everything, EVAL_BITS, EVAL_SPARSITY, args.target,
                                                                   seed=args.seed))
    print(f"# {args.target}: {len(everything)} layer shapes x bits {list(EVAL_BITS)} x sparsity {list(EVAL_SPARSITY)}, "
          f"weights seed {args.seed}")
    families = cal.family_errors(cost, cases)
    _print_families("every shape (MobileNetV2, ResNet-18 and TRAIN_SHAPES calibrate the model):", families)
    kept = set(held_out)
    held = cal.family_errors(cost, [c for c in cases if c.shape in kept])
    _print_families("held-out shapes only (MobileNetV3-small, DS-CNN, HELD_OUT_SHAPES):", held)
    networks = cal.timed("whole networks encoded", lambda: cal.network_errors(
        cost, cal.TRAIN_NETWORKS + cal.HELD_OUT_NETWORKS, NETWORK_BITS, EVAL_SPARSITY, args.target, seed=args.seed))
    print("\nwhole networks (total model bytes against the encoder's):\n| network | bits | "
          + " | ".join(f"sparsity {s:g}" for s in EVAL_SPARSITY) + " |\n|---|---|" + "---|" * len(EVAL_SPARSITY))
    for name in cal.TRAIN_NETWORKS + cal.HELD_OUT_NETWORKS:
        for b in NETWORK_BITS:
            row = [r for r in networks if r["network"] == name and r["bits"] == b]
            held_mark = " (held out)" if name in cal.HELD_OUT_NETWORKS else ""
            print(f"| {name}{held_mark} | {b} | " + " | ".join(f"{r['error']:+.1%}" for r in row) + " |")
    worst = max(abs(r["error"]) for r in networks)
    rho = cal.spearman([r["model"] for r in networks], [r["truth"] for r in networks])
    print(f"\nworst whole-network error {worst:.1%}; Spearman over the {len(networks)} networks {rho:.4f}, "
          f"over the {len(cases)} layers {families['all layers']['spearman']:.4f}")
    return 0 if np.isfinite(worst) else 1
