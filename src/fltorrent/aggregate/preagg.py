"""Pre-aggregation: pure maps from an ``(n, d)`` array of updates to a ``(k, d)`` array, applied
before a robust rule of :mod:`fltorrent.aggregate.robust` (same input conventions: float64,
finite, ``n >= 1``; errors are :class:`AggregationError` naming the step).

* :func:`bucketing` (Karimireddy, He & Jaggi, 2022) outputs ``ceil(n / s)`` rows. A Byzantine
  input spoils at most its own bucket, so the robust rule afterwards still faces at most ``f``
  bad rows, out of fewer: run :func:`check_preaggregator` then
  :func:`~fltorrent.aggregate.robust.check_rule` with the ``n`` it returns.
* :func:`nnm` (Allouah et al., 2023) and :func:`clip` keep ``n`` rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

from fltorrent.aggregate.robust import (
    Matrix,
    as_matrix,
    canonical_order,
    check_known,
    check_n_f,
    pairwise_sq_distances,
)
from fltorrent.errors import AggregationError

_OPTIONS: dict[str, tuple[str, ...]] = {"bucketing": ("s",), "nnm": (), "clip": ("c",)}


def check_preaggregator(name: str, n: int, f: int = 0, **options: Any) -> int:
    """Check pre-aggregation ``name`` on ``n`` updates without data; return its output row count.

    ``options`` are its scalar options (``s`` for bucketing, ``c`` for clip); an option left
    out is not checked. Raises :class:`AggregationError` exactly where the function would.
    """
    check_known("pre-aggregation", name, options, _OPTIONS)
    check_n_f(name, n, f)
    if name == "nnm" and not n > 2 * f:
        raise AggregationError(f"nnm needs n > 2f, got n={n}, f={f}")
    s = options.get("s")
    if s is not None:
        if not isinstance(s, int | np.integer) or isinstance(s, bool) or s < 1:
            raise AggregationError(f"bucketing needs an integer bucket size s >= 1, got s={s!r}")
        return -(-n // int(s))
    c = options.get("c")
    if c is not None and (
        isinstance(c, bool)
        or not isinstance(c, int | float | np.integer | np.floating)
        or not math.isfinite(c)
        or c <= 0
    ):
        raise AggregationError(f"clip needs a finite threshold c > 0, got c={c!r}")
    return n


def bucketing(x: npt.ArrayLike, s: int, rng: np.random.Generator) -> Matrix:
    """Bucketing (Karimireddy, He & Jaggi, ICLR 2022): shuffle the rows with ``rng``, cut them
    into consecutive buckets of ``s`` and return each bucket's mean, ``ceil(n / s)`` rows.

    When ``s`` does not divide ``n`` the last bucket is smaller (as in ByzFL). ``s = 1`` returns
    a permutation of the rows. Needs an integer ``s >= 1``.
    """
    a = as_matrix(x, "bucketing")
    n = a.shape[0]
    k = check_preaggregator("bucketing", n, 0, s=s)
    shuffled = a[rng.permutation(n)]
    out: Matrix = np.stack([shuffled[i * s : (i + 1) * s].mean(axis=0) for i in range(k)])
    return out


def nnm(x: npt.ArrayLike, f: int) -> Matrix:
    """Nearest-neighbour mixing (Allouah et al., AISTATS 2023): replace each row by the mean of
    its ``n - f`` nearest rows in Euclidean distance, itself included.

    Equidistant neighbours go to the lexicographically smaller row (see
    :func:`~fltorrent.aggregate.robust.canonical_order`), which reproduces ByzFL's example and
    keeps the map permutation-equivariant. Needs ``n > 2f``.
    """
    a = as_matrix(x, "nnm")
    n = a.shape[0]
    check_preaggregator("nnm", n, f)
    sq = pairwise_sq_distances(a)
    nearest = np.array([canonical_order(sq[i], a)[: n - f] for i in range(n)])
    out: Matrix = a[nearest].mean(axis=1)
    return out


def clip(x: npt.ArrayLike, c: float) -> Matrix:
    """Static clipping: scale each row of norm above ``c`` down to norm ``c``; rows within the
    bound are unchanged. Needs a finite ``c > 0``.
    """
    a = as_matrix(x, "clip")
    check_preaggregator("clip", a.shape[0], 0, c=c)
    norms = np.linalg.norm(a, axis=1)
    scale = np.ones_like(norms)
    np.divide(c, norms, out=scale, where=norms > c)
    out: Matrix = a * scale[:, None]
    return out


PreAggregator = Callable[..., Matrix]

PREAGGREGATORS: Mapping[str, PreAggregator] = MappingProxyType(
    {"bucketing": bucketing, "nnm": nnm, "clip": clip}
)
"""Every pre-aggregation by name; :func:`check_preaggregator` knows the same names."""
