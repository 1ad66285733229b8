"""Byzantine attack vectors: pure functions computing a malicious update.

Two kinds:

* from the attacker's own honest update ``own`` (a ``(d,)`` array): :func:`sign_flip`,
  :func:`scale`, :func:`gaussian_noise`;
* from the honest updates the attacker can see, ``honest`` (a ``(k, d)`` array; in a
  decentralized swarm, what its neighbours sent it, its own update included if it wants):
  :func:`alie`, :func:`ipm`, :func:`min_max`. These are omniscient attacks in the literature,
  where every Byzantine sender uses the same vector.

Every result is a fresh ``(d,)`` float64 array. Inputs must be finite; a violated precondition
raises :class:`AggregationError` naming the attack (the error of the aggregation package these
attacks are evaluated against). Standard deviations are per coordinate with ``ddof=1`` (the
sample standard deviation), which is what reproduces ByzFL's published ALIE example.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Literal

import numpy as np
import numpy.typing as npt

from fltorrent.aggregate.fedavg import Vector
from fltorrent.aggregate.robust import Matrix, as_matrix
from fltorrent.errors import AggregationError

Perturbation = Literal["std", "unit", "sign"]


def _own(own: npt.ArrayLike, attack: str) -> Vector:
    a = np.array(own, dtype=np.float64)
    if a.ndim != 1 or not np.all(np.isfinite(a)):
        raise AggregationError(f"{attack} needs a finite (d,) update, got shape {a.shape}")
    return a


def _honest(honest: npt.ArrayLike, attack: str, at_least: int) -> Matrix:
    a = as_matrix(honest, attack)
    if a.shape[0] < at_least:
        raise AggregationError(
            f"{attack} needs at least {at_least} honest updates, got {a.shape[0]}"
        )
    return a


def _finite(value: float, attack: str, name: str) -> float:
    if isinstance(value, bool) or not math.isfinite(value):
        raise AggregationError(f"{attack} needs a finite {name}, got {value!r}")
    return float(value)


def sign_flip(own: npt.ArrayLike) -> Vector:
    """``-own``: the attacker's own update, reversed (Allen-Zhu et al., 2021 flip the mean of
    the honest updates instead; that is :func:`ipm` with ``tau=1``)."""
    out: Vector = -_own(own, "sign_flip")
    return out


def scale(own: npt.ArrayLike, factor: float) -> Vector:
    """``factor * own``: a boosted (``|factor| > 1``) or reversed (``factor < 0``) update."""
    out: Vector = _finite(factor, "scale", "factor") * _own(own, "scale")
    return out


def gaussian_noise(own: npt.ArrayLike, sigma: float, rng: np.random.Generator) -> Vector:
    """``own + N(0, sigma^2 I)``, drawn from ``rng``. Needs a finite ``sigma >= 0``.

    Pass ``own = zeros`` for the pure-noise attack.
    """
    a = _own(own, "gaussian_noise")
    s = _finite(sigma, "gaussian_noise", "sigma")
    if s < 0:
        raise AggregationError(f"gaussian_noise needs sigma >= 0, got sigma={sigma!r}")
    out: Vector = a + rng.normal(0.0, s, size=a.shape)
    return out


def alie_z_max(n: int, f: int) -> float:
    """The ``z_max`` of Baruch, Baruch & Goldberg (NeurIPS 2019) for ``n`` senders, ``f`` of
    them Byzantine: with ``s = floor(n/2 + 1) - f`` honest "supporters" needed for a majority,
    ``z_max = Phi^-1((n - s) / n)``, the largest deviation (in standard deviations) that still
    leaves enough honest updates farther from the mean than the attack.

    Needs ``s >= 1``, i.e. ``f <= floor(n/2)``. With few Byzantine senders
    (``s >= n/2``) the value is ``<= 0`` and is returned as computed.
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise AggregationError(f"alie needs an integer n >= 1, got n={n!r}")
    if isinstance(f, bool) or not isinstance(f, int | np.integer) or f < 0:
        raise AggregationError(f"alie needs an integer f >= 0, got f={f!r}")
    s = n // 2 + 1 - f
    if s < 1:
        raise AggregationError(f"alie needs f <= floor(n / 2) to compute z_max, got n={n}, f={f}")
    return NormalDist().inv_cdf((n - s) / n)


def alie(
    honest: npt.ArrayLike,
    tau: float | None = None,
    *,
    n: int | None = None,
    f: int | None = None,
) -> Vector:
    """ALIE, "a little is enough" (Baruch, Baruch & Goldberg, NeurIPS 2019): per coordinate,
    ``mean + tau * std`` of the honest updates, with the sample std (``ddof=1``, as ByzFL).

    Sign: ``+tau`` moves each coordinate up by ``tau`` standard deviations; pass a negative
    ``tau`` for the other direction. ByzFL's ``ALittleIsEnough(tau)`` is this ``tau``.
    ``tau=None`` uses the paper's ``z_max`` (:func:`alie_z_max`) for ``n`` senders of which
    ``f`` Byzantine, which must then be given. Needs at least two honest updates.
    """
    a = _honest(honest, "alie", 2)
    if tau is None:
        if n is None or f is None:
            raise AggregationError("alie needs n and f to compute z_max when tau is None")
        z = alie_z_max(n, f)
    else:
        z = _finite(tau, "alie", "tau")
    out: Vector = a.mean(axis=0) + z * a.std(axis=0, ddof=1)
    return out


def ipm(honest: npt.ArrayLike, tau: float) -> Vector:
    """Inner product manipulation (Xie, Koyejo & Gupta, UAI 2019 "Fall of empires"):
    ``-tau * mean(honest)``.

    ByzFL's ``FallOfEmpires(t)`` returns ``(1 - t) * mean``, so it equals ``ipm(t - 1)``:
    ByzFL's published example ``t=3`` is ``tau=2`` here.
    """
    a = _honest(honest, "ipm", 1)
    out: Vector = -_finite(tau, "ipm", "tau") * a.mean(axis=0)
    return out


def _perturbation(a: Matrix, kind: str) -> Vector:
    mu = a.mean(axis=0)
    if kind == "std":
        p: Vector = -a.std(axis=0, ddof=1)
    elif kind == "unit":
        norm = float(np.linalg.norm(mu))
        p = -mu / norm if norm > 0 else np.zeros_like(mu)
    elif kind == "sign":
        p = -np.sign(mu)
    else:
        raise AggregationError(f"min_max has no perturbation {kind!r}; it takes std, unit, sign")
    return p


def min_max(
    honest: npt.ArrayLike,
    perturbation: Perturbation = "std",
    *,
    tol: float = 1e-6,
    max_iter: int = 200,
) -> Vector:
    """AGR-agnostic Min-Max (Shejwalkar & Houmansadr, NDSS 2021): ``mean + gamma * p`` with the
    largest ``gamma >= 0`` such that the attack is no farther from any honest update than the
    honest updates are from each other::

        max_i ||mean + gamma p - x_i||  <=  max_{i,j} ||x_i - x_j||

    ``p`` is ``-std`` (per coordinate, ``ddof=1``; default), ``-mean / ||mean||`` ("unit") or
    ``-sign(mean)`` ("sign"), the paper's three perturbations. The left side is convex in
    ``gamma`` and holds at ``gamma = 0``, so ``gamma`` is found by doubling then bisection
    until the bracket is narrower than ``tol`` (relative to ``gamma``, at most ``max_iter``
    halvings); the returned ``gamma`` is the feasible end of the bracket, so the bound holds
    exactly. Needs at least two honest updates.
    """
    a = _honest(honest, "min_max", 2)
    t = _finite(tol, "min_max", "tol")
    if t <= 0 or isinstance(max_iter, bool) or max_iter < 1:
        raise AggregationError(
            f"min_max needs tol > 0 and max_iter >= 1, got {tol!r}, {max_iter!r}"
        )
    mu = a.mean(axis=0)
    p = _perturbation(a, perturbation)
    if not np.any(p):
        out: Vector = mu
        return out
    diameter = max(float(np.linalg.norm(a - row, axis=1).max()) for row in a)

    def feasible(gamma: float) -> bool:
        return float(np.linalg.norm(a - (mu + gamma * p), axis=1).max()) <= diameter

    lo, hi = 0.0, 1.0
    while feasible(hi):  # terminates: the distance grows without bound in gamma
        lo, hi = hi, 2.0 * hi
    for _ in range(max_iter):
        if hi - lo <= t * hi:
            break
        mid = 0.5 * (lo + hi)
        if feasible(mid):
            lo = mid
        else:
            hi = mid
    out = mu + lo * p
    return out
