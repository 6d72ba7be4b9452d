"""Workarounds for NNI 3.0 on a modern stack, each in one place.

- NNI regenerates ``nni.nas.nn.pytorch._layers`` for every torch version and warns that
  ``torch.nn.Buffer`` and friends "are not nn.Module"; the names are re-exported unchanged, so the
  warning is noise (seen with torch 2.13).
"""
from __future__ import annotations

import warnings

warnings.filterwarnings("ignore", message=".*is found to be not a nn.Module.*")
