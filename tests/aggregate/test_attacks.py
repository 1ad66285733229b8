"""Attack vectors: published examples and the defining properties of each attack."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pytest

from fltorrent.attacks import alie, alie_z_max, gaussian_noise, ipm, min_max, scale, sign_flip
from fltorrent.errors import AggregationError

X = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])


def test_byzfl_examples() -> None:
    # ALittleIsEnough(1.5): mean [4, 5, 6] + 1.5 * sample std (ddof=1) [3, 3, 3].
    np.testing.assert_allclose(alie(X, 1.5), [8.5, 9.5, 10.5])
    # FallOfEmpires(3) = (1 - 3) * mean, which is ipm with tau = 2.
    np.testing.assert_allclose(ipm(X, 2.0), [-8.0, -10.0, -12.0])


def test_own_update_attacks() -> None:
    own = np.array([1.0, -2.0, 0.5])
    np.testing.assert_array_equal(sign_flip(own), -own)
    np.testing.assert_array_equal(scale(own, -3.0), -3.0 * own)
    out = sign_flip(own)
    out[0] = 7.0
    assert own[0] == 1.0
    a = gaussian_noise(own, 0.1, np.random.default_rng(4))
    np.testing.assert_array_equal(a, gaussian_noise(own, 0.1, np.random.default_rng(4)))
    np.testing.assert_array_equal(gaussian_noise(own, 0.0, np.random.default_rng(4)), own)
    big = gaussian_noise(np.zeros(100_000), 2.0, np.random.default_rng(0))
    assert abs(big.mean()) < 0.05 and abs(big.std() - 2.0) < 0.05


def test_alie_sign_and_z_max() -> None:
    x = np.random.default_rng(1).normal(size=(8, 5))
    mu, sd = x.mean(axis=0), x.std(axis=0, ddof=1)
    np.testing.assert_allclose(alie(x, 1.0), mu + sd)
    np.testing.assert_allclose(alie(x, -1.0), mu - sd)
    # Baruch et al.: s = floor(n/2 + 1) - f supporters, z_max = Phi^-1((n - s) / n).
    assert alie_z_max(50, 12) == pytest.approx(NormalDist().inv_cdf((50 - 14) / 50))
    assert alie_z_max(50, 24) > alie_z_max(50, 12) > 0
    np.testing.assert_allclose(alie(x, n=10, f=2), mu + alie_z_max(10, 2) * sd)


def test_ipm_reverses_the_mean() -> None:
    x = np.random.default_rng(2).normal(size=(6, 4))
    assert float(ipm(x, 0.5) @ x.mean(axis=0)) < 0
    np.testing.assert_allclose(ipm(x, 1.0), -x.mean(axis=0))


@pytest.mark.parametrize("perturbation", ["std", "unit", "sign"])
@pytest.mark.parametrize(("k", "d"), [(2, 3), (5, 10), (12, 40)])
def test_min_max_stays_within_the_honest_diameter(perturbation: str, k: int, d: int) -> None:
    for seed in range(4):
        x = np.random.default_rng(seed).normal(loc=0.3, size=(k, d))
        diameter = max(np.linalg.norm(x - row, axis=1).max() for row in x)
        out = min_max(x, perturbation)  # type: ignore[arg-type]
        reach = np.linalg.norm(x - out, axis=1).max()
        assert reach <= diameter
        # gamma is the largest feasible one, up to the bisection tolerance.
        assert reach >= diameter * (1 - 1e-4)
        assert np.linalg.norm(out - x.mean(axis=0)) > 0


def test_min_max_examples() -> None:
    # mean [4, 5, 6] - gamma * std [3, 3, 3] reaches x_3 at distance sqrt(108) for gamma = 1.
    np.testing.assert_allclose(min_max(X), [1.0, 2.0, 3.0], atol=1e-5)
    same = np.tile([1.0, 2.0], (4, 1))
    np.testing.assert_array_equal(min_max(same), [1.0, 2.0])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: alie(X[:1], 1.0), "alie needs at least 2 honest updates, got 1"),
        (lambda: alie(X), "alie needs n and f to compute z_max"),
        (lambda: alie(X, n=4, f=3), "alie needs f <= floor\\(n / 2\\)"),
        (lambda: alie(X, float("nan")), "alie needs a finite tau"),
        (lambda: alie_z_max(0, 0), "alie needs an integer n >= 1"),
        (lambda: ipm(np.ones(3), 1.0), "ipm needs an \\(n, d\\) array"),
        (lambda: min_max(X[:1]), "min_max needs at least 2 honest updates"),
        (lambda: min_max(X, "cos"), "min_max has no perturbation 'cos'"),  # type: ignore[arg-type]
        (lambda: min_max(X, tol=0.0), "min_max needs tol > 0"),
        (lambda: sign_flip(X), "sign_flip needs a finite \\(d,\\) update"),
        (lambda: scale([1.0, np.inf], 2.0), "scale needs a finite \\(d,\\) update"),
        (
            lambda: gaussian_noise(X[0], -1.0, np.random.default_rng(0)),
            "gaussian_noise needs sigma >= 0",
        ),
    ],
)
def test_attack_preconditions(call: object, message: str) -> None:
    with pytest.raises(AggregationError, match=message):
        call()  # type: ignore[operator]
