"""Read model files safely: ``torch.load(..., weights_only=True)`` always, never a pickle's own code.

``model.pt`` of ``nni-udc search`` is a pickled module (the frozen model). torch's ``weights_only`` unpickler
refuses every class it is not told about; :func:`load_model` tells it only about the classes the file names that are
``nn.Module`` types of torch, torchvision, nni or nni_udc (plus NNI's label-scope records that a frozen model
holds). Anything else (``os.system``, ``builtins.exec``, a class of a user's script) refuses the file before any of
it is unpickled, with one line that names what it would have run.

Example:
    >>> import tempfile, os, torch
    >>> from torch import nn
    >>> with tempfile.TemporaryDirectory() as out:
    ...     torch.save(nn.Sequential(nn.Linear(2, 2)), os.path.join(out, "model.pt"))
    ...     type(load_model(out)).__name__
    'Sequential'
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["TRUSTED_PACKAGES", "ModelFileError", "load_model", "model_file"]

#: Packages whose ``nn.Module`` classes a model file may name.
TRUSTED_PACKAGES = ("torch", "torchvision", "nni", "nni_udc")
# What a frozen NNI model pickles besides modules: records of its label scope and frozen sample (plain data).
_NNI_RECORDS = frozenset({"nni.nas.nn.pytorch.base.strict_label_scope", "nni.mutable.utils.label",
                          "nni.mutable.frozen.frozen_context"})


class ModelFileError(ValueError):
    """A model file that is missing, refused (it would run code) or not a model of ours; the message is one line."""


def model_file(path: str | Path) -> Path:
    """The model file of ``path``: a file itself, or ``model.pt`` of a search's or a Pareto trial's directory."""
    path = Path(path)
    if path.is_dir():
        if not (path / "model.pt").is_file():
            raise ModelFileError(f"{path} holds no model.pt: give a run directory of 'nni-udc search', a trial "
                                 "directory of 'nni-udc pareto' (OUTPUT/trials/NNNN) or a model file")
        return path / "model.pt"
    if not path.is_file():
        raise ModelFileError(f"{path}: no such file or directory")
    return path


def _resolve(name: str) -> Any:
    """The object a pickle names as ``module.qualname``, imported only from a trusted package; ``None`` otherwise."""
    if name.split(".", 1)[0] not in TRUSTED_PACKAGES:
        return None
    module_name, _, qualname = name.rpartition(".")
    while module_name:  # the module is the longest importable prefix (a class may be nested)
        try:
            obj: Any = importlib.import_module(module_name)
            break
        except ImportError:
            module_name, _, outer = module_name.rpartition(".")
            qualname = f"{outer}.{qualname}"
    else:
        return None
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    if name in _NNI_RECORDS or (isinstance(obj, type) and issubclass(obj, nn.Module)):
        return obj
    return None


def load_model(path: str | Path) -> nn.Module:
    """The ``nn.Module`` saved in a model file (or a run directory's ``model.pt``), read with ``weights_only=True``.

    Raises:
        ModelFileError: no such file; a file torch cannot read; a file that names anything but torch, torchvision,
            nni and nni_udc modules (it is not unpickled at all); a file that holds something else than a module.
    """
    file = model_file(path)
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(file))
    except Exception as error:  # not a torch zip file: a legacy pickle, text, a truncated file
        raise ModelFileError(f"{file} is not a torch model file ({type(error).__name__}: "
                             f"{str(error).splitlines()[0] if str(error) else 'unreadable'})") from None
    allowed = {name: _resolve(name) for name in names}
    refused = sorted(name for name, obj in allowed.items() if obj is None)
    if refused:
        raise ModelFileError(f"{file} refused: loading it would run {', '.join(refused)}, which is not a model class "
                             f"of {', '.join(TRUSTED_PACKAGES)} (nothing of it was loaded)")
    try:
        with torch.serialization.safe_globals(list(allowed.values())):
            obj = torch.load(file, weights_only=True, map_location="cpu")
    except Exception as error:
        raise ModelFileError(f"{file} cannot be read as a model ({type(error).__name__}: "
                             f"{str(error).splitlines()[0] if str(error) else 'unreadable'})") from None
    if not isinstance(obj, nn.Module):
        what = "a state_dict (tensors without the model's code)" if isinstance(obj, dict) else f"a {type(obj).__name__}"
        raise ModelFileError(f"{file} holds {what}, not a model saved with torch.save(model)")
    return obj
