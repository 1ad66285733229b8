"""User code as plug-ins, named by import strings (``"package.module:attribute"``).

An import string works wherever the configuration goes: in one process, in peer processes
(``--processes``) and on other hosts (``fltorrent peer`` gets the configuration from the
tracker), as long as the module is importable there. Modules are looked up on ``sys.path``
with the current directory first (as ``python -m`` does), so a project made by
``fltorrent new`` runs from its own directory.

* ``model.factory``: called with the keyword arguments in ``model.options``; returns a
  ``torch.nn.Module``. It runs under the federation's seed (:func:`~.models.seeded`), so every
  peer starts from the same weights, as with the built-in models.
* ``data.factory``: called with ``peer`` (the peer's number, from 1), ``num_peers``, ``seed``
  and the keyword arguments in ``data.options``, on the peer's own host; returns ``(train,
  test)``, each a ``torch.utils.data.Dataset`` of ``(input, label)`` pairs. The peer's data
  never leaves it; it is read once into tensors (so it must fit in memory).
* ``train.step``: called as ``step(model=, x=, y=, options=, seed=)`` with the model in train
  mode, the peer's training tensors, the training settings as a dict (``epochs``,
  ``batch_size``, ``lr``, ``optimizer``, ``momentum``, ``weight_decay``, ``proximal_mu``) and
  the round's seed; trains ``model`` in place and returns the mean loss (or ``None``).
* ``train.evaluate``: called as ``evaluate(model=, x=, y=)`` with the model in eval mode and
  gradients off; returns ``(accuracy, loss)``.
* ``robust.rule_factory``: called with one argument, the (n, d) array of the authors' deltas
  of one chunk; returns the d-vector delta (the peer's defence calls it per chunk).

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
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from fltorrent.config_types import IMPORT_STRING
from fltorrent.errors import ConfigError, PluginError
from fltorrent.learn.models import exclusive, seeded

SPEC = re.compile(IMPORT_STRING)


def resolve(spec: str, *, key: str) -> Callable[..., Any]:
    """The callable ``spec`` names; :class:`ConfigError` (naming ``key``) if there is none."""
    if not SPEC.match(spec):
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


class _Registered:
    """Objects given to ``Federation(...)`` that have no import string of their own (a lambda,
    a local function, one defined in ``__main__``): reachable by name in this process only."""


REGISTERED = _Registered()


def as_import_string(obj: Callable[..., Any], *, key: str) -> tuple[str, bool]:
    """An import string naming ``obj`` and whether it works in other processes: the object's
    own ``module:qualname`` when that resolves to it, else a name in this process's registry."""
    if not callable(obj):
        raise ConfigError(f"{obj!r} is not callable", path=key)
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if module and qualname and module != "__main__":
        spec = f"{module}:{qualname}"
        if SPEC.match(spec):
            try:
                if resolve(spec, key=key) is obj:
                    return spec, True
            except ConfigError:
                pass
    name = f"{key.replace('.', '_')}_{id(obj):x}"
    setattr(REGISTERED, name, obj)
    return f"{__name__}:REGISTERED.{name}", False


def call_user(
    fn: Callable[..., Any], spec: str, key: str, who: str, *args: Any, **kwargs: Any
) -> Any:
    """``fn(*args, **kwargs)``; an exception becomes a :class:`PluginError` with the user's
    traceback."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:
        tb = "".join(traceback.format_exception(exc)[1:])  # from the user's frame on
        raise PluginError(
            f"{who}: {key} {spec!r} raised {type(exc).__name__}: {exc}\n{tb}"
        ) from None


# Per (factory, options, seed), the initial weights the first peer of this process built: the
# others load them, so that threads of other peers drawing from torch's global generator
# (their own training, say) cannot make one peer start from other weights.
_INITIAL: dict[tuple[str, str, int], dict[str, torch.Tensor]] = {}


def user_model(spec: str, options: Mapping[str, Any], *, seed: int, who: str) -> nn.Module:
    """The model ``spec`` builds from ``options``, initialised under ``seed`` (the same
    weights on every peer)."""
    factory = resolve(spec, key="model.factory")
    key = (spec, repr(sorted(options.items())), seed)
    with seeded(seed):
        model = call_user(factory, spec, "model.factory", who, **options)
        if isinstance(model, nn.Module):
            first = _INITIAL.setdefault(
                key, {k: v.detach().clone() for k, v in model.state_dict().items()}
            )
            model.load_state_dict(first)
    if not isinstance(model, nn.Module):
        raise PluginError(
            f"{who}: model.factory {spec!r} returned a {type(model).__name__}, not an nn.Module"
        )
    if not any(p.requires_grad for p in model.parameters()):
        raise PluginError(f"{who}: model.factory {spec!r} returned a model with no parameters")
    return model


Pair = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class UserData:
    """One peer's data from the user's factory, as tensors."""

    train: Pair
    test: Pair
    classes: int | None  # len(train.classes) when the dataset says (torchvision's do)


def user_data(
    spec: str, options: Mapping[str, Any], *, peer: int, num_peers: int, seed: int, who: str
) -> UserData:
    """``(train, test)`` from the data factory ``spec``, called with ``peer`` (from 1),
    ``num_peers``, ``seed`` and ``options``, as tensors: inputs stacked as float32, labels as
    int64. Each must be a ``torch.utils.data.Dataset`` (``len`` and indexing) of
    ``(input, label)`` pairs, every input of one shape."""
    factory = resolve(spec, key="data.factory")
    kwargs = {"peer": peer, "num_peers": num_peers, "seed": seed, **options}
    with exclusive():  # not while a peer of this process builds its model
        pair = call_user(factory, spec, "data.factory", who, **kwargs)
    if not (isinstance(pair, tuple) and len(pair) == 2):
        raise PluginError(f"{who}: data.factory {spec!r} must return (train, test)")
    train, test = _tensors(pair[0], "train", spec, who), _tensors(pair[1], "test", spec, who)
    if train[0].shape[1:] != test[0].shape[1:]:
        raise PluginError(
            f"{who}: data.factory {spec!r}: train inputs {tuple(train[0].shape[1:])} and test "
            f"inputs {tuple(test[0].shape[1:])} differ in shape"
        )
    names = getattr(pair[0], "classes", None)
    return UserData(train, test, len(names) if isinstance(names, list | tuple) else None)


def _tensors(ds: Any, name: str, spec: str, who: str) -> Pair:
    where = f"{who}: data.factory {spec!r}: the {name} set"
    try:
        n = len(ds)
    except TypeError:
        raise PluginError(f"{where} is not a Dataset (it has no length)") from None
    if n == 0:
        raise PluginError(f"{where} is empty")
    xs, ys = [], []
    for i in range(n):
        try:
            item = ds[i]
            x, y = item
            xs.append(torch.as_tensor(x, dtype=torch.float32))
            label = float(y)
            if not label.is_integer():
                raise ValueError(f"label {y!r} is not a class index")
            ys.append(int(label))
        except Exception as exc:
            tb = "".join(traceback.format_exception(exc)[1:])
            problem = f"{type(exc).__name__}: {exc}"
            raise PluginError(
                f"{where}: item {i} is not an (input, label) pair: {problem}\n{tb}"
            ) from None
    try:
        x_all = torch.stack(xs)
    except RuntimeError as exc:
        raise PluginError(f"{where}: inputs differ in shape ({exc})") from None
    y_all = torch.tensor(ys, dtype=torch.long)
    if int(y_all.min()) < 0:
        raise PluginError(f"{where}: labels must be class indices (0 or more)")
    return x_all, y_all


def user_rule(spec: str, *, who: str) -> Callable[[np.ndarray], np.ndarray]:
    """The aggregation rule ``spec`` names (``robust.rule_factory``): a function of the
    (n, d) deltas of one chunk returning the d-vector delta, wrapped so that an exception in
    it is a :class:`PluginError` with the user's traceback."""
    rule = resolve(spec, key="robust.rule_factory")

    def guarded(deltas: np.ndarray) -> np.ndarray:
        return np.asarray(call_user(rule, spec, "robust.rule_factory", who, deltas))

    return guarded


def user_train(spec: str, *, who: str) -> Callable[..., float | None]:
    """The training step ``spec`` names (``train.step``), guarded like every plug-in."""
    step = resolve(spec, key="train.step")

    def guarded(**kwargs: Any) -> float | None:
        loss = call_user(step, spec, "train.step", who, **kwargs)
        if loss is not None and not isinstance(loss, int | float | torch.Tensor):
            raise PluginError(f"{who}: train.step {spec!r} returned {loss!r}, not a loss")
        return None if loss is None else float(loss)

    return guarded


def user_evaluate(spec: str, *, who: str) -> Callable[..., tuple[float, float]]:
    """The evaluation ``spec`` names (``train.evaluate``): ``(accuracy, loss)``."""
    evaluate = resolve(spec, key="train.evaluate")

    def guarded(**kwargs: Any) -> tuple[float, float]:
        out = call_user(evaluate, spec, "train.evaluate", who, **kwargs)
        try:
            acc, loss = out
            return float(acc), float(loss)
        except (TypeError, ValueError):
            raise PluginError(
                f"{who}: train.evaluate {spec!r} returned {out!r}, not (accuracy, loss)"
            ) from None

    return guarded
