"""nni-udc: search accurate neural networks that are cheap on edge hardware, compression included.

A plugin for NNI 3.0: compressible layers as NNI mutables (:mod:`nni_udc.nn`), exact compression costs
(:mod:`nni_udc.evaluators`), model spaces (:mod:`nni_udc.spaces`) and bundled real data (:mod:`nni_udc.data`).
"""
from __future__ import annotations

from nni_udc import _compat  # noqa: F401

__version__ = "0.1.0"
