"""Outlier flags and trust scores for received updates: pure numpy, no I/O, no config.

A peer judges the updates (deltas: the author's model minus the peer's round-start model) chunk
by chunk, since an author may have delivered only some chunks. Per chunk, :func:`flag_chunk`
applies Tukey fences (:func:`iqr_outliers`) to each row's L2 norm, to its cosine similarity
with the coordinate-wise median of the rows and to the share of its signs that agree with that
median's. :func:`flag_authors` turns the per-chunk flags into
each author's flagged share, :func:`flagged` into a set, and :class:`TrustTable` smooths those
sets over rounds into exclusions. :class:`UpdateMomentum` keeps each author's moving average of
its deltas, which a peer judges instead of single rounds (see there why). :func:`detection_rates`
scores flags against known attackers.

These are heuristics against crude attacks (free riding, scaling, sign flipping). Attacks such
as ALIE ("A Little Is Enough", Baruch et al. 2019) and IPM (inner-product manipulation, Xie et
al. 2020) are designed to stay within the spread of honest updates and evade exactly such
filters; the robust rules in :mod:`fltorrent.aggregate.robust` remain the defence for those.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Literal, NamedTuple, TypedDict

import numpy as np
import numpy.typing as npt

from fltorrent.aggregate.fedavg import Vector
from fltorrent.errors import AggregationError


def _is_number(v: object) -> bool:
    """A finite real number (numpy scalars included), not a bool."""
    return not isinstance(v, bool) and isinstance(v, numbers.Real) and math.isfinite(v)


MIN_VALUES = 4
"""Fewest values (and chunk contributors) on which Tukey fences flag anything; see
:func:`iqr_outliers`."""


def iqr_outliers(
    values: npt.ArrayLike,
    k: float = 1.5,
    side: Literal["both", "low", "high"] = "both",
    min_spread: float = 0.0,
) -> npt.NDArray[np.bool_]:
    """Tukey fences: flag values below ``Q1 - k·IQR`` (``side`` "low" or "both") or above
    ``Q3 + k·IQR`` ("high" or "both"), strictly outside. Quartiles are numpy's linearly
    interpolated percentiles of the finite values; NaN and ±inf are always flagged.

    With fewer than 4 finite values no finite value is flagged: there is no majority to define
    "typical", and with linear interpolation the fences cannot flag anything anyway once
    ``k >= 0.5`` (for 3 sorted values the top one is outside only if ``x2 - x1 > 2k(x2 - x0)``).
    With an IQR of 0 (at least half the values equal) any value off the quartiles is flagged,
    unless ``min_spread`` (a floor on the IQR, e.g. the sampling error of a proportion) is set.

    Small samples flag often: linearly interpolated quartiles sit close together, so on Gaussian
    data (simulated) about 5-8 % of values fall outside the k = 1.5 fences for n = 4..7, 4 % for
    n = 8..10, 2.3 % for n = 20 and 1.3 % for n = 50 (0.7 % in the limit).
    """
    if not _is_number(k) or k < 0:
        raise AggregationError(f"iqr_outliers needs a finite k >= 0, got k={k!r}")
    if not _is_number(min_spread) or min_spread < 0:
        raise AggregationError(f"iqr_outliers needs min_spread >= 0, got {min_spread!r}")
    if side not in ("both", "low", "high"):
        raise AggregationError(f"iqr_outliers needs side 'both', 'low' or 'high', got {side!r}")
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1:
        raise AggregationError(f"iqr_outliers needs a 1-D array, got shape {v.shape}")
    finite = np.isfinite(v)
    out = ~finite
    if int(finite.sum()) < MIN_VALUES:
        return out
    q1, q3 = np.percentile(v[finite], [25.0, 75.0])
    spread = max(q3 - q1, min_spread)
    if side in ("both", "low"):
        out |= finite & (v < q1 - k * spread)
    if side in ("both", "high"):
        out |= finite & (v > q3 + k * spread)
    return out


class _Rows(NamedTuple):
    """An ``(n, d)`` array of deltas, which rows are finite, and their coordinate median."""

    a: npt.NDArray[np.float64]
    good: npt.NDArray[np.bool_]
    median: npt.NDArray[np.float64] | None  # None when no row is finite


def _rows(deltas: npt.ArrayLike, name: str) -> _Rows:
    a = np.asarray(deltas, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] == 0:
        raise AggregationError(f"{name} needs an (n, d) array, n >= 1, got {a.shape}")
    good = np.all(np.isfinite(a), axis=1)
    return _Rows(a, good, np.median(a[good], axis=0) if good.any() else None)


def _norms_cosines(rows: _Rows) -> tuple[Vector, Vector]:
    a, good, med = rows
    with np.errstate(over="ignore", invalid="ignore"):
        norms: Vector = np.linalg.norm(a, axis=1)
        cosines: Vector = np.full(a.shape[0], np.nan)
        if med is not None:
            med_norm = float(np.linalg.norm(med))
            dots = a[good] @ med
            denom = norms[good] * med_norm
            cosines[good] = np.where(denom > 0, dots / np.where(denom > 0, denom, 1.0), 0.0)
    cosines[good] = np.clip(cosines[good], -1.0, 1.0)  # rounding; NaN (overflow) stays NaN
    return norms, cosines


def _sign_shares(rows: _Rows) -> Vector:
    a, good, med = rows
    out: Vector = np.full(a.shape[0], np.nan)
    if med is not None and a.shape[1] > 0:
        out[good] = np.mean(np.sign(a[good]) == np.sign(med), axis=1)
    return out


def update_statistics(deltas: npt.ArrayLike) -> tuple[Vector, Vector]:
    """``(norms, cosines)`` of the rows of an ``(n, d)`` array: each row's L2 norm, and its
    cosine similarity to the coordinate-wise median of the finite rows (itself included).

    A cosine is 0 when the row or the median is the zero vector. A row with a NaN or inf gets
    a non-finite norm and a NaN cosine, and is left out of the median.
    """
    return _norms_cosines(_rows(deltas, "update_statistics"))


def sign_agreement(deltas: npt.ArrayLike) -> Vector:
    """Each row's share of coordinates whose sign equals the sign of the coordinate-wise median
    of the finite rows (a zero matches only a zero); NaN for a row with a NaN or inf.

    The statistic of SignGuard (Xu et al., 2022) in one number: late in training, honest
    updates on non-IID data are nearly orthogonal to each other, so cosines to the median
    crowd towards 0 for honest and sign-flipped rows alike, while the share of agreeing signs
    still separates them (measured in docs/BENCHMARKS.md, "Byzantine robustness").
    """
    return _sign_shares(_rows(deltas, "sign_agreement"))


def flag_chunk(
    deltas: npt.ArrayLike,
    k: float = 1.5,
    averages: npt.ArrayLike | None = None,
    burst_k: float = 3.0,
) -> npt.NDArray[np.bool_]:
    """Flag the rows of an ``(n, d)`` chunk of deltas that look like crude attacks.

    A row is flagged when its norm is outside the fences on either side (a zero, free-riding
    update is a low outlier; a scaled one a high outlier), or its cosine to the median or its
    sign agreement with the median (:func:`sign_agreement`) is below the low fence (sign
    flipping), or it is not finite. Fewer than 4 rows: only non-finite rows are flagged.
    ALIE/IPM-style attacks are built to pass this test (see the module docstring).

    With ``averages`` (each author's moving average of its deltas, row for row: see
    :class:`UpdateMomentum`) those fences judge the averages, and the round's own deltas are
    judged for bursts only: a norm above Tukey's outer fence, ``Q3 + burst_k·IQR`` (3 by
    default, "far out"; 0 turns it off). Zero-mean attacks such as added noise cancel out of
    an average; honest norms in a single round are heavy-tailed (non-IID data, unequal step
    counts), hence the outer fence.

    Honest rows are flagged too, as four one-sided fences add up: in simulation (rows = a
    common vector + noise of the same norm, 400 draws) 5.0 % of rows at n = 20 and 5.5 % at
    n = 16 (4.0 % and 4.2 % without the sign fence); 0.4-0.9 % when norms spread 0.5-1.5x.
    """
    x = np.asarray(deltas, dtype=np.float64)
    judged = _rows(x if averages is None else averages, "flag_chunk")  # one median for both
    if judged.a.shape != x.shape:
        raise AggregationError(f"flag_chunk: averages {judged.a.shape} for deltas {x.shape}")
    norms, cosines = _norms_cosines(judged)
    signs = _sign_shares(judged)
    # Shares of d signs tie easily (e.g. all rows agree on every sign: IQR 0); a share's
    # sampling error, at most 0.5 / sqrt(d), is the least spread the sign fence assumes.
    floor = 0.5 / math.sqrt(max(x.shape[1], 1))
    out: npt.NDArray[np.bool_] = (
        iqr_outliers(norms, k, "both")
        | iqr_outliers(cosines, k, "low")
        | iqr_outliers(signs, k, "low", min_spread=floor)
    )
    if averages is not None:
        if not _is_number(burst_k) or burst_k < 0:
            raise AggregationError(f"flag_chunk needs burst_k >= 0, got burst_k={burst_k!r}")
        if burst_k > 0:
            with np.errstate(over="ignore", invalid="ignore"):
                out |= iqr_outliers(np.linalg.norm(x, axis=1), burst_k, "high")
    return out


Rows = Mapping[int, Sequence[tuple[int, npt.ArrayLike]]]


def _chunk_rows(
    rows: Sequence[tuple[int, npt.ArrayLike]], c: int
) -> tuple[list[int], list[npt.NDArray[np.float64]]]:
    pairs = sorted(rows, key=lambda p: p[0])
    authors = [int(a) for a, _ in pairs]
    if len(set(authors)) != len(authors):
        raise AggregationError(f"flag_authors: chunk {c} has an author twice: {authors}")
    return authors, [np.asarray(v, dtype=np.float64).ravel() for _, v in pairs]


def _stack(rows: list[npt.NDArray[np.float64]], c: int) -> npt.NDArray[np.float64]:
    if len({r.size for r in rows}) != 1:
        raise AggregationError(f"flag_authors: chunk {c} has deltas of different lengths")
    return np.stack(rows)


def flag_authors(
    per_chunk: Rows, k: float = 1.5, averages: Rows | None = None, burst_k: float = 3.0
) -> dict[int, float]:
    """Each author's share of flagged chunks among its judged chunks.

    ``per_chunk`` maps a chunk index to the ``(author, delta)`` pairs delivered for that chunk
    (deltas of one chunk share a length); ``averages``, when given, the same authors' moving
    averages (see :func:`flag_chunk`). Each chunk is judged on its own by :func:`flag_chunk`;
    a chunk with fewer than 4 contributors is skipped. Only authors with at least one judged
    chunk appear in the result (the natural ``seen`` set for :meth:`TrustTable.update`).
    """
    judged: dict[int, int] = {}
    hits: dict[int, int] = {}
    for c in sorted(per_chunk):
        authors, rows = _chunk_rows(per_chunk[c], c)
        if len(authors) < MIN_VALUES:
            continue
        avg = None
        if averages is not None:
            avg_authors, avg_rows = _chunk_rows(averages.get(c, ()), c)
            if avg_authors != authors:
                raise AggregationError(f"flag_authors: chunk {c} averages other authors")
            avg = _stack(avg_rows, c)
        mask = flag_chunk(_stack(rows, c), k, avg, burst_k)
        for author, hit in zip(authors, mask.tolist(), strict=True):
            judged[author] = judged.get(author, 0) + 1
            hits[author] = hits.get(author, 0) + int(hit)
    return {a: hits[a] / judged[a] for a in sorted(judged)}


def flagged(shares: Mapping[int, float], min_share: float = 0.5) -> set[int]:
    """Authors whose flagged share is at least ``min_share`` (``0 < min_share <= 1``). An author
    without judged chunks (absent, or a NaN share) is never flagged."""
    if not _is_number(min_share) or not 0 < min_share <= 1:
        raise AggregationError(f"flagged needs 0 < min_share <= 1, got min_share={min_share!r}")
    return {a for a, s in shares.items() if s >= min_share}  # NaN >= x is False


class UpdateMomentum:
    """Each author's exponential moving average of its deltas, chunk by chunk.

    ``m <- beta * m + (1 - beta) * delta``, starting from the author's first delta. Judging the
    averages instead of single rounds is Karimireddy et al.'s "learning from history" (ICML
    2021) applied to detection: the part of an update that repeats (the honest descent
    direction, or its negation by a sign flipper) adds up over rounds, while the round-to-round
    noise of non-IID training averages out. Late in training single honest updates are nearly
    orthogonal and a flipped one looks like any other; their averages still tell them apart.
    The price is a lag: a slow drift shows only after a few rounds (a burst such as a 10x
    scaling still stands out at once, since it moves the average by as much as a whole update).

    A non-finite delta is returned as it is (it gets flagged) and does not enter the average.
    ``beta = 0`` keeps nothing: the statistics are those of the round alone. Memory: one float32
    vector per (author, chunk) judged, i.e. one model per neighbour.
    """

    def __init__(self, beta: float) -> None:
        if not _is_number(beta) or not 0 <= beta < 1:
            raise AggregationError(f"UpdateMomentum needs 0 <= beta < 1, got beta={beta!r}")
        self.beta = float(beta)
        self._avg: dict[tuple[int, int], npt.NDArray[np.float32]] = {}

    def update(self, author: int, chunk: int, delta: npt.ArrayLike) -> Vector:
        """Fold this round's ``delta`` in; returns the author's average for the chunk."""
        d = np.asarray(delta, dtype=np.float64)
        if self.beta == 0 or not np.all(np.isfinite(d)):
            return d
        key = (author, chunk)
        prev = self._avg.get(key)
        avg = d if prev is None or prev.shape != d.shape else self.beta * prev + (1 - self.beta) * d
        self._avg[key] = avg.astype(np.float32)
        return avg


class TrustRecord(NamedTuple):
    """One entry of :attr:`TrustTable.history`: an author's score after a round."""

    round: int
    author: int
    score: float
    flagged: bool


class TrustTable:
    """Per-author trust scores in ``[0, 1]``: lost fast when flagged, regained slowly.

    Each round, every author in ``seen`` that was flagged has its score multiplied by ``decay``;
    one that was not gains ``recovery`` (capped at 1). Authors not seen keep their score. An
    author is excluded while its score is below ``threshold``. The asymmetry is the point: an
    attacker that behaves for a round is not readmitted at once, while an honest peer's rare
    false flag costs it nothing unless it repeats.

    With the defaults (``decay=0.5, recovery=0.1, threshold=0.5, initial=1.0``): one flag leaves
    a fresh peer at 0.5, still in; a second flag within the next rounds (0.25, or 0.3 after one
    clean round) excludes it; it is readmitted after 3 clean rounds (0.25 -> 0.55). Callers
    should also drop the updates flagged in the current round, and keep judging excluded
    authors so they can recover.
    """

    def __init__(
        self,
        decay: float = 0.5,
        threshold: float = 0.5,
        initial: float = 1.0,
        recovery: float = 0.1,
    ) -> None:
        for name, v in (
            ("decay", decay),
            ("threshold", threshold),
            ("initial", initial),
            ("recovery", recovery),
        ):
            if not _is_number(v):
                raise AggregationError(f"TrustTable needs a number for {name}, got {v!r}")
        if not 0 <= decay < 1:
            raise AggregationError(f"TrustTable needs 0 <= decay < 1, got decay={decay!r}")
        if not 0 < threshold <= 1:
            raise AggregationError(
                f"TrustTable needs 0 < threshold <= 1, got threshold={threshold!r}"
            )
        if not 0 <= initial <= 1:
            raise AggregationError(f"TrustTable needs 0 <= initial <= 1, got initial={initial!r}")
        if not 0 < recovery <= 1:
            raise AggregationError(f"TrustTable needs 0 < recovery <= 1, got recovery={recovery!r}")
        self.decay = float(decay)
        self.threshold = float(threshold)
        self.initial = float(initial)
        self.recovery = float(recovery)
        self._scores: dict[int, float] = {}
        self.history: list[TrustRecord] = []

    def update(self, round_: int, seen: set[int], flagged: set[int]) -> None:
        """Apply one round's verdicts; ``flagged`` must be a subset of ``seen``."""
        if not flagged <= seen:
            raise AggregationError(f"TrustTable: flagged {sorted(flagged - seen)} were not seen")
        for author in sorted(seen):
            bad = author in flagged
            old = self.score(author)
            # Rounded so that k recoveries of 0.1 add up to what they should (0.5 + 5 x 0.1 = 1).
            s = round(self.decay * old if bad else min(1.0, old + self.recovery), 12)
            self._scores[author] = s
            self.history.append(TrustRecord(round_, author, s, bad))

    def score(self, author: int) -> float:
        """The author's score; ``initial`` for an author never seen."""
        return self._scores.get(author, self.initial)

    def scores(self) -> dict[int, float]:
        """The scores of every author seen so far, by author id."""
        return dict(sorted(self._scores.items()))

    def is_excluded(self, author: int) -> bool:
        """Whether the author's score (``initial`` if never seen) is below ``threshold``."""
        return self.score(author) < self.threshold

    def excluded(self) -> set[int]:
        """Authors seen so far whose score is below ``threshold``."""
        return {a for a, s in self._scores.items() if s < self.threshold}


class DetectionRates(TypedDict):
    """Result of :func:`detection_rates`; a rate is None when its denominator is 0."""

    true_positive_rate: float | None
    false_positive_rate: float | None
    true_positives: int
    false_positives: int
    attacker_rounds: int
    honest_rounds: int


def detection_rates(
    flagged_by_round: Mapping[int, set[int]],
    attackers: set[int],
    participants_by_round: Mapping[int, set[int]],
) -> DetectionRates:
    """Flags scored against the known ``attackers``, counted in author-rounds.

    ``attacker_rounds`` (``honest_rounds``) counts the (round, participant) pairs whose
    participant is (is not) an attacker; the true positive rate is the share of attacker-rounds
    flagged, the false positive rate the share of honest-rounds flagged. A round missing from
    ``flagged_by_round`` flagged nobody; flagging a non-participant raises AggregationError.
    """
    tp = fp = att = hon = 0
    for r in sorted(set(flagged_by_round) | set(participants_by_round)):
        part = participants_by_round.get(r, set())
        fl = flagged_by_round.get(r, set())
        if not fl <= part:
            raise AggregationError(f"round {r} flags non-participants {sorted(fl - part)}")
        att += len(part & attackers)
        hon += len(part - attackers)
        tp += len(fl & attackers)
        fp += len(fl - attackers)
    return DetectionRates(
        true_positive_rate=tp / att if att else None,
        false_positive_rate=fp / hon if hon else None,
        true_positives=tp,
        false_positives=fp,
        attacker_rounds=att,
        honest_rounds=hon,
    )
