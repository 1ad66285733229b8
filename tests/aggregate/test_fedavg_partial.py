"""FedAvg and partial aggregation math."""

from __future__ import annotations

import numpy as np
import pytest

from fltorrent.aggregate import fedavg, partial_aggregate
from fltorrent.errors import AggregationError


def test_fedavg_is_the_sample_weighted_mean() -> None:
    a, b = np.array([1.0, 2.0]), np.array([3.0, 6.0])
    np.testing.assert_array_equal(fedavg([(a, 1), (b, 3)]), [2.5, 5.0])
    np.testing.assert_array_equal(fedavg([(a, 5)]), a)


def test_fedavg_is_deterministic_for_a_given_order() -> None:
    rng = np.random.default_rng(0)
    ups = [
        (rng.normal(size=1000).astype(np.float32), float(rng.integers(1, 100))) for _ in range(7)
    ]
    assert np.array_equal(fedavg(ups), fedavg(list(ups)))
    np.testing.assert_allclose(fedavg(ups), fedavg(ups[::-1]), rtol=1e-12)


@pytest.mark.parametrize(
    ("updates", "match"),
    [
        ([], "at least one"),
        ([(np.ones(2), -1.0)], "non-negative"),
        ([(np.ones(2), 0.0)], "sum to zero"),
        ([(np.ones(2), 1.0), (np.ones(3), 1.0)], "shape"),
        ([(np.ones(2), float("nan"))], "finite"),
    ],
)
def test_fedavg_preconditions(updates: list[tuple[np.ndarray, float]], match: str) -> None:
    with pytest.raises(AggregationError, match=match):
        fedavg(updates)


def test_partial_equals_fedavg_with_complete_delivery() -> None:
    rng = np.random.default_rng(1)
    authors = [(rng.normal(size=30), float(w)) for w in (10, 20, 30)]
    cuts = [0, 7, 19, 30]
    chunks = [[(v[cuts[c] : cuts[c + 1]], w) for v, w in authors] for c in range(3)]
    own = [authors[0][0][cuts[c] : cuts[c + 1]] for c in range(3)]
    got = np.concatenate(partial_aggregate(own, chunks))
    np.testing.assert_allclose(got, fedavg(authors), rtol=0, atol=1e-12)


def test_partial_renormalizes_per_chunk_and_keeps_own_when_nothing_arrived() -> None:
    own = [np.array([1.0, 1.0]), np.array([5.0])]
    received = [
        [(np.array([1.0, 1.0]), 1.0), (np.array([4.0, 7.0]), 2.0)],  # own + one author
        [],  # nothing delivered for chunk 1 (not even our own in the list)
    ]
    out = partial_aggregate(own, received)
    np.testing.assert_allclose(out[0], [3.0, 5.0])
    np.testing.assert_array_equal(out[1], [5.0])
    with pytest.raises(AggregationError, match="2 own chunks but 1"):
        partial_aggregate(own, received[:1])
