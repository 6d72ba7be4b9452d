"""nni-udc: search accurate neural networks that are cheap on edge hardware, compression included.

A plugin for NNI 3.0: compressible layers as NNI mutables (:mod:`nni_udc.nn`), exact compression costs
(:mod:`nni_udc.evaluators`), model spaces (:mod:`nni_udc.spaces`) and bundled real data (:mod:`nni_udc.data`).
"""
from __future__ import annotations

import importlib

from nni_udc import _compat  # noqa: F401

__version__ = "0.1.0"

__all__ = ["CompressionPolicy", "make_compressible"]

_LAZY = {"CompressionPolicy": "nni_udc.compressible", "make_compressible": "nni_udc.compressible"}


def __getattr__(name: str) -> object:
    """``nni_udc.make_compressible`` without importing torch and NNI's model spaces at ``import nni_udc``."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nni_udc' has no attribute {name!r}")
