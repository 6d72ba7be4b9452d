"""Error of the Ethos-U weight-size model against Arm's encoder, per layer family and per whole network;
``--write`` refits the model first and writes the target file (``nni_udc/evaluators/target_files/``).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/calibrate_ethos_u.py --target ethos-u55 [--write]

The same as ``nni-udc npu-calibrate`` (nni_udc/cli/npu.py); the shapes, weights and fit are in
nni_udc/evaluators/npu_calibration.py.
"""
from __future__ import annotations

import argparse
import sys

from nni_udc.cli.npu import add_calibrate_command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="calibrate_ethos_u.py")
    add_calibrate_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["npu-calibrate", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
