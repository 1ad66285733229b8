"""Partitioners: split a training set over clients, IID or label-skewed, deterministically.

Every partitioner returns one sorted int64 index array per client, uses each index at most once
and depends only on its arguments (its randomness comes from ``np.random.default_rng(seed)``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fltorrent.errors import LearnError

PARTITION_METHODS: tuple[str, ...] = ("iid", "dirichlet", "shards", "natural")
"""The methods :func:`partition` understands."""

DIRICHLET_MAX_TRIES = 1000


def partition(
    labels: np.ndarray,
    num_clients: int,
    *,
    method: str = "dirichlet",
    alpha: float = 0.5,
    shards_per_client: int = 2,
    seed: int = 0,
    min_samples: int = 10,
    groups: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Split the indices of ``labels`` over ``num_clients`` clients.

    - ``iid``: a shuffled split into equal parts (sizes differ by at most one).
    - ``dirichlet``: per class, proportions p ~ Dir(alpha) over the clients cut that class's
      shuffled indices (Hsu et al. 2019); redrawn until every client has ``min_samples``.
    - ``shards``: sort by label, cut into ``num_clients * shards_per_client`` shards and deal
      ``shards_per_client`` random shards to each client (McMahan et al. 2017).
    - ``natural``: client k gets the k-th distinct value of ``groups`` (sorted); with more
      groups than clients, groups k, k + n, k + 2n, ... (whole writers, say).

    ``alpha`` and ``min_samples`` only apply to ``dirichlet``, ``shards_per_client`` only to
    ``shards`` and ``groups`` only to ``natural``; each is validated only where it applies.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise LearnError(f"labels must be one-dimensional, got shape {labels.shape}")
    if num_clients < 1:
        raise LearnError(f"num_clients must be at least 1, got {num_clients}")
    n = len(labels)
    if num_clients > n:
        raise LearnError(f"cannot split {n} samples over {num_clients} clients")
    rng = np.random.default_rng(seed)
    if method == "iid":
        parts = np.array_split(rng.permutation(n), num_clients)
    elif method == "dirichlet":
        parts = _dirichlet(labels, num_clients, alpha=alpha, min_samples=min_samples, rng=rng)
    elif method == "shards":
        parts = _shards(labels, num_clients, shards_per_client=shards_per_client, rng=rng)
    elif method == "natural":
        parts = _natural(n, num_clients, groups=groups)
    else:
        raise LearnError(
            f"unknown partition method {method!r}; known methods: {', '.join(PARTITION_METHODS)}"
        )
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def _dirichlet(
    labels: np.ndarray,
    num_clients: int,
    *,
    alpha: float,
    min_samples: int,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    if not alpha > 0:
        raise LearnError(f"dirichlet alpha must be positive, got {alpha}")
    if min_samples < 0:
        raise LearnError(f"min_samples must be non-negative, got {min_samples}")
    if min_samples * num_clients > len(labels):
        raise LearnError(
            f"{num_clients} clients with at least {min_samples} samples each need "
            f"{min_samples * num_clients} samples, only {len(labels)} exist"
        )
    by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    for _ in range(DIRICHLET_MAX_TRIES):
        pieces: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        for members in by_class:
            idx = rng.permutation(members)
            p = rng.dirichlet(np.full(num_clients, alpha))
            cuts = (np.cumsum(p)[:-1] * len(idx)).astype(np.int64)
            for client, part in enumerate(np.split(idx, cuts)):
                pieces[client].append(part)
        parts = [np.concatenate(p) for p in pieces]
        if min(len(p) for p in parts) >= min_samples:
            return parts
    raise LearnError(
        f"no Dirichlet({alpha}) partition over {num_clients} clients gave every client "
        f"{min_samples} samples in {DIRICHLET_MAX_TRIES} tries; raise alpha or lower min_samples"
    )


def _shards(
    labels: np.ndarray, num_clients: int, *, shards_per_client: int, rng: np.random.Generator
) -> list[np.ndarray]:
    if shards_per_client < 1:
        raise LearnError(f"shards_per_client must be at least 1, got {shards_per_client}")
    num_shards = num_clients * shards_per_client
    if num_shards > len(labels):
        raise LearnError(f"cannot cut {len(labels)} samples into {num_shards} shards")
    # Shuffle before the stable sort so that which samples of a class share a shard is random.
    order = rng.permutation(len(labels))
    order = order[np.argsort(labels[order], kind="stable")]
    shards = np.array_split(order, num_shards)
    deal = rng.permutation(num_shards).reshape(num_clients, shards_per_client)
    return [np.concatenate([shards[s] for s in row]) for row in deal]


def _natural(n: int, num_clients: int, *, groups: np.ndarray | None) -> list[np.ndarray]:
    if groups is None:
        raise LearnError("the natural partition needs the dataset's groups; this one has none")
    groups = np.asarray(groups)
    if groups.shape != (n,):
        raise LearnError(f"groups must have one entry per sample ({n}), got shape {groups.shape}")
    distinct = np.unique(groups)
    if len(distinct) < num_clients:
        raise LearnError(
            f"the natural partition has {len(distinct)} groups, too few for {num_clients} clients"
        )
    if len(distinct) > num_clients:
        # More groups (writers) than clients: client k gets groups k, k + n, k + 2n, ...
        owner = np.searchsorted(distinct, groups) % num_clients
        return [np.flatnonzero(owner == k) for k in range(num_clients)]
    return [np.flatnonzero(groups == g) for g in distinct]


def split_test_like(
    train_parts: Sequence[np.ndarray], y_train: np.ndarray, y_test: np.ndarray, *, seed: int = 0
) -> list[np.ndarray]:
    """Local test sets drawn from the global one with each client's train label distribution.

    For each class, the (shuffled) test indices of that class are cut among the clients in
    proportion to their train counts of that class, so the parts are disjoint and a client with
    no train sample of a class gets no test sample of it. Returns sorted int64 indices into
    ``y_test``, one array per client.
    """
    y_train = np.asarray(y_train)
    y_test = np.asarray(y_test)
    for given in train_parts:
        part = np.asarray(given)
        if part.size and (part.min() < 0 or part.max() >= len(y_train)):
            raise LearnError("train_parts contain indices outside y_train")
    rng = np.random.default_rng(seed)
    pieces: list[list[np.ndarray]] = [[] for _ in train_parts]
    for c in np.unique(y_test):
        counts = np.array([np.count_nonzero(y_train[np.asarray(p)] == c) for p in train_parts])
        total = int(counts.sum())
        if total == 0:
            continue
        idx = rng.permutation(np.flatnonzero(y_test == c))
        # Integer arithmetic keeps the cuts exact: client k gets [cum_{k-1}, cum_k) * m / total.
        cuts = np.cumsum(counts)[:-1] * len(idx) // total
        for client, part in enumerate(np.split(idx, cuts)):
            pieces[client].append(part)
    return [
        np.sort(np.concatenate(p)).astype(np.int64) if p else np.zeros(0, dtype=np.int64)
        for p in pieces
    ]
