"""User code as plug-ins, named by import strings (``"package.module:attribute"``).

An import string works wherever the configuration goes: in one process, in peer processes
(``--processes``) and on other hosts (``fltorrent peer`` gets the configuration from the
tracker), as long as the module is importable there. Modules are looked up on ``sys.path``
with the current directory first (as ``python -m`` does), so a project made by
``fltorrent new`` runs from its own directory.

* ``model.factory``: called with the keyword arguments in ``model.options``; returns a
  ``torch.nn.Module``. It runs under the federation's seed (:func:`~.models.seeded`), so every
  peer starts from the same weights, as with the built-in models.

Resolving a string that does not import is a configuration error naming the key; an exception
raised by the user's code is a :class:`~fltorrent.errors.PluginError` carrying the user's
traceback.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
import traceback
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from fltorrent.errors import ConfigError, PluginError
from fltorrent.learn.models import seeded

SPEC = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def resolve(spec: str, *, key: str) -> Callable[..., Any]:
    """The callable ``spec`` names; :class:`ConfigError` (naming ``key``) if there is none."""
    if not SPEC.fullmatch(spec):
        raise ConfigError(f"{spec!r} is not an import string 'package.module:name'", path=key)
    module_name, _, attribute = spec.partition(":")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise ConfigError(
            f"cannot import {module_name!r}: {type(exc).__name__}: {exc}", path=key
        ) from None
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{module_name!r} has no {attribute!r}", path=key)
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"{spec!r} is not callable", path=key)
    return obj  # type: ignore[no-any-return]


def call_user(fn: Callable[..., Any], spec: str, key: str, who: str, **kwargs: Any) -> Any:
    """``fn(**kwargs)``; an exception becomes a :class:`PluginError` with the user's traceback."""
    try:
        return fn(**kwargs)
    except Exception as exc:
        tb = "".join(traceback.format_exception(exc)[1:])  # from the user's frame on
        raise PluginError(
            f"{who}: {key} {spec!r} raised {type(exc).__name__}: {exc}\n{tb}"
        ) from None


def user_model(spec: str, options: Mapping[str, Any], *, seed: int, who: str) -> nn.Module:
    """The model ``spec`` builds from ``options``, initialised under ``seed``."""
    factory = resolve(spec, key="model.factory")
    with seeded(seed):
        model = call_user(factory, spec, "model.factory", who, **options)
    if not isinstance(model, nn.Module):
        raise PluginError(
            f"{who}: model.factory {spec!r} returned a {type(model).__name__}, not an nn.Module"
        )
    if not any(p.requires_grad for p in model.parameters()):
        raise PluginError(f"{who}: model.factory {spec!r} returned a model with no parameters")
    return model
