"""Read a pickle that may hold only plain containers and NumPy arrays (the CIFAR batch files).

``pickle.load`` runs whatever a file asks for, so a file from the internet could run code. CIFAR's files are
dicts of lists, bytes and NumPy arrays; :func:`load_array_pickle` allows exactly the NumPy functions that
rebuild an array and refuses any other global with :class:`UnsafePickleError`.

Example:
    >>> import io, pickle, numpy as np
    >>> blob = pickle.dumps({b"data": np.arange(3, dtype=np.uint8)}, protocol=2)
    >>> load_array_pickle(io.BytesIO(blob))[b"data"]
    array([0, 1, 2], dtype=uint8)
"""
from __future__ import annotations

import pickle
from typing import IO, Any

__all__ = ["ALLOWED_GLOBALS", "UnsafePickleError", "load_array_pickle"]

#: (module, name) pairs an array pickle needs: NumPy 1's and NumPy 2's module names, protocols 2 to 5; none runs code
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    (module, name)
    for core in ("numpy.core", "numpy._core")
    for module, name in ((f"{core}.multiarray", "_reconstruct"), (f"{core}.multiarray", "scalar"),
                         (f"{core}.numeric", "_frombuffer"))
) | {("numpy", "ndarray"), ("numpy", "dtype"),
     ("_codecs", "encode")}  # Python 3's protocol 2 writes bytes as _codecs.encode(text, "latin1")


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for a global that is not one of :data:`ALLOWED_GLOBALS`."""


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            raise UnsafePickleError(f"refused: the file asks for {module}.{name}, but may hold only plain "
                                    "containers and NumPy arrays")
        return super().find_class(module, name)


def load_array_pickle(file: IO[bytes]) -> Any:
    """Unpickle ``file`` (Python 2 strings become ``bytes``), allowing only NumPy's array-rebuilding globals.

    Raises:
        UnsafePickleError: the file asks for any other global (``os.system``, a class of some module ...).
    """
    return _ArrayUnpickler(file, encoding="bytes").load()
