"""Failures of a run that the command line reports in one line; importable without torch or NNI.

Example:
    >>> issubclass(DivergedError, RuntimeError)
    True
"""
from __future__ import annotations

__all__ = ["DivergedError"]


class DivergedError(RuntimeError):
    """Training produced a non-finite loss or weight; the message says where (epoch, step, tensor).

    Raised by :mod:`nni_udc.evaluators.divergence`; defined here so that ``nni-udc`` can name it among the
    errors it reports without importing torch for every command.
    """
