"""Model spaces in NNI syntax that use nni-udc's compressible layers."""
from __future__ import annotations

from nni_udc.spaces.digits import DigitsSpace
from nni_udc.spaces.mnist1d import Mnist1dSpace
from nni_udc.spaces.sparse_cell import SparseCellSpace

__all__ = ["DigitsSpace", "Mnist1dSpace", "SparseCellSpace"]
