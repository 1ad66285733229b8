"""What a round plan is, what it sees of the peer, and the pieces every plan is built from.

A *round plan* decides who sends what to whom in one round: which topics peers publish (an
update, an aggregated range of chunks, ...), which blobs and pieces this peer wants from which
author, when each phase of the exchange is complete or may end at its deadline, what is kept
and dropped, and how what arrived becomes the peer's next model. The peer trains and publishes
its update (``fltorrent.stages``), then awaits :meth:`RoundPlan.exchange`, then evaluates.

A plan never touches sockets (the swarm moves bytes; the plan only says what it wants) and holds
no math of its own: aggregation goes through the peer's :class:`~fltorrent.defense.Defense`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from fltorrent.defense import Defense, DefenseReport
from fltorrent.learn.chunking import ChunkPlan
from fltorrent.learn.update_codec import Decoded, decode_updates, manifest_problem
from fltorrent.membership import Membership
from fltorrent.phases import Phase, RoundPolicy
from fltorrent.swarm import UPDATE, Blob, Buffer, Manifest, Swarm, Topic

log = logging.getLogger(__name__)
_T = TypeVar("_T")
Vectors = list[np.ndarray]
NOBODY = 0  # peer ids start at 1
Held = dict[int, tuple[float, bytes, list[Buffer | None]]]
"""Per author: its weight, its manifest metadata and its pieces (``None`` where missing)."""


@dataclass
class RoundContext:
    """What a plan works with in one round; built by the peer after it published."""

    round: int
    me: int
    swarm: Swarm
    membership: Membership
    neighbours: Collection[int]
    chunk_plan: ChunkPlan
    defense: Defense
    policy: RoundPolicy
    base: Vectors  # the round-start model
    own: Vectors  # this peer's contribution, and the value kept where nothing arrived
    own_weight: float | None  # None: it published nothing this round
    sent: Vectors | None  # its update as the others decode it (None: it published nothing)
    judge_mask: Sequence[np.ndarray]  # per chunk, the coordinates the outlier filter judges
    compute: Callable[[Callable[[], Any], Callable[[], float]], Awaitable[tuple[Any, float]]]
    """Runs local compute (in the worker, or charged to the virtual clock): (fn, flops)."""
    enter: Callable[[Phase], None]  # the peer enters a phase (status, fault hooks)
    now: Callable[[], float]
    load: Callable[[Vectors], None]  # replace the peer's model
    observe: Callable[[Sequence[np.ndarray], Mapping[int, Mapping[int, np.ndarray]]], None]
    quorum: int | None = None  # overcommitted selection: use the first updates to arrive
    min_participants: int = 1  # updates (own included) before the soft deadline may end it
    completion: float = 0.0  # share of the expected pieces held (status, metrics)


@dataclass(frozen=True)
class RoundOutcome:
    """What the exchange and aggregation of one round did (for the round's metrics)."""

    report: DefenseReport
    deadline_hit: bool
    exchange_s: float
    aggregate_s: float
    authors_expected: int
    pieces_received: int
    pieces_expected: int
    completion: float
    consensus_distance: float | None = None  # neighbours: spread of the models this peer saw
    owned_chunks: int = 0  # reduce_scatter: chunks this peer owned (aggregated for everyone)
    owner_disagreements: int = 0  # reduce_scatter: chunks whose owners published two values
    fallback_chunks: int = 0  # reduce_scatter: chunks this peer aggregated itself


class RoundPlan(ABC):
    """Who sends what to whom, per round (see the module docstring)."""

    name: str = ""

    def keep(self, manifest: Manifest, round_: int) -> bool:
        """Whether a blob is still kept (served) during ``round_``: this round and the one
        before it, whose late peers may still be fetching."""
        return manifest.round >= round_ - 1

    def allows(self, peer: int) -> bool:
        """Whether a peer that is not an overlay neighbour may open a session with us."""
        return False

    def membership_changed(self, swarm: Swarm, membership: Membership) -> None:
        """A member left, rejoined or sits a round out (the plan may re-plan the round)."""
        return

    @abstractmethod
    def begin(self, round_: int, swarm: Swarm, membership: Membership) -> None:
        """Before training: drop what is no longer kept and say what is wanted, so that blobs
        of fast peers arrive while this one trains."""

    @abstractmethod
    async def exchange(self, ctx: RoundContext) -> RoundOutcome:
        """After publishing: exchange by the plan's phases, aggregate, load the next model."""

    def check(self, manifest: Manifest, chunk_plan: ChunkPlan) -> str | None:
        """Why a manifest's topic and shape cannot be used by this plan (``None``: fine)."""
        if manifest.topic != UPDATE:
            return f"topic {manifest.topic} is not part of plan {self.name}"
        return manifest_problem(chunk_plan, manifest.meta, manifest.piece_sizes)


# ---------------------------------------------------------------------- shared pieces
def round_blobs(
    swarm: Swarm, membership: Membership, round_: int, topic: Topic = UPDATE
) -> dict[int, Blob]:
    """The other authors' blobs of ``round_`` and ``topic``; an author with two different ones
    (manifests told apart by their hashes, which neighbours relay) is caught equivocating: both
    are ignored and it is not waited for in this round."""
    found: dict[int, Blob] = {}
    twice: set[int] = set()
    me = membership.me
    for b in swarm.blobs.values():
        m = b.manifest
        if m.round != round_ or m.author == me or m.topic != topic:
            continue
        if m.author in found:
            twice.add(m.author)
        found[m.author] = b
    caught = membership.caught(round_)
    for author in twice - caught:
        report_equivocation(me, round_, author)
    caught |= twice
    for author in caught:
        found.pop(author, None)
    return found


def report_equivocation(me: int, round_: int, author: int) -> None:
    """Log that ``author`` was caught with two updates in ``round_`` (both are ignored)."""
    log.warning(
        "peer %d round %d: author %d published two different updates; both ignored",
        me,
        round_,
        author,
    )


async def wait_exchange(
    ctx: RoundContext, complete: Callable[[], bool], enough: Callable[[], bool]
) -> bool:
    """Wait until ``complete()``; after the soft deadline (``timeout``) also until ``enough()``
    (``min_completion_ratio`` met), and at the hard deadline in any case. Returns whether a
    deadline ended the wait. The picker is critical in the last ``critical_window`` share of
    the soft deadline."""
    policy, swarm = ctx.policy, ctx.swarm
    if policy.critical_window > 0:
        critical = (1 - policy.critical_window) * policy.timeout
        swarm.set_critical(ctx.round, ctx.now() + critical)
    try:
        # Until the soft deadline only whole updates matter; after it, every piece counts.
        if await swarm.wait_for(complete, policy.timeout, every_piece=False):
            return False
        enough_now = await swarm.wait_for(
            lambda: complete() or enough(), max(0.0, policy.hard_timeout - policy.timeout)
        )
    finally:
        swarm.set_critical(None)
    if not enough_now:
        log.warning(
            "peer %d round %d: hard deadline with completion %.2f < %.2f",
            ctx.me,
            ctx.round,
            ctx.completion,
            policy.min_completion_ratio,
        )
    return True


def held_pieces(blobs: Mapping[int, Blob]) -> Held:
    """Snapshot of what arrived, per author (in the loop thread: pieces keep arriving while the
    worker aggregates; stored pieces are never modified)."""
    return {
        a: (float(b.manifest.num_samples), b.manifest.meta, list(b.pieces))
        for a, b in blobs.items()
    }


def aggregate_updates(
    ctx: RoundContext,
    held: Held,
    *,
    weights: Mapping[int, float] | None = None,
    chunks: Sequence[int] | None = None,
    impartial: bool = False,
    defense: Defense | None = None,
) -> tuple[Vectors, DefenseReport, Decoded]:
    """Decode the held updates and aggregate them through the defence, chunk by chunk.

    ``weights`` replaces the authors' sample counts where given, e.g. by gossip mixing weights;
    under this peer's own id it is the weight of ``ctx.own``, which then takes part even when
    the peer published nothing (gossip mixes the current model). ``chunks`` restricts the
    aggregation to those chunks (a chunk owner's): the result then holds one vector per listed
    chunk, in that order. Authors caught by the protocol (two manifests, corrupt pieces) count
    as flagged and excluded.

    ``impartial``: this peer's own update is judged like any author's, itself included (an
    aggregator for others: co-owners of a chunk then compute the same value from the same
    updates, where a peer aggregating for itself never flags itself). ``defense`` replaces the
    peer's own (its rule, detection and trust state).
    """
    plan = ctx.chunk_plan
    decoded, dropped = decode_updates(plan, ctx.base, held)
    for a, reason in dropped.items():
        log.warning("peer %d: author %d's update dropped: %s", ctx.me, a, reason)
    ctx.observe(ctx.base, {a: v for a, (_, v) in decoded.items()})
    decoded = capped_samples(ctx.me, decoded, ctx.own_weight)
    if (defense or ctx.defense).plain:  # robust rules and detection judge magnitudes themselves
        own_delta = ctx.own if ctx.own_weight is not None else None
        decoded = bounded_norms(ctx.me, ctx.base, decoded, own_delta, ctx.judge_mask)
    own_weight = ctx.own_weight
    if weights is not None:
        decoded = reweighted(decoded, weights)
        own_weight = weights.get(ctx.me, own_weight)
    base, own, mask, others = ctx.base, ctx.own, ctx.judge_mask, decoded
    me = ctx.me
    if impartial:
        if own_weight is not None and ctx.sent is not None:
            others = {**decoded, me: (own_weight, dict(enumerate(ctx.sent)))}
        me, own, own_weight = NOBODY, base, None
    if chunks is not None:
        base = [base[c] for c in chunks]
        own = [own[c] for c in chunks]
        mask = [mask[c] for c in chunks]
        others = {
            a: (w, {i: v[c] for i, c in enumerate(chunks) if c in v})
            for a, (w, v) in others.items()
        }
    members = ctx.membership
    caught = members.equivocated.get(ctx.round, set()) | {
        a for a in members.members if ctx.swarm.banned(a)
    }
    result, report = (defense or ctx.defense).aggregate(
        ctx.round,
        me=me,
        base=base,
        own=own,
        own_weight=own_weight,
        others=others,
        judge_mask=mask,
        chunk_ids=chunks,
    )
    if caught:
        report = dataclasses.replace(
            report,
            judged=sorted(set(report.judged) | caught),
            flagged=sorted(set(report.flagged) | caught),
            excluded=sorted(set(report.excluded) | caught),
        )
    if report.flagged or report.excluded:
        log.info("peer %d round %d: excluded %s", ctx.me, ctx.round, report.excluded)
    return result, report, decoded


def merge_reports(reports: Sequence[DefenseReport]) -> DefenseReport:
    """One report for several aggregations of one round (e.g. chunks aggregated in batches)."""
    if len(reports) == 1:
        return reports[0]
    union = [sorted({a for r in reports for a in getattr(r, f)}) for f in ("judged", "flagged")]
    return DefenseReport(
        judged=union[0],
        flagged=union[1],
        excluded=sorted({a for r in reports for a in r.excluded}),
        fallbacks=sum(r.fallbacks for r in reports),
        chunks_limited=sum(r.chunks_limited for r in reports),
        authors=max((r.authors for r in reports), default=0),
    )


SAMPLE_CAP = 10.0
"""An author's sample count weighs at most this many times the median of the round's counts."""


def capped_samples(me: int, decoded: Decoded, own_weight: float | None) -> Decoded:
    """``decoded`` with each author's claimed sample count capped at ``SAMPLE_CAP`` times the
    median count (this peer's own among them), so that one member claiming 2^40 samples cannot
    make the mean its own update. Needs three counts (with fewer, no median says what is
    normal); honest counts of a skewed partition stay well under the cap (at most 3.1x the
    median over 1,000 peers of the default task)."""
    counts = [w for w, _ in decoded.values()]
    if own_weight is not None:
        counts.append(own_weight)
    if len(counts) < 3:
        return decoded
    limit = SAMPLE_CAP * float(np.median(counts))
    over = sorted(a for a, (w, _) in decoded.items() if w > limit)
    if not over:
        return decoded
    log.warning("peer %d: sample counts of %s capped at %.0f (10x the median)", me, over, limit)
    return {a: (min(w, limit), v) for a, (w, v) in decoded.items()}


class Silence:
    """When members that published nothing stop being waited for (``all_to_all`` for the
    round, ``reduce_scatter`` per owned chunk), from each author's pace in earlier rounds.

    Silence is only ever judged once every other author delivered. An author known to deliver
    (its update completed in an earlier round, ``pace`` seconds after this peer's round start)
    is waited for until ``silence_factor`` x its last pace from the round start: a slow device
    training for minutes is slow every round, and keeps its place. An author never seen to
    deliver (a member that never publishes, a newcomer) gets ``silence_factor`` x the wait so
    far, at least ``silence_floor``. In this peer's first round nobody's pace is known, so
    nobody is given up on before the deadlines: a silent member costs one deadline, not one
    per round (a grace from the first round's own pace cut honest slow trainers off)."""

    def __init__(self) -> None:
        self.pace: dict[int, float] = {}  # author -> seconds from our round start, last delivery
        self.rounds = 0
        self.start = 0.0
        self._seen: set[int] = set()

    def begin(self, now: float) -> None:
        self.rounds += 1
        self.start = now
        self._seen = set()

    def delivered(self, author: int, now: float) -> None:
        """``author``'s update (or its piece of an owned chunk) is complete here."""
        if author not in self._seen:
            self._seen.add(author)
            self.pace[author] = now - self.start

    def deadline(
        self, policy: RoundPolicy, silent: Iterable[int], now: float, waited: float
    ) -> float:
        """When ``silent`` stop counting, judged at ``now`` (every other author delivered)
        after ``waited`` seconds of waiting; ``inf``: not before the deadlines."""
        if policy.silence_factor <= 0 or self.rounds <= 1:
            return math.inf
        t = now + max(policy.silence_floor, policy.silence_factor * waited)
        for a in silent:
            if a in self.pace:
                t = max(t, self.start + policy.silence_factor * self.pace[a])
        return t


NORM_CAP = 3.0
"""An update is at most ``max(NORM_CAP, n / 3)`` times the median size of the round's ``n``."""


def bounded_norms(
    me: int,
    base: Sequence[np.ndarray],
    decoded: Decoded,
    own: Sequence[np.ndarray] | None,
    mask: Sequence[np.ndarray],
) -> Decoded:
    """``decoded`` with each author's delta (its chunks minus ``base``) scaled down to at most
    ``max(NORM_CAP, n / 3)`` times the median size of the round's ``n`` deltas (``own``, this
    peer's update, among them), so that under the plain mean one member publishing huge finite
    values moves the average by at most ``max(3, n / 3) / n`` typical updates with an equal
    sample count (3/8 at n = 8, a third at large n), and by ``10 max(3, n / 3) / (n + 9)`` when
    it also claims the most samples the sample cap lets it (1.8 at n = 8, about 3 at n = 100).
    Size is the root mean square over the judged coordinates (``mask``) of the chunks an author
    delivered, so partial deliveries compare fairly; it bounds the update as a whole, not each
    coordinate: a member can still spend its whole budget on a few coordinates (one class's
    output bias), which only a per-coordinate rule (the robust rules) stops.

    A whole-update bound, not a per-chunk one: single chunks of honest updates differ by more
    than 10x (a class absent from most partitions). Whole honest updates, measured on the
    default task: at most 2.4x the median with 8 peers, 2.6x with 8 peers on a Dirichlet 0.1
    split, 4.7x with 20 peers on Dirichlet 0.1, 5.4x with 100 peers: all under the bound, so
    honest runs are unchanged. Needs three updates."""

    def rms(chunks: Mapping[int, np.ndarray]) -> float:
        total, count = 0.0, 0
        for c, v in chunks.items():
            d = (np.asarray(v, dtype=np.float64) - base[c])[mask[c]]
            total += float(d @ d)
            count += d.size
        return math.sqrt(total / count) if count else 0.0

    sizes = {a: rms(v) for a, (_, v) in decoded.items()}
    pool = list(sizes.values())
    if own is not None:
        pool.append(rms(dict(enumerate(own))))
    if len(pool) < 3:
        return decoded
    limit = max(NORM_CAP, len(pool) / 3) * float(np.median(pool))
    over = sorted(a for a, s in sizes.items() if s > limit)
    if not over:
        return decoded
    log.warning("peer %d: updates of %s scaled down to size %.3g", me, over, limit)
    out = dict(decoded)
    for a in over:
        w, chunks = decoded[a]
        scale = limit / sizes[a]
        out[a] = (
            w,
            {
                c: base[c] + (np.asarray(v, dtype=np.float64) - base[c]) * scale
                for c, v in chunks.items()
            },
        )
    return out


def reweighted(decoded: Decoded, weights: Mapping[int, float]) -> Decoded:
    """``decoded`` with each author's weight replaced where ``weights`` has one."""
    return {a: (weights.get(a, w), v) for a, (w, v) in decoded.items()}


def aggregate_flops(base: Sequence[np.ndarray], contributors: int) -> float:
    """The modelled cost of aggregating ``contributors`` updates (simulated compute)."""
    return float(sum(len(v) for v in base) * 2 * (contributors + 1))
