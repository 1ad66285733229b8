"""``reduce_scatter``: chunk owners aggregate, then everyone gathers the aggregated chunks.

Each chunk has ``replicas`` owners this round (:mod:`fltorrent.plans.owners`: deterministic from
the seed, the round and the membership). An author's update goes only to the owners of each of
its chunks (a peer wants exactly the pieces of the chunks it owns, over direct connections the
plan opens to its partners). An owner aggregates each chunk it owns through its defence (robust
rule, detection and trust apply there) once every expected author's piece arrived (or at half
the deadline), and publishes the aggregated chunks as ``AGGREGATE`` blobs (one per run of
consecutive chunks). Every peer then gathers the aggregated chunks it does not own through the
swarm. Per peer and round that is about ``(replicas + 1) x M`` of upload and download, against
``(N - 1) x M`` for ``all_to_all``: the bandwidth-optimal exchange up to the replicas.

Owners are checked against each other. A chunk's value is *settled* once more than half of
``replicas`` votes (aggregates published by its electorate: its owners, and owners that left
after publishing) carry the same piece hash; peers fetch it once, from one of them. Owners that
disagree are counted (``owner_disagreements``); an owner in a dispute keeps the value it
computed itself. When every owner voted and no value has a majority (two owners, two values),
or when no owner published anything by the soft deadline (dead or late owners), a peer
aggregates that chunk itself from the authors' pieces (``fallback_chunks``): authors keep
serving their updates for the whole round, and every chunk owner holds them. A departed owner's
chunks fall to the next member on the ring, which fetches the pieces and publishes in its place
unless the chunk is settled already. An author that published nothing is given up on once
every other author's piece of a chunk arrived and its time passed, as in ``all_to_all``
(:class:`~fltorrent.plans.base.Silence`). At the deadline, partial aggregation holds per
chunk: a chunk with no value keeps this peer's own.

Over 500 lines, knowingly: wants, votes, fallbacks and the exchange loop are one state machine
over the same round state; the owner ring (``owners.py``) and the shared helpers (``base.py``)
are split out.

Over 500 lines on purpose: the plan's two phases (owners aggregate, everyone gathers) and the
owners' cross-checks read and write the same per-round state; the owner ring is apart already
(``owners.py``).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import numpy as np

from fltorrent.defense import Defense, DefenseReport
from fltorrent.learn.chunking import ChunkPlan
from fltorrent.learn.update_codec import manifest_problem
from fltorrent.membership import Membership
from fltorrent.phases import Phase
from fltorrent.plans.base import (
    RoundContext,
    RoundOutcome,
    RoundPlan,
    Silence,
    Vectors,
    aggregate_flops,
    aggregate_updates,
    held_pieces,
    merge_reports,
)
from fltorrent.plans.owners import Ownership, ranges
from fltorrent.plans.round_index import RoundIndex
from fltorrent.swarm import UPDATE, Blob, Manifest, Swarm, Topic, TopicKind

log = logging.getLogger(__name__)
MAX_WEIGHT = 1 << 40  # as the peer's MAX_SAMPLES: an aggregate's weight is a sum of those
Vote = tuple[int, Blob, int]  # owner's rank among the chunk's owners, its blob, piece index


@dataclass
class _Round:
    """One round's progress."""

    round: int
    owned_since: dict[int, float] = field(default_factory=dict)  # owned chunk -> since when
    published: dict[int, np.ndarray] = field(default_factory=dict)  # our aggregate per chunk
    fallback: dict[int, float] = field(default_factory=dict)  # chunk -> since when
    local: dict[int, np.ndarray] = field(default_factory=dict)  # fallback chunks aggregated
    chosen: dict[int, Vote] = field(default_factory=dict)  # chunk -> the vote to fetch
    settled: set[int] = field(default_factory=set)  # chunks a majority of owners agree on
    disagreed: set[int] = field(default_factory=set)
    reports: list[DefenseReport] = field(default_factory=list)
    aggregate_s: float = 0.0
    wants: tuple[frozenset[int], frozenset[bytes]] = (frozenset(), frozenset())
    here: dict[int, set[int]] = field(default_factory=dict)  # chunk -> authors of it here
    # chunk -> when authors that published nothing stop counting (every other one delivered)
    silent_after: dict[int, float] = field(default_factory=dict)


class ReduceScatter(RoundPlan):
    """See the module docstring."""

    name = "reduce_scatter"

    def __init__(
        self,
        *,
        chunks: int,
        replicas: int = 2,
        seed: int = 0,
        neighbours: Collection[int] = (),
        aggregate_hook: Callable[[int, np.ndarray], np.ndarray] | None = None,
    ) -> None:
        self.chunks = chunks
        self.replicas = replicas
        self.seed = seed
        self.neighbours = neighbours  # the overlay's (live) neighbours: never disconnected
        self._silence = Silence()  # authors' pace, kept across rounds
        # Rewrites an aggregated chunk before it is published: a seam for faults (a Byzantine
        # owner in tests and experiments), like the swarm's serve_hook.
        self.aggregate_hook = aggregate_hook
        self._swarm: Swarm | None = None
        self._members: Membership | None = None
        self._own: Ownership | None = None
        self._st = _Round(0)
        self._defenses: dict[tuple[int, ...], Defense] = {}  # per chunk group (owned)
        self._dialed: set[int] = set()  # partners beyond the overlay that we dialed
        self._previous: set[int] = set()  # last round's partners (late peers still fetch)
        self._co_owners: frozenset[int] = frozenset()  # owners of the chunks we own, but us
        self._index = RoundIndex()  # the round's updates and aggregates, kept up to date
        self._votes_cache: tuple[tuple[int, int], dict[int, list[Vote]]] | None = None

    # ------------------------------------------------------------------ wiring
    def allows(self, peer: int) -> bool:
        """Any member may connect: partners change with the round's owners."""
        return self._members is None or peer in self._members.members

    def begin(self, round_: int, swarm: Swarm, membership: Membership) -> None:
        swarm.drop_blobs(lambda m: not self.keep(m, round_))
        swarm.forget_before(round_ - 1)
        self._swarm, self._members = swarm, membership
        if self._own is not None:
            self._previous = self._own.partners(membership.me)
        self._st = _Round(round_)
        self._silence.begin(asyncio.get_running_loop().time())
        self._replan()

    def membership_changed(self, swarm: Swarm, membership: Membership) -> None:
        if self._swarm is not None and self._st.round:
            self._replan()

    def _replan(self) -> None:
        """Owners and partners from the membership: connect, and say what we want."""
        swarm, members, st = self._swarm, self._members, self._st
        assert swarm is not None and members is not None
        now = asyncio.get_running_loop().time()
        own = Ownership.draw(
            seed=self.seed,
            members=members.members,
            chunks=self.chunks,
            replicas=self.replicas,
            departed=members.departed,
        )
        self._own = own
        self._votes_cache = None  # votes are counted by the electorates of these owners
        mine = own.owned_by(members.me)
        for c in mine:
            st.owned_since.setdefault(c, now)
        self._co_owners = frozenset(p for c in mine for p in own.owners(c)) - {members.me}
        self._connect(self._partners(), members)
        swarm.set_relay(self._relay)
        self._decide(now, float("inf"))
        self._set_want(force=True)

    def _partners(self) -> set[int]:
        """Whom to connect to: the round's partners (and last round's, whose late peers still
        fetch), and every live member while this peer aggregates chunks itself (a fallback
        needs every author's piece; authors announce their own updates to everyone)."""
        own, members = self._own, self._members
        assert own is not None and members is not None
        partners = own.partners(members.me) | self._previous
        if self._st.fallback:
            partners |= set(members.members) - members.departed - {members.me}
        return partners

    def _relay(self, manifest: Manifest) -> Collection[int] | None:
        """Relay other authors' updates to our co-owners only: we hold only the pieces of the
        chunks we own, and nobody else wants those (a peer that falls back gets them from
        their authors). Relay aggregates over the overlay only: every peer hears of each
        aggregate from its owners directly (it has a session with every owner), so a relay
        helps only as a second source, and overlay neighbours are enough for that. Announcing
        every blob over every partner session was forty announces per piece moved (100 peers,
        20 chunks)."""
        if self._own is None:
            return None
        return self._co_owners if manifest.topic == UPDATE else self.neighbours

    def _connect(self, partners: set[int], members: Membership) -> None:
        swarm = self._swarm
        assert swarm is not None
        me, overlay = members.me, set(self.neighbours)
        for q in sorted(partners - overlay):
            address = members.addresses.get(q)
            if q > me and address is not None and not swarm.connected(q):
                swarm.connect(q, address)  # the lower id dials: one connection per pair
                self._dialed.add(q)
        for q in sorted(self._dialed - partners - overlay):
            swarm.disconnect(q)
            self._dialed.discard(q)

    # ------------------------------------------------------------------ wants
    def _update_chunks(self) -> frozenset[int]:
        """Chunks whose authors' pieces we still need: owned and neither aggregated nor settled
        by others, or aggregated here as a fallback."""
        st = self._st
        pending = {c for c in st.owned_since if c not in st.published and c not in st.settled}
        return frozenset(pending | {c for c in st.fallback if c not in st.local})

    def _set_want(self, *, force: bool = False) -> None:
        """Tell the swarm, when it changed, which pieces we want."""
        st, swarm, members = self._st, self._swarm, self._members
        assert swarm is not None and members is not None
        wants = (self._update_chunks(), frozenset(v[1].blob_id for v in st.chosen.values()))
        if st.fallback and not st.wants[0] and wants[0]:
            self._connect(self._partners(), members)  # falling back: reach every author
        if force or bool(wants[0]) != bool(st.wants[0]):
            st.wants = wants  # which blobs are wanted changed: fetch their manifests
            swarm.set_want(self._want, self._pieces)
        elif wants != st.wants:
            st.wants = wants  # only which pieces: no manifest to fetch
            swarm.refresh_pieces()

    def _want(self, round_: int, author: int, topic: Topic) -> bool:
        members, own = self._members, self._own
        if members is None or own is None or round_ != self._st.round or author == members.me:
            return False
        if topic == UPDATE:
            return bool(self._st.wants[0])
        if topic.kind is TopicKind.AGGREGATE and topic.last <= self.chunks:
            return any(author in own.electorate(c) for c in range(topic.first, topic.last))
        return False

    def _pieces(self, manifest: Manifest) -> frozenset[int] | None:
        if manifest.topic == UPDATE:
            return self._st.wants[0]
        first = manifest.topic.first
        chosen = self._st.chosen
        return frozenset(
            c - first
            for c in range(first, manifest.topic.last)
            if c in chosen and chosen[c][1].blob_id == manifest.blob_id
        )

    def check(self, manifest: Manifest, chunk_plan: ChunkPlan) -> str | None:
        topic = manifest.topic
        if topic == UPDATE:
            return manifest_problem(chunk_plan, manifest.meta, manifest.piece_sizes)
        if topic.kind is not TopicKind.AGGREGATE:
            return f"topic {topic} is not part of plan {self.name}"
        if not topic.first < topic.last <= chunk_plan.num_chunks:
            return f"aggregated chunks [{topic.first}, {topic.last}) are not chunks of our plan"
        sizes = tuple(chunk_plan.chunks[c].nbytes for c in range(topic.first, topic.last))
        if manifest.meta != chunk_plan.digest() or manifest.piece_sizes != sizes:
            return "aggregated chunks do not match our chunk plan"
        return None

    # ------------------------------------------------------------------ votes
    def _votes(self) -> dict[int, list[Vote]]:
        """Per chunk, the aggregates its electorate published (ours included); recomputed only
        when the swarm's set of blobs or the owners changed (at 1,000 peers, scanning every
        blob at each wake-up was a third of the run)."""
        swarm, members, own = self._swarm, self._members, self._own
        assert swarm is not None and members is not None and own is not None
        self._index.sync(swarm, members, self._st.round)
        key = (self._st.round, self._index.version)
        if self._votes_cache is None or self._votes_cache[0] != key:
            self._votes_cache = (key, self._count_votes())
        return self._votes_cache[1]

    def _count_votes(self) -> dict[int, list[Vote]]:
        members, own = self._members, self._own
        assert members is not None and own is not None
        r = self._st.round
        seen: dict[tuple[int, Topic], Blob | None] = {}
        for b in self._index.aggregates:
            m = b.manifest
            key = (m.author, m.topic)
            if key in seen:  # two aggregates for one (author, round, topic): ignore both
                if seen[key] is not None:
                    log.warning("peer %d round %d: owner %d equivocated", members.me, r, m.author)
                seen[key] = None
            else:
                seen[key] = b
        votes: dict[int, list[Vote]] = {}
        for (author, topic), blob in seen.items():
            if blob is None or topic.last > self.chunks:
                continue
            for c in range(topic.first, topic.last):
                voters = own.electorate(c)
                if author in voters:
                    votes.setdefault(c, []).append((voters.index(author), blob, c - topic.first))
        return votes

    def _decide(self, now: float, soft: float) -> None:
        """Per chunk: the value most owners agree on and where to fetch it; disagreements;
        chunks to aggregate here (no majority among all owners, or nobody published by the
        soft deadline)."""
        st, own = self._st, self._own
        assert own is not None
        votes = self._votes()
        st.chosen, st.settled = {}, set()
        for c in range(self.chunks):
            ballot = votes.get(c, [])
            if not ballot:
                if now >= soft and c not in st.owned_since:
                    st.fallback.setdefault(c, now)  # its owners are late or dead
                continue
            by_hash: dict[bytes, list[Vote]] = {}
            for vote in ballot:
                by_hash.setdefault(vote[1].manifest.piece_hashes[vote[2]], []).append(vote)
            groups = sorted(by_hash.values(), key=lambda g: (-len(g), min(v[0] for v in g)))
            if len(groups) > 1 and c not in st.disagreed:
                st.disagreed.add(c)
                authors = sorted(v[1].manifest.author for v in ballot)
                log.warning(
                    "peer %d round %d: owners %s of chunk %d disagree",
                    self._me(),
                    st.round,
                    authors,
                    c,
                )
            best = groups[0]
            if 2 * len(best) > self.replicas:
                st.settled.add(c)
            elif self._all_voted(c, ballot) and c not in st.owned_since:
                st.fallback.setdefault(c, now)  # every owner voted, no majority
            held = [v for v in best if v[1].has(v[2])]
            if held:
                st.chosen[c] = min(held, key=lambda v: v[0])
            else:  # spread the gathering over the agreeing owners' uplinks
                ranked = sorted(best, key=lambda v: v[0])
                st.chosen[c] = ranked[(self._me() + c) % len(ranked)]

    def _all_voted(self, c: int, ballot: list[Vote]) -> bool:
        assert self._own is not None
        voted = {v[1].manifest.author for v in ballot}
        return all(p in voted for p in self._own.owners(c))

    def _me(self) -> int:
        assert self._members is not None
        return self._members.me

    # ------------------------------------------------------------------ progress
    def _update_blobs(self, ctx: RoundContext) -> dict[int, Blob]:
        """The round's updates (read-only: the index keeps them)."""
        self._index.sync(ctx.swarm, ctx.membership, ctx.round)
        return self._index.updates()

    def _expected(self, ctx: RoundContext, blobs: dict[int, Blob]) -> set[int]:
        return ctx.membership.expected(ctx.round, blobs)

    def _arrived(
        self, ctx: RoundContext, blobs: dict[int, Blob], c: int, expected: set[int] | None = None
    ) -> tuple[bool, float]:
        """Whether every expected author's piece ``c`` is here (or will never come), and the
        share of them that is here. Authors whose piece is here are remembered for the round
        (a piece once verified stays), so that each call looks only at the others."""
        if expected is None:
            expected = self._expected(ctx, blobs)
        if not expected:
            return True, 1.0
        swarm, members, r = ctx.swarm, ctx.membership, ctx.round
        arrived = self._st.here.setdefault(c, set())
        gone = silent = 0
        for a in expected - arrived:
            blob = blobs.get(a)
            if blob is not None and blob.has(c):
                arrived.add(a)
                self._silence.delivered(a, ctx.now())
            elif (members.away(a, r) or swarm.banned(a)) and (
                blob is None or not swarm.obtainable(blob)
            ):
                gone += 1
            elif blob is None:
                silent += 1
        here = len(expected & arrived)
        if silent and here + gone + silent == len(expected):
            quiet = [a for a in expected - arrived if blobs.get(a) is None]
            if self._silence_over(ctx, c, quiet):
                gone += silent
        return here + gone == len(expected), here / len(expected)

    def _silence_over(self, ctx: RoundContext, c: int, silent: list[int]) -> bool:
        """Every author of chunk ``c`` delivered but ``silent``, which published nothing:
        whether these had their time (:class:`~fltorrent.plans.base.Silence`, the wait counted
        from when chunk ``c`` became ours or a fallback)."""
        st = self._st
        now = ctx.now()
        if c not in st.silent_after:
            since = st.owned_since.get(c, st.fallback.get(c, now))
            at = self._silence.deadline(ctx.policy, silent, now, now - since)
            st.silent_after[c] = at
            if at < math.inf:
                asyncio.get_running_loop().call_at(at, ctx.swarm.notify)  # wake the loop then
        return now >= st.silent_after[c]

    def _ready(self, ctx: RoundContext, now: float) -> list[int]:
        """Owned chunks to aggregate now: all pieces here, or half the deadline passed. Chunks
        with the same owners go together (see :meth:`_aggregate`): a group is ready when each
        of its chunks is."""
        st, policy, own = self._st, ctx.policy, self._own
        assert own is not None
        blobs = self._update_blobs(ctx)
        expected = self._expected(ctx, blobs)
        groups: dict[tuple[int, ...], list[int]] = {}
        waiting: set[tuple[int, ...]] = set()
        for c, since in st.owned_since.items():
            if c in st.published or c in st.settled:  # settled: others aggregated it already
                continue
            key = tuple(own.owners(c))
            groups.setdefault(key, []).append(c)
            complete, share = self._arrived(ctx, blobs, c, expected)
            soft = now >= since + policy.timeout / 2 and share >= policy.min_completion_ratio
            if not (complete or soft or now >= since + policy.hard_timeout / 2):
                waiting.add(key)
        return sorted(c for key, chunks in groups.items() if key not in waiting for c in chunks)

    def _fallback_ready(self, ctx: RoundContext) -> list[int]:
        st = self._st
        blobs = self._update_blobs(ctx)
        return sorted(
            c
            for c in st.fallback
            if c not in st.local and c not in st.settled and self._arrived(ctx, blobs, c)[0]
        )

    def _resolved(self, c: int) -> bool:
        """Whether chunk ``c``'s value for the next model is here."""
        st = self._st
        if c in st.local:
            return True
        vote = st.chosen.get(c)
        if c in st.settled:
            return vote is not None and vote[1].has(vote[2])
        # An owner in a dispute (or with silent co-owners at the end) keeps its own value.
        return c in st.published and c in st.disagreed

    def _progress(self, ctx: RoundContext) -> tuple[int, int]:
        """Pieces here and expected: the owned chunks' update pieces, then one aggregated
        piece per chunk. Sets ``ctx.completion``."""
        st = self._st
        blobs = self._update_blobs(ctx)
        authors = len(self._expected(ctx, blobs))
        owned = list(st.owned_since)
        expected = len(owned) * authors + self.chunks
        received = sum(1 for c in range(self.chunks) if self._resolved(c))
        for c in owned:
            received += sum(1 for b in blobs.values() if b.has(c))
        ctx.completion = min(1.0, received / expected) if expected else 1.0
        return received, expected

    def _timers(self, ctx: RoundContext, t0: float) -> list[float]:
        policy, st = ctx.policy, self._st
        times = [t0 + policy.timeout, t0 + policy.hard_timeout]
        times += [t for t in st.silent_after.values() if t < math.inf]
        for c, since in st.owned_since.items():
            if c not in st.published:
                times += [since + policy.timeout / 2, since + policy.hard_timeout / 2]
        return times

    # ------------------------------------------------------------------ exchange
    async def exchange(self, ctx: RoundContext) -> RoundOutcome:
        ctx.enter(Phase.EXCHANGING)
        swarm, policy, st = ctx.swarm, ctx.policy, self._st
        t0 = ctx.now()
        soft, hard = t0 + policy.timeout, t0 + policy.hard_timeout
        if policy.critical_window > 0:
            swarm.set_critical(ctx.round, t0 + (1 - policy.critical_window) * policy.timeout)
        deadline_hit = False
        try:
            while True:
                now = ctx.now()
                self._decide(now, soft)
                self._set_want()
                if ready := self._ready(ctx, now):
                    await self._aggregate(ctx, ready, publish=True)
                    continue
                if ready := self._fallback_ready(ctx):
                    await self._aggregate(ctx, ready, publish=False)
                    continue
                self._progress(ctx)
                if all(self._resolved(c) for c in range(self.chunks)):
                    break
                enough = ctx.completion >= policy.min_completion_ratio
                if now >= hard or (now >= soft and enough):
                    deadline_hit = True
                    break
                wake = min(t for t in self._timers(ctx, t0) if t > now)
                await swarm.wait_for(
                    lambda: self._actionable(ctx),
                    wake - now,
                    every_piece=self._per_piece(ctx, now),
                )
        finally:
            swarm.set_critical(None)
        exchange_s = ctx.now() - t0
        received, expected = self._progress(ctx)
        if deadline_hit:
            log.warning(
                "peer %d round %d: deadline with completion %.2f",
                ctx.me,
                ctx.round,
                ctx.completion,
            )
        ctx.enter(Phase.AGGREGATING)
        vectors = self._assemble(ctx)
        _, load_s = await ctx.compute(lambda: ctx.load(vectors), lambda: 0.0)
        return RoundOutcome(
            report=merge_reports(st.reports) if st.reports else DefenseReport(),
            deadline_hit=deadline_hit,
            exchange_s=exchange_s,
            aggregate_s=st.aggregate_s + load_s,
            authors_expected=len(self._expected(ctx, self._update_blobs(ctx))),
            pieces_received=received,
            pieces_expected=expected,
            completion=ctx.completion,
            owned_chunks=len(st.owned_since),
            owner_disagreements=len(st.disagreed),
            fallback_chunks=len(st.fallback),
        )

    def _per_piece(self, ctx: RoundContext, now: float) -> bool:
        """Whether the exchange must look again at every verified piece. The swarm wakes it
        anyway when a wanted blob's wanted pieces are all here (an author's pieces of our
        chunks, a chosen aggregate); that is enough while the pieces we await from authors
        make one chunk group, which becomes ready only with all of them (at 1,000 peers an
        owner verifies a thousand pieces a round). Not when they span several groups or
        fallbacks (one may be ready before the blob is done), nor once a half deadline
        passed (a share of pieces is then enough)."""
        st, own = self._st, self._own
        assert own is not None
        waiting = [c for c in self._update_chunks() if c in st.owned_since]
        if len({tuple(own.owners(c)) for c in waiting}) > 1 or any(
            c not in st.local for c in st.fallback
        ):
            return True
        half = ctx.policy.timeout / 2
        return any(now >= st.owned_since[c] + half for c in waiting)

    def _actionable(self, ctx: RoundContext) -> bool:
        """Wake the exchange loop: something to aggregate, choose or finish."""
        self._decide(ctx.now(), float("inf"))
        if self._set_want_changed():
            return True
        now = ctx.now()
        if self._ready(ctx, now) or self._fallback_ready(ctx):
            return True
        return all(self._resolved(c) for c in range(self.chunks))

    def _set_want_changed(self) -> bool:
        before = self._st.wants
        self._set_want()
        return self._st.wants != before

    async def _aggregate(self, ctx: RoundContext, chunks: list[int], *, publish: bool) -> None:
        """Aggregate ``chunks`` from the authors' pieces; publish them (owned) or keep them
        (fallback). Chunks are aggregated in groups of the same owners, so that co-owners judge
        the same chunks together (detection flags an author over the chunks it is judged on)."""
        assert self._own is not None
        groups: dict[tuple[int, ...], list[int]] = {}
        for c in chunks:
            groups.setdefault(tuple(self._own.owners(c)), []).append(c)
        for group in groups.values():
            await self._aggregate_group(ctx, group, publish=publish)

    def _defense(self, ctx: RoundContext, chunks: list[int]) -> Defense:
        """The defence of a chunk group that this peer owns: its own trust scores and history,
        seeded by the group, so that co-owners that judged the same updates agree."""
        key = tuple(chunks)
        defense = self._defenses.get(key)
        if defense is None:
            seed = int(np.random.default_rng([self.seed, *key]).integers(1 << 62))
            defense = self._defenses[key] = ctx.defense.fresh(seed)
        return defense

    async def _aggregate_group(
        self, ctx: RoundContext, chunks: list[int], *, publish: bool
    ) -> None:
        st = self._st
        held = held_pieces(self._update_blobs(ctx))
        # Owned chunks: the group's defence; a fallback: this peer's own judgement.
        defense = self._defense(ctx, chunks) if publish else ctx.defense

        def work() -> tuple[Vectors, DefenseReport, float]:
            vectors, report, decoded = aggregate_updates(
                ctx, held, chunks=chunks, impartial=True, defense=defense
            )
            weight = sum(w for w, v in decoded.values() if any(c in v for c in chunks))
            return vectors, report, weight + (ctx.own_weight or 0.0)

        (vectors, report, weight), seconds = await ctx.compute(
            work, lambda: aggregate_flops([ctx.base[c] for c in chunks], len(held))
        )
        st.aggregate_s += seconds
        st.reports.append(report)
        values = dict(zip(chunks, vectors, strict=True))
        if not publish:
            st.local.update(values)
            return
        st.published.update(values)
        if self.aggregate_hook is not None:  # what others get; the owner keeps its own value
            values = {c: self.aggregate_hook(c, v) for c, v in values.items()}
        plan = ctx.chunk_plan
        samples = int(min(max(weight, 1.0), MAX_WEIGHT))
        for first, last in ranges(chunks):
            pieces = [plan.vector_to_chunk(c, values[c]) for c in range(first, last)]
            manifest = Manifest.build(
                author=ctx.me,
                round=ctx.round,
                pieces=pieces,
                num_samples=samples,
                meta=plan.digest(),
                topic=Topic(TopicKind.AGGREGATE, first, last),
            )
            ctx.swarm.publish(manifest, pieces, verify=False)
        self._set_want()

    def _assemble(self, ctx: RoundContext) -> Vectors:
        """The next model, chunk by chunk: the agreed aggregate, else one aggregated here, else
        this peer's own unsettled aggregate, else the best-supported aggregate that arrived, else
        this peer's own chunk."""
        st, plan = self._st, ctx.chunk_plan
        self._decide(ctx.now(), float("inf"))
        out: Vectors = []
        for c in range(self.chunks):
            vote = st.chosen.get(c)
            fetched = vote is not None and vote[1].has(vote[2])
            if fetched and c in st.settled and vote is not None:
                out.append(_value(plan, c, vote))
            elif c in st.local:
                out.append(st.local[c])
            elif c in st.published:  # unsettled: an owner trusts what it computed
                out.append(st.published[c])
            elif fetched and vote is not None:
                out.append(_value(plan, c, vote))
            else:
                out.append(np.asarray(ctx.own[c], dtype=np.float64))
        return out


def _value(plan: ChunkPlan, chunk: int, vote: Vote) -> np.ndarray:
    data = vote[1].pieces[vote[2]]
    assert data is not None
    return plan.chunk_to_vector(chunk, data)
