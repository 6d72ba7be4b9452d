"""The baked model as torch files: a ``state_dict``, its architecture record, and a ``torch.export`` program.

:func:`save_torch` writes, for a stem ``model``:

- ``model.state_dict.pt``: the baked tensors (``torch.load(..., weights_only=True)`` reads it: tensors only);
- ``model.record.json``: where each tensor came from: input and output shapes, per original layer its baked tensors,
  bits and scales per output channel, kept channels, the activation quantisers and folded BatchNorms, and the
  generated forward code;
- ``model.pt2``: the whole model as a ``torch.export`` program (``torch.export.save``), batch size free. It runs
  with torch alone::

      import torch
      model = torch.export.load("model.pt2").module()
      logits = model(torch.zeros(1, 1, 8, 8))

Example:
    >>> import tempfile, torch
    >>> from torch import nn
    >>> from nni_udc.export import bake
    >>> from nni_udc.nn import QuantLinear
    >>> baked = bake(nn.Sequential(nn.Flatten(), QuantLinear(64, 10, weight_bits=4)), torch.zeros(2, 1, 8, 8))
    >>> with tempfile.TemporaryDirectory() as out:
    ...     files = save_torch(baked, out)
    ...     program = torch.export.load(files["pt2"]).module()
    ...     sorted(files), tuple(program(torch.zeros(3, 1, 8, 8)).shape)
    (['pt2', 'record', 'state_dict'], (3, 10))
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from nni_udc.export.bake import BakedModel, BakeError

__all__ = ["RECORD_FORMAT", "export_program", "save_torch", "torch_file_names"]

#: The ``format`` field of a record; a reader refuses other formats.
RECORD_FORMAT = "nni-udc-baked/1"


def torch_file_names(stem: str = "model") -> dict[str, str]:
    """The names :func:`save_torch` gives its files, by kind."""
    return {"state_dict": f"{stem}.state_dict.pt", "record": f"{stem}.record.json", "pt2": f"{stem}.pt2"}


def export_program(baked: BakedModel) -> torch.export.ExportedProgram:
    """The baked model as a ``torch.export`` program whose batch size is free.

    Raises:
        BakeError: torch.export cannot export it (a forward whose shapes depend on the batch size, say).
    """
    example = torch.zeros(2, *baked.record["input_shape"])
    try:
        return torch.export.export(baked.module, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    except Exception as error:  # torch.export raises its own kinds (UserError, Unsupported, ...)
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise BakeError(f"torch.export cannot export the baked model ({type(error).__name__}: {first})") from None


def save_torch(baked: BakedModel, out: str | Path, *, stem: str = "model",
               program: torch.export.ExportedProgram | None = None) -> dict[str, Path]:
    """Write the state dict, the record and the ``torch.export`` program of ``baked`` into ``out``; returns the
    paths by kind (``'state_dict'``, ``'record'``, ``'pt2'``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {kind: out / name for kind, name in torch_file_names(stem).items()}
    state = {k: v.detach().cpu().clone() for k, v in baked.module.state_dict().items()}
    torch.save(state, paths["state_dict"])
    record: dict[str, Any] = {"format": RECORD_FORMAT, "torch": torch.__version__, **baked.record,
                              "state_dict": {k: list(v.shape) for k, v in state.items()},
                              "forward_code": baked.module.code.strip()}
    paths["record"].write_text(json.dumps(record, indent=1) + "\n")
    torch.export.save(program if program is not None else export_program(baked), paths["pt2"])
    return paths
