"""``'package.module:name'`` references, as experiment files and the command line give spaces and models."""
from __future__ import annotations

import importlib
from typing import Any

__all__ = ["import_named"]


def import_named(spec: str) -> Any:
    """The object that ``spec`` (``'package.module:name'``; ``name`` may be dotted, ``'module:Class.attr'``) names.

    Raises:
        ValueError: ``spec`` is not of that form, or its module or name cannot be imported; the message says why
            (a module that fails while it is imported, with any exception, is reported the same way).

    Example:
        >>> import_named("collections:OrderedDict")
        <class 'collections.OrderedDict'>
        >>> import_named("collections:NoSuchThing")
        Traceback (most recent call last):
        ...
        ValueError: cannot import 'collections:NoSuchThing': module 'collections' has no attribute 'NoSuchThing'
    """
    module_name, colon, name = spec.partition(":") if isinstance(spec, str) else ("", "", "")
    if not colon or not module_name or not name:
        raise ValueError(f"{spec!r} is not a reference of the form 'package.module:name'")
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"cannot import {spec!r}: {error}") from None
    except Exception as error:  # the user's module: a syntax error, code that raises while it is imported
        raise ValueError(f"cannot import {spec!r}: its module raised {type(error).__name__}: {error}") from None
    for part in name.split("."):
        try:
            found = getattr(found, part)
        except AttributeError as error:
            raise ValueError(f"cannot import {spec!r}: {error}") from None
    return found
