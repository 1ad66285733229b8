"""Byzantine-robust aggregation rules: pure functions over an ``(n, d)`` array of updates.

Conventions shared by every rule in this module:

* ``x`` is an array-like of shape ``(n, d)``: ``n`` updates (or models) of dimension ``d``. It is
  converted to float64 and must be finite; a non-finite value raises :class:`AggregationError`
  (drop such an update before aggregating, which lowers ``n``).
* ``f`` is the number of Byzantine inputs the rule is asked to tolerate.
* The result is a fresh ``(d,)`` float64 array, never a view of the input.
* Weights: only :func:`mean` and :func:`geometric_median` take ``weights`` (Pillutla et al. weight
  the smoothed Weiszfeld iteration by sample counts). Every other rule is unweighted by design:
  sample counts are claimed by the senders, and a Byzantine sender would claim a huge one.
* Ties (equal Krum scores, equidistant neighbours) go to the lexicographically smaller update,
  not to the lower row index, so that selections never depend on the order of the rows: Krum
  with one neighbour (``n = f + 2``, and the last Bulyan rounds) ties for every mutually
  nearest pair. On ByzFL's examples this picks the same rows as ByzFL's lower-index rule.
  Results still differ between row orders in the last bits, from floating-point summation
  order; callers that sort rows by author id (as for fedavg) agree bit for bit.
* A violated precondition raises :class:`AggregationError` naming the rule, e.g.
  ``"bulyan needs n >= 4f + 3, got n=6, f=1"``. :func:`check_rule` runs the same checks on
  ``n``, ``f`` and scalar options alone, so a configuration can be refused before a run.

Preconditions (``n >= 1`` and integer ``f >= 0`` always):

=================  ===================================================================
rule               precondition
=================  ===================================================================
mean, median       none (``f`` is not used)
geometric_median   ``nu > 0``, ``max_iter >= 1``, ``tol >= 0`` (``f`` is not used)
centered_clip      ``tau > 0``, ``iters >= 1`` (``f`` is not used)
trimmed_mean       ``n > 2f``
krum, multi_krum   ``n > 2f`` (ByzFL's check; see :func:`krum`), and ``1 <= m <= n``
bulyan             ``n >= 4f + 3`` (El Mhamdi et al. 2018)
=================  ===================================================================
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from functools import cmp_to_key
from types import MappingProxyType
from typing import Any, TypeGuard

import numpy as np
import numpy.typing as npt

from fltorrent.aggregate.fedavg import Vector
from fltorrent.errors import AggregationError

Matrix = npt.NDArray[np.float64]


# ---------------------------------------------------------------------------------------------
# Input handling


def as_matrix(x: npt.ArrayLike, rule: str) -> Matrix:
    """``x`` as a finite float64 ``(n, d)`` array with ``n >= 1``, or :class:`AggregationError`."""
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise AggregationError(f"{rule} needs an (n, d) array of numbers: {e}") from e
    if a.ndim != 2:
        raise AggregationError(f"{rule} needs an (n, d) array of updates, got shape {a.shape}")
    if a.shape[0] == 0:
        raise AggregationError(f"{rule} needs at least one update, got n=0")
    if not np.all(np.isfinite(a)):
        rows = np.flatnonzero(~np.all(np.isfinite(a), axis=1)).tolist()
        raise AggregationError(f"{rule} needs finite updates, rows {rows} are not")
    return a


def _as_vector(v: npt.ArrayLike, d: int, rule: str, what: str) -> Vector:
    a = np.array(v, dtype=np.float64)  # a copy, never a view of the caller's array
    if a.shape != (d,) or not np.all(np.isfinite(a)):
        raise AggregationError(f"{rule} needs a finite {what} of shape ({d},), got {a.shape}")
    return a


def _normalized_weights(weights: npt.ArrayLike | None, n: int, rule: str) -> Vector:
    if weights is None:
        return np.full(n, 1.0 / n)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise AggregationError(f"{rule} needs one weight per update ({n}), got shape {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise AggregationError(f"{rule} needs finite, non-negative weights, got {w.tolist()}")
    total = float(w.sum())
    if total <= 0:
        raise AggregationError(f"{rule} needs weights that sum to more than zero")
    return w / total


def pairwise_sq_distances(x: Matrix) -> Matrix:
    """``(n, n)`` squared Euclidean distances, exactly symmetric with a zero diagonal.

    Computed row by row from differences (not from the Gram matrix, whose cancellation would
    perturb ties and near-duplicates), in O(n·d) memory.
    """
    n = x.shape[0]
    out = np.zeros((n, n), dtype=np.float64)
    for i in range(n - 1):
        diff = x[i + 1 :] - x[i]
        sq = np.einsum("ij,ij->i", diff, diff)
        out[i, i + 1 :] = sq
        out[i + 1 :, i] = sq
    return out


def canonical_order(keys: Vector, x: Matrix) -> list[int]:
    """Row indices sorted by ``keys``, ties broken by comparing the rows of ``x``
    lexicographically, so the order depends on the rows' values and not on their positions."""

    def compare(i: int, j: int) -> int:
        if keys[i] != keys[j]:
            return -1 if keys[i] < keys[j] else 1
        differ = np.flatnonzero(x[i] != x[j])
        if differ.size == 0:
            return 0
        k = differ[0]
        return -1 if x[i, k] < x[j, k] else 1

    return sorted(range(len(keys)), key=cmp_to_key(compare))


# ---------------------------------------------------------------------------------------------
# Preconditions

_OPTIONS: dict[str, tuple[str, ...]] = {
    "mean": (),
    "median": (),
    "trimmed_mean": (),
    "krum": (),
    "multi_krum": ("m",),
    "geometric_median": ("nu", "max_iter", "tol"),
    "centered_clip": ("tau", "iters"),
    "bulyan": (),
}


def _is_int(v: object) -> TypeGuard[int | np.integer[Any]]:
    return isinstance(v, int | np.integer) and not isinstance(v, bool)


def _is_real(v: object) -> TypeGuard[float | np.integer[Any] | np.floating[Any]]:
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)


def check_n_f(rule: str, n: object, f: object) -> None:
    """The checks every rule shares: an integer ``n >= 1`` and an integer ``f >= 0``."""
    if not _is_int(n) or n < 1:
        raise AggregationError(f"{rule} needs at least one update, got n={n!r}")
    if not _is_int(f) or f < 0:
        raise AggregationError(f"{rule} needs an integer f >= 0, got f={f!r}")


def check_known(
    kind: str, name: str, options: Mapping[str, Any], known: Mapping[str, tuple[str, ...]]
) -> None:
    """Refuse an unknown ``name`` of ``kind`` or an option it does not take."""
    if name not in known:
        raise AggregationError(f"unknown {kind} {name!r}; known: {sorted(known)}")
    unknown = sorted(set(options) - set(known[name]))
    if unknown:
        raise AggregationError(
            f"{name} has no option {', '.join(unknown)}; it takes {list(known[name]) or 'none'}"
        )


def check_rule(name: str, n: int, f: int = 0, **options: Any) -> None:
    """Raise :class:`AggregationError` if rule ``name`` cannot run on ``n`` updates with ``f``.

    Checks the same preconditions as the rule itself, without data: ``options`` are the rule's
    scalar options (``m`` for multi_krum; ``nu``, ``max_iter``, ``tol`` for geometric_median;
    ``tau``, ``iters`` for centered_clip); an option left out is not checked. ``f`` is only
    checked to be a non-negative integer for the rules that do not use it.
    """
    check_known("aggregation rule", name, options, _OPTIONS)
    check_n_f(name, n, f)
    if name in ("trimmed_mean", "krum", "multi_krum") and not n > 2 * f:
        raise AggregationError(f"{name} needs n > 2f, got n={n}, f={f}")
    if name == "bulyan" and not n >= 4 * f + 3:
        raise AggregationError(f"bulyan needs n >= 4f + 3, got n={n}, f={f}")
    m = options.get("m")
    if m is not None and (not _is_int(m) or not 1 <= m <= n):
        raise AggregationError(f"{name} needs 1 <= m <= n, got m={m!r}, n={n}")
    for key, low, strict in (("nu", 0.0, True), ("tau", 0.0, True), ("tol", 0.0, False)):
        v = options.get(key)
        if v is None:
            continue
        if not _is_real(v) or not math.isfinite(v) or v < low or (strict and v == low):
            relation = ">" if strict else ">="
            raise AggregationError(f"{name} needs a finite {key} {relation} 0, got {v!r}")
    for key in ("max_iter", "iters"):
        v = options.get(key)
        if v is not None and (not _is_int(v) or v < 1):
            raise AggregationError(f"{name} needs an integer {key} >= 1, got {v!r}")


# ---------------------------------------------------------------------------------------------
# Rules


def mean(x: npt.ArrayLike, weights: npt.ArrayLike | None = None) -> Vector:
    """The (weighted) mean ``sum_i w_i x_i / sum_i w_i``; uniform weights when ``None``.

    Not robust: a single input can move it arbitrarily. The baseline the other rules are
    compared with.
    """
    a = as_matrix(x, "mean")
    if weights is None:
        out: Vector = a.mean(axis=0)
        return out
    w = _normalized_weights(weights, a.shape[0], "mean")
    out = w @ a
    return out


def median(x: npt.ArrayLike) -> Vector:
    """Coordinate-wise median (Yin et al., 2018).

    For an even count the median of a coordinate is the mean of its two middle values, as
    :func:`numpy.median` computes it.
    """
    a = as_matrix(x, "median")
    out: Vector = np.median(a, axis=0)
    return out


def trimmed_mean(x: npt.ArrayLike, f: int) -> Vector:
    """Coordinate-wise trimmed mean (Yin et al., 2018): per coordinate, drop the ``f`` largest
    and the ``f`` smallest values and average the ``n - 2f`` others. Needs ``n > 2f``.
    """
    a = as_matrix(x, "trimmed_mean")
    n = a.shape[0]
    check_rule("trimmed_mean", n, f)
    out: Vector = np.sort(a, axis=0)[f : n - f].mean(axis=0)
    return out


def _krum_scores(sq_dists: Matrix, f: int) -> Vector:
    """Sum of squared distances from each row to its ``n - f - 1`` nearest other rows."""
    n = sq_dists.shape[0]
    # Sorted, each row starts with its own zero distance (or an equal zero of a duplicate).
    scores: Vector = np.sort(sq_dists, axis=1)[:, 1 : n - f].sum(axis=1)
    return scores


def krum(x: npt.ArrayLike, f: int) -> Vector:
    """Krum (Blanchard et al., 2017): the input with the smallest score.

    The score of ``x_i`` is the sum of squared distances to its ``n - f - 1`` nearest other
    inputs, that is to the ``n - f`` nearest inputs counting ``x_i`` itself. This is ByzFL's
    convention; Blanchard et al. use ``n - f - 2`` neighbours. Ties go to the lexicographically
    smaller input.

    Precondition ``n > 2f``, as ByzFL checks (so ByzFL's example ``n=3, f=1`` is valid).
    Blanchard et al. prove (α, f)-resilience only for ``n > 2f + 2``; below that Krum still
    returns one of the inputs, but without that guarantee.
    """
    a = as_matrix(x, "krum")
    check_rule("krum", a.shape[0], f)
    best = canonical_order(_krum_scores(pairwise_sq_distances(a), f), a)[0]
    out: Vector = a[best].copy()
    return out


def multi_krum(x: npt.ArrayLike, f: int, m: int | None = None) -> Vector:
    """Multi-Krum (Blanchard et al., 2017; El Mhamdi et al., 2018): the mean of the ``m`` inputs
    with the smallest Krum scores (see :func:`krum` for the score). ``m`` defaults to ``n - f``
    as in ByzFL. Needs ``n > 2f`` and ``1 <= m <= n``. Ties go to the lexicographically
    smaller input.
    """
    a = as_matrix(x, "multi_krum")
    n = a.shape[0]
    check_rule("multi_krum", n, f, m=m)
    k = n - f if m is None else int(m)
    order = canonical_order(_krum_scores(pairwise_sq_distances(a), f), a)
    out: Vector = a[order[:k]].mean(axis=0)
    return out


def geometric_median(
    x: npt.ArrayLike,
    nu: float = 0.1,
    max_iter: int = 100,
    tol: float = 1e-7,
    *,
    init: npt.ArrayLike | None = None,
    weights: npt.ArrayLike | None = None,
) -> Vector:
    """Approximate geometric median ``argmin_z sum_i a_i ||z - x_i||`` by the smoothed Weiszfeld
    algorithm of Pillutla et al. (2019, RFA):

        ``z <- sum_i b_i x_i / sum_i b_i``  with  ``b_i = a_i / max(nu, ||z - x_i||)``,

    where ``a_i`` are the normalized ``weights`` (uniform by default). It stops after
    ``max_iter`` iterations or once a step moves ``z`` by at most ``tol`` (absolute, in the
    units of ``x``). ``init`` is the starting point, by default the coordinate-wise median,
    which keeps the result translation-equivariant.

    ByzFL's ``GeometricMedian(nu=0.1, T=3)`` is ``max_iter=3, tol=0, init=zeros``.
    """
    a = as_matrix(x, "geometric_median")
    n, d = a.shape
    check_rule("geometric_median", n, 0, nu=nu, max_iter=max_iter, tol=tol)
    alpha = _normalized_weights(weights, n, "geometric_median")
    z = np.median(a, axis=0) if init is None else _as_vector(init, d, "geometric_median", "init")
    for _ in range(max_iter):
        dist = np.linalg.norm(a - z, axis=1)
        beta = alpha / np.maximum(dist, nu)
        z_next = (beta @ a) / beta.sum()
        step = float(np.linalg.norm(z_next - z))
        z = z_next
        if step <= tol:
            break
    out: Vector = z
    return out


def centered_clip(
    x: npt.ArrayLike, tau: float, iters: int = 1, center: npt.ArrayLike | None = None
) -> Vector:
    """Centered clipping (Karimireddy, He & Jaggi, 2021), ``iters`` times from ``v = center``:

        ``v <- v + (1/n) sum_i (x_i - v) min(1, tau / ||x_i - v||)``.

    The paper starts from the previous aggregate (momentum); callers that have one, such as a
    peer's previous aggregate or its own model, should pass it as ``center``. By default the
    start is the coordinate-wise median, a robust and translation-equivariant choice (ByzFL
    starts from the zero vector, i.e. ``center=zeros``). Needs ``tau > 0`` and ``iters >= 1``.
    """
    a = as_matrix(x, "centered_clip")
    n, d = a.shape
    check_rule("centered_clip", n, 0, tau=tau, iters=iters)
    v = np.median(a, axis=0) if center is None else _as_vector(center, d, "centered_clip", "center")
    for _ in range(iters):
        diff = a - v
        norms = np.linalg.norm(diff, axis=1)
        scale = np.ones_like(norms)
        np.divide(tau, norms, out=scale, where=norms > tau)
        v = v + (scale[:, None] * diff).mean(axis=0)
    out: Vector = v
    return out


def bulyan(x: npt.ArrayLike, f: int) -> Vector:
    """Bulyan (El Mhamdi, Guerraoui & Rouault, 2018) over Krum. Needs ``n >= 4f + 3``.

    1. Selection: ``theta = n - 2f`` times, pick the Krum winner of the inputs not yet picked
       (Krum with the same ``f`` and :func:`krum`'s neighbour count ``n' - f - 1`` over the
       ``n'`` remaining inputs) and remove it.
    2. Aggregation: per coordinate, average the ``beta = theta - 2f = n - 4f`` selected values
       closest to the coordinate-wise median of the selection.

    ByzFL has no Bulyan; this follows the paper except for the Krum neighbour count.
    """
    a = as_matrix(x, "bulyan")
    n = a.shape[0]
    check_rule("bulyan", n, f)
    sq = pairwise_sq_distances(a)
    remaining = np.arange(n)
    selected: list[int] = []
    for _ in range(n - 2 * f):
        sub = sq[np.ix_(remaining, remaining)]
        pick = canonical_order(_krum_scores(sub, f), a[remaining])[0]
        selected.append(int(remaining[pick]))
        remaining = np.delete(remaining, pick)
    chosen = a[selected]
    beta = n - 4 * f
    med = np.median(chosen, axis=0)
    # The selection order is canonical, so a stable sort keeps the result order-independent.
    closest = np.argsort(np.abs(chosen - med), axis=0, kind="stable")[:beta]
    out: Vector = np.take_along_axis(chosen, closest, axis=0).mean(axis=0)
    return out


Rule = Callable[..., Vector]

RULES: Mapping[str, Rule] = MappingProxyType(
    {
        "mean": mean,
        "median": median,
        "trimmed_mean": trimmed_mean,
        "krum": krum,
        "multi_krum": multi_krum,
        "geometric_median": geometric_median,
        "centered_clip": centered_clip,
        "bulyan": bulyan,
    }
)
"""Every rule by name; :func:`check_rule` knows the same names."""
