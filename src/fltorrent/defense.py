"""One peer's defence: how it aggregates each chunk over the authors that delivered it.

Without a server every peer is its own aggregator, so every peer runs this on what it received.
Per round:

1. *Deltas.* Each author's chunk vector minus this peer's own round-start chunk: robust rules,
   norms and clipping are about updates, not about absolute weights.
2. *Detection* (optional): per chunk, an IQR filter over the norms of each author's deltas,
   their cosine and sign agreement with the coordinate median
   (:func:`fltorrent.aggregate.trust.flag_authors`); an author flagged on at least
   ``min_share`` of its judged chunks is flagged for the round. With ``momentum > 0`` the
   filter judges each author's moving average of its deltas over the rounds
   (:class:`~fltorrent.aggregate.trust.UpdateMomentum`), and the round's delta only for a
   norm beyond the outer fence ``burst_k`` (bursts, and zero-mean noise that averages out).
3. *Trust* (optional): flagged or not, each author's score moves (decay); an author below the
   threshold is excluded until clean rounds lift it again. A flagged author is excluded in the
   round it is flagged either way; trust keeps excluding the ones that keep misbehaving.
4. *Rule*, per chunk, over the remaining authors (this peer always included when it trained):
   optional pre-aggregation (bucketing, NNM, clipping), then the rule. ``mean`` with no
   pre-aggregation is sample-weighted FedAvg; the other rules ignore self-reported sample
   counts. A chunk with too few contributors for the rule (partial delivery) falls back to the
   coordinate-wise median (counted in ``fallbacks``); a chunk nobody delivered keeps the peer's
   own value, as in plain partial aggregation.

The peer calls :meth:`Defense.aggregate`; the math lives in :mod:`fltorrent.aggregate`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fltorrent.aggregate import (
    PREAGGREGATORS,
    RULES,
    check_preaggregator,
    check_rule,
    partial_aggregate,
)
from fltorrent.aggregate import median as coordinate_median
from fltorrent.aggregate.trust import TrustTable, UpdateMomentum, flag_authors, flagged
from fltorrent.errors import AggregationError, PluginError

Vector = np.ndarray


@dataclass(frozen=True)
class DefenseReport:
    """What the defence did this round (for metrics)."""

    judged: list[int] = field(default_factory=list)  # authors whose updates were judged
    flagged: list[int] = field(default_factory=list)
    excluded: list[int] = field(default_factory=list)
    fallbacks: int = 0  # chunks aggregated by the median for lack of contributors
    chunks_limited: int = 0  # chunks averaged over fewer authors than contributed overall
    authors: int = 0  # authors with at least one chunk in the aggregate (self included)


@dataclass
class Defense:
    """Per-peer aggregation settings and trust state (see the module docstring)."""

    rule: str = "mean"
    rule_options: Mapping[str, Any] = field(default_factory=dict)
    preagg: str = "none"
    preagg_options: Mapping[str, Any] = field(default_factory=dict)
    detection: bool = False
    iqr_k: float = 1.5
    min_share: float = 0.5
    momentum: float = 0.9
    burst_k: float = 3.0
    trust: TrustTable | None = None
    seed: int = 0
    # The user's rule over the (n, d) deltas of one chunk (replaces ``rule``; the runtime wraps
    # it so that its errors carry the user's traceback).
    custom: Callable[[np.ndarray], np.ndarray] | None = None

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise AggregationError(f"unknown aggregation rule {self.rule!r}")
        if self.preagg != "none" and self.preagg not in PREAGGREGATORS:
            raise AggregationError(f"unknown pre-aggregation {self.preagg!r}")
        self._rng = np.random.default_rng(self.seed)
        self._history = UpdateMomentum(self.momentum)

    def fresh(self, seed: int) -> Defense:
        """The same settings with empty state (no trust scores, no detection history) and its
        own random seed: the defence of another aggregation job (a chunk group's owners)."""
        trust = self.trust
        if trust is not None:
            trust = TrustTable(
                decay=trust.decay,
                threshold=trust.threshold,
                initial=trust.initial,
                recovery=trust.recovery,
            )
        return dataclasses.replace(self, trust=trust, seed=seed)

    def excluded(self) -> set[int]:
        """Authors the trust table excludes now (none without trust)."""
        return self.trust.excluded() if self.trust is not None else set()

    @property
    def plain(self) -> bool:
        """Plain sample-weighted partial FedAvg."""
        return (
            self.rule == "mean"
            and self.preagg == "none"
            and not self.detection
            and self.trust is None
            and self.custom is None
        )

    def aggregate(
        self,
        round_: int,
        *,
        me: int,
        base: Sequence[Vector],
        own: Sequence[Vector],
        own_weight: float | None,
        others: Mapping[int, tuple[float, Mapping[int, Vector]]],
        judge_mask: Sequence[np.ndarray] | None = None,
        chunk_ids: Sequence[int] | None = None,
    ) -> tuple[list[Vector], DefenseReport]:
        """The aggregated chunk vectors and a report.

        ``base`` is this peer's round-start model, ``own`` its contribution (weight
        ``own_weight``, ``None`` when it did not train) and the value kept where nothing
        arrived; ``others`` maps each author to its weight and its delivered chunk vectors.
        ``judge_mask[c]`` selects the coordinates of chunk ``c`` the outlier filter looks at
        (e.g. weights, not integer step counters, which differ honestly between peers).
        ``chunk_ids[c]`` is the model chunk that position ``c`` stands for, when the lists hold
        a subset of the chunks (a chunk owner's): the detection history is kept per model chunk.
        """
        flagged_now: set[int] = set()
        excluded: set[int] = set()
        judged: list[int] = []
        if self.detection or self.trust is not None:
            judged, flagged_now, excluded = self._judge(
                round_,
                me,
                base=base,
                own=own,
                own_weight=own_weight,
                others=others,
                mask=judge_mask,
                chunk_ids=chunk_ids,
            )
        authors = sorted({me, *others} - excluded)
        per_chunk: list[list[tuple[int, Vector, float]]] = []
        for c in range(len(own)):
            contributions = []
            for a in authors:
                if a == me:
                    if own_weight is not None:
                        contributions.append((a, own[c], own_weight))
                elif c in others[a][1]:
                    contributions.append((a, others[a][1][c], others[a][0]))
            per_chunk.append(contributions)
        contributors = {a for chunk in per_chunk for a, _, _ in chunk}
        limited = sum(1 for chunk in per_chunk if len(chunk) < len(contributors))
        if self.plain or not contributors:
            out = partial_aggregate(own, [[(v, w) for _, v, w in ch] for ch in per_chunk])
            return out, DefenseReport(
                judged, sorted(flagged_now), sorted(excluded), 0, limited, len(contributors)
            )
        result: list[Vector] = []
        fallbacks = 0
        for c, chunk in enumerate(per_chunk):
            if not chunk:
                result.append(np.asarray(own[c], dtype=np.float64))
                continue
            deltas = np.stack([np.asarray(v, dtype=np.float64) - base[c] for _, v, _ in chunk])
            weights = np.array([w for _, _, w in chunk])
            delta, fell_back = self._robust(deltas, weights)
            fallbacks += fell_back
            result.append(np.asarray(base[c], dtype=np.float64) + delta)
        return result, DefenseReport(
            judged, sorted(flagged_now), sorted(excluded), fallbacks, limited, len(contributors)
        )

    def _robust(self, deltas: np.ndarray, weights: np.ndarray) -> tuple[Vector, bool]:
        if self.custom is not None:
            out = np.asarray(self.custom(deltas), dtype=np.float64)
            if out.shape != deltas.shape[1:] or not np.all(np.isfinite(out)):
                raise PluginError(
                    f"robust.rule_factory returned {out.shape}, not a finite vector of "
                    f"{deltas.shape[1:]} for deltas of shape {deltas.shape}"
                )
            return out, False
        x = deltas
        n = len(x)
        try:
            if self.preagg != "none":
                check_preaggregator(self.preagg, n, self.rule_options.get("f", 0))
                if self.preagg == "bucketing":
                    x = PREAGGREGATORS[self.preagg](x, rng=self._rng, **self.preagg_options)
                else:
                    x = PREAGGREGATORS[self.preagg](x, **self.preagg_options)
            options = {k: v for k, v in self.rule_options.items() if v is not None}
            check_rule(self.rule, len(x), **options)
        except AggregationError:
            return coordinate_median(deltas), True
        if self.rule == "mean":
            mean_weights = weights if self.preagg == "none" else None
            return RULES["mean"](x, weights=mean_weights), False
        return RULES[self.rule](x, **options), False

    def _judge(
        self,
        round_: int,
        me: int,
        *,
        base: Sequence[Vector],
        own: Sequence[Vector],
        own_weight: float | None,
        others: Mapping[int, tuple[float, Mapping[int, Vector]]],
        mask: Sequence[np.ndarray] | None,
        chunk_ids: Sequence[int] | None = None,
    ) -> tuple[list[int], set[int], set[int]]:
        """Flag this round's outliers and update trust; returns (judged, flagged, excluded)."""
        per_chunk: dict[int, list[tuple[int, Vector]]] = {}
        averages: dict[int, list[tuple[int, Vector]]] | None = {} if self.momentum > 0 else None
        for c in range(len(base)):
            keep = mask[c] if mask is not None else slice(None)
            if mask is not None and not mask[c].any():
                continue
            rows = [(me, (np.asarray(own[c]) - base[c])[keep])] if own_weight is not None else []
            rows += [
                (a, (np.asarray(vectors[c]) - base[c])[keep])
                for a, (_, vectors) in sorted(others.items())
                if c in vectors
            ]
            per_chunk[c] = rows
            if averages is not None:
                key = chunk_ids[c] if chunk_ids is not None else c
                averages[c] = [(a, self._history.update(a, key, d)) for a, d in rows]
        flagged_now: set[int] = set()
        judged: list[int] = []
        if self.detection:
            shares = flag_authors(
                per_chunk,
                k=self.iqr_k,
                averages=averages,
                burst_k=self.burst_k,
            )
            judged = sorted(set(shares) - {me})
            flagged_now = flagged(shares, self.min_share) - {me}
        if self.trust is None:
            return judged, flagged_now, set(flagged_now)
        self.trust.update(round_, set(judged), flagged_now)
        return judged, flagged_now, (self.trust.excluded() | flagged_now) - {me}
