"""``nni-udc export RUN_OR_MODEL --format torch|onnx|packed|all [--target ethos-u55|ethos-u65] [--out DIR]``:
deployable files of a searched model.

Prints one row per file written: format, file, bytes, and for the packed file the bytes the search counted
(``memory_bits / 8``); with ``--target``, one row for the folder of Ethos-U weight streams and their total bytes.
"""
from __future__ import annotations

import argparse
import warnings
from pathlib import Path

__all__ = ["ExportError", "export_command", "input_shape"]


class ExportError(ValueError):
    """A model that cannot be exported (missing, refused, not a model of ours, not bakeable): one line, status 2."""


def input_shape(text: str) -> tuple[int, ...]:
    """``--input-shape 1,8,8`` as a tuple (argparse type)."""
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if not shape or any(v < 1 for v in shape):
        raise argparse.ArgumentTypeError(f"must be positive integers separated by commas, e.g. 1,8,8, but got {text!r}")
    return shape


def export_command(args: argparse.Namespace) -> int:
    from nni_udc._table import format_table
    from nni_udc.export.api import export
    from nni_udc.export.bake import BakeError
    from nni_udc.export.load import ModelFileError

    out = Path(args.out) if args.out is not None else _default_out(Path(args.model))
    formats = "all" if args.format == "all" else [args.format]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.export's and the ONNX exporter's deprecation notes: not the user's
            files = export(args.model, formats, out, input_shape=args.input_shape, target=args.target)
    except (ModelFileError, BakeError, TypeError) as error:  # TypeError: weights with no integer form (named)
        raise ExportError(str(error)) from None
    rows = [[f.format, str(f.path), f"{f.bytes:,}", "" if f.claimed_bytes is None else f"{f.claimed_bytes:,.0f}"]
            for f in files]
    print(format_table(["format", "file", "bytes", "claimed (memory_bits/8)"], rows))
    return 0


def _default_out(model: Path) -> Path:
    """``export/`` inside a run or trial directory, or beside a model file."""
    return (model if model.is_dir() else model.parent) / "export"
