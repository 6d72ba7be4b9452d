"""One call that deploys a searched model: :func:`export` writes it as torch files, QDQ ONNX and a packed file.

``model_or_run`` is a frozen model (``space.freeze(sample)``), a run directory of ``nni-udc search``, a trial
directory of ``nni-udc pareto`` (``OUTPUT/trials/NNNN``) or a model file; files are read with
``weights_only=True`` (:mod:`nni_udc.export.load`). The model is baked once (:func:`~nni_udc.export.bake.bake`) and
every format is written from it:

========  =======================================================  ===================================
format    files                                                    read with
========  =======================================================  ===================================
torch     ``model.pt2``, ``model.state_dict.pt``, ``model.record.json``  ``torch.export.load`` (torch alone)
onnx      ``model.onnx`` (QDQ, opset 21)                           onnxruntime
packed    ``model.nupk`` (:mod:`nni_udc.export.packed`)            :func:`~nni_udc.export.packed.read_packed`
========  =======================================================  ===================================

Example:
    >>> import tempfile, torch
    >>> from torch import nn
    >>> from nni_udc.nn import QuantLinear
    >>> net = nn.Sequential(nn.Flatten(), QuantLinear(64, 10, weight_bits=4))
    >>> with tempfile.TemporaryDirectory() as out:
    ...     files = export(net, ["torch", "packed"], out, input_shape=(1, 8, 8))
    ...     [(f.format, f.path.name) for f in files]
    [('torch', 'model.pt2'), ('torch', 'model.state_dict.pt'), ('torch', 'model.record.json'), ('packed', 'model.nupk')]
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nni_udc.export.bake import BakedModel, bake
from nni_udc.export.load import ModelFileError, load_model, model_file
from nni_udc.export.torch_files import export_program, save_torch, torch_file_names

__all__ = ["FORMATS", "ExportedFile", "export", "input_shape_of", "resolve_model"]

#: What :func:`export` writes, in the order ``'all'`` writes them.
FORMATS: tuple[str, ...] = ("torch", "onnx", "packed")


@dataclass(frozen=True)
class ExportedFile:
    """One file written: its format, path and size; ``claimed_bytes`` is the cost the search counted for it
    (``memory_bits / 8`` for the packed file)."""

    format: str
    path: Path
    bytes: int
    claimed_bytes: float | None = None


def input_shape_of(path: str | Path) -> tuple[int, ...] | None:
    """One sample's input shape for the model of a run directory or model file: from the baked record beside it,
    else from the experiment file its ``report.json`` names; ``None`` when neither says."""
    folder = model_file(path).parent
    record = folder / torch_file_names()["record"]
    if record.is_file():
        try:
            return tuple(json.loads(record.read_text())["input_shape"])
        except (ValueError, KeyError, TypeError):
            pass
    report = folder / "report.json"
    if report.is_file():
        from nni_udc.config import ConfigError, load_config
        from nni_udc.registry import DATASETS

        try:
            config = load_config(json.loads(report.read_text())["config"])
            return tuple(DATASETS[config.data.name].input_shape)
        except (ValueError, KeyError, TypeError, OSError, ConfigError):
            return None
    return None


def resolve_model(model_or_run: nn.Module | str | Path, input_shape: Sequence[int] | None = None
                  ) -> tuple[nn.Module, tuple[int, ...]]:
    """The frozen model and its input shape (one sample) of what :func:`export` was given.

    Raises:
        ModelFileError: the file is missing, refused or not a model; or the input shape is unknown.
    """
    if isinstance(model_or_run, nn.Module):
        model, shape = model_or_run, None
    else:
        model, shape = load_model(model_or_run), input_shape_of(model_or_run)
    if input_shape is not None:
        shape = tuple(int(v) for v in input_shape)
    if not shape:
        raise ModelFileError("the model's input shape is unknown: give it (input_shape=(1, 8, 8), --input-shape "
                             "1,8,8); a run directory's report.json or model.record.json says it")
    return model, shape


def _size(path: Path) -> int:
    return path.stat().st_size


def export(model_or_run: nn.Module | str | Path, formats: Sequence[str] | str, out: str | Path, *,
           input_shape: Sequence[int] | None = None, target: str | None = None,
           baked: BakedModel | None = None) -> list[ExportedFile]:
    """Write ``model_or_run`` in each of ``formats`` (``'torch'``, ``'onnx'``, ``'packed'`` or ``'all'``) into ``out``.

    ``target`` (``'ethos-u55'``, ``'ethos-u65'``) also writes every layer's Ethos-U weight stream from Arm's encoder
    (:func:`~nni_udc.export.ethos.write_ethos_streams`) to ``out/TARGET/``; its row's bytes are the NPU's weight
    memory (weights, biases and scales: what ``npu-size`` reports).

    Raises:
        ValueError: an unknown format (the message lists the known ones).
        ModelFileError: a model file that is missing, refused or not a model of ours.
        nni_udc.export.bake.BakeError: a model that cannot be baked (named).
    """
    wanted = list(FORMATS) if formats == "all" or list(formats) == ["all"] else (
        [formats] if isinstance(formats, str) else list(formats))
    unknown = [f for f in wanted if f not in FORMATS]
    if unknown or not wanted:
        raise ValueError(f"formats must be some of {list(FORMATS)} or 'all', but got {list(wanted)!r}")
    model, shape = resolve_model(model_or_run, input_shape)
    model.eval()
    example = torch.zeros(2, *shape)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[ExportedFile] = []
    program = None
    if "torch" in wanted or "onnx" in wanted:
        baked = baked if baked is not None else bake(model, example)
        program = export_program(baked)
    if "torch" in wanted:
        assert baked is not None
        paths = save_torch(baked, out, program=program)
        written += [ExportedFile("torch", paths[kind], _size(paths[kind])) for kind in ("pt2", "state_dict", "record")]
    if "onnx" in wanted:
        from nni_udc.export.onnx_qdq import export_onnx  # onnx and its exporter load only when asked for

        assert baked is not None
        path = export_onnx(baked, out / "model.onnx", program=program)
        written.append(ExportedFile("onnx", path, _size(path)))
    if "packed" in wanted:
        baked = baked if baked is not None else bake(model, example)
        written.append(_packed(model, baked, example, out / "model.nupk"))
    if target is not None:
        from nni_udc.export.ethos import write_ethos_streams

        streams = write_ethos_streams(model, out, target)
        written.append(ExportedFile(target, streams.folder, streams.total_bytes))
    return written


def _packed(model: nn.Module, baked: BakedModel, example: torch.Tensor, path: Path) -> ExportedFile:
    """The baked layers (BatchNorm folded into scales and biases) packed; claimed: the searched model's memory_bits."""
    from nni_udc.evaluators.exact import exact_costs
    from nni_udc.export.packed import write_packed

    write_packed(baked.integer or model, path)
    claimed: Any = exact_costs(model, example[:1], costs=["memory_bits"])["memory_bits"]
    return ExportedFile("packed", path, _size(path), float(claimed) / 8)
