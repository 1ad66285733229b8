"""The round loop of one participant, as a pipeline of stages.

Each round a :class:`Peer` runs, in order:

1. *begin*: its round plan drops what is no longer kept and says which blobs it wants (so that
   fast peers' updates arrive while this one trains);
2. *train*: asks its :class:`~fltorrent.devices.device.Device` whether to train (battery,
   charging, heat) and with which codec, then trains (:class:`~fltorrent.learn.learner.Learner`);
3. *privatize*: an injected :data:`~fltorrent.stages.Privatizer` (the identity by default);
4. *publish*: an injected :class:`~fltorrent.stages.Publisher` encodes and publishes the update
   (an attack is another publisher, injected by the runtime);
5. *exchange and aggregate*: the round plan (:mod:`fltorrent.plans`) runs its phases over the
   swarm and loads the next model through the peer's :class:`~fltorrent.defense.Defense`;
6. *evaluate* and *report* (one :class:`RoundMetrics` per round).

The peer holds no protocol details, no math and no attack code. Membership bookkeeping (departed,
sitting out, rejoined, equivocated) lives in one :class:`~fltorrent.membership.Membership`.
A peer that sits a round out still receives, relays and aggregates; it tells the others through
``on_skip`` so that nobody waits for its update. Time is the event loop's clock: in simulation
(``simulated=True``) compute runs inline and is charged to the virtual clock from its FLOP count
and the device's speed; in real mode it runs in the executor and a slower device is emulated by
padding the measured time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from fltorrent.defense import Defense
from fltorrent.devices.device import Device, Participation
from fltorrent.learn.learner import Learner, LocalUpdate
from fltorrent.learn.update_codec import UpdateEncoder
from fltorrent.membership import Membership
from fltorrent.net.base import Address
from fltorrent.peer_metrics import round_metrics
from fltorrent.phases import FaultHook, PeerCrash, Phase, RoundPolicy
from fltorrent.plans.all_to_all import AllToAll
from fltorrent.plans.base import RoundContext, RoundPlan, round_blobs
from fltorrent.selection import Selector
from fltorrent.stages import (
    HonestPublisher,
    Privatizer,
    PublishContext,
    Publisher,
    Scaffold,
    ServerMomentum,
    Trained,
    no_privacy,
)
from fltorrent.swarm import Manifest, Swarm
from fltorrent.telemetry.events import RoundMetrics

__all__ = ["FaultHook", "Peer", "PeerCrash", "PeerStatus", "Phase", "RoundPolicy"]

log = logging.getLogger(__name__)
_T = TypeVar("_T")
MAX_SAMPLES = 1 << 40  # an aggregation weight beyond this is a lie, not a dataset


@dataclass
class PeerStatus:
    """A snapshot for the status API."""

    peer: int
    phase: Phase
    round: int
    completion: float
    accuracy: float | None


class Peer:
    """One participant's round loop."""

    def __init__(
        self,
        *,
        peer_id: int,
        learner: Learner,
        swarm: Swarm,
        members: set[int],
        policy: RoundPolicy,
        executor: Executor | None = None,
        on_metrics: Callable[[RoundMetrics], None] | None = None,
        on_phase: Callable[[PeerStatus], None] | None = None,
        on_skip: Callable[[int], None] | None = None,
        fault_hook: FaultHook | None = None,
        device: Device | None = None,
        simulated: bool = False,
        encoder: UpdateEncoder | None = None,
        clock_origin: float | None = None,
        defense: Defense | None = None,
        plan: RoundPlan | None = None,
        selector: Selector | None = None,
        publisher: Publisher | None = None,
        privatizer: Privatizer = no_privacy,
        neighbours: Collection[int] = (),
        addresses: Mapping[int, Address] | None = None,
        server_step: ServerMomentum | None = None,
        scaffold: Scaffold | None = None,
    ) -> None:
        self.peer_id = peer_id
        self.learner = learner
        self.swarm = swarm
        self.membership = Membership(peer_id, members, addresses)
        self.neighbours = neighbours
        self.policy = policy
        self.executor = executor
        self.on_metrics = on_metrics
        self.on_phase = on_phase
        self.on_skip = on_skip
        self.fault_hook = fault_hook
        self.device = device
        self.simulated = simulated
        self.encoder = encoder or UpdateEncoder(learner.plan, seed=learner.seed)
        self.defense = defense or Defense()
        self.plan = plan or AllToAll()
        self.selector = selector or Selector()
        self.publisher: Publisher = publisher or HonestPublisher()
        self.privatizer = privatizer
        self.server_step = server_step  # FedAvgM on the aggregate (None: load it as it is)
        self.scaffold = scaffold  # SCAFFOLD's control variates (None: plain local steps)
        chunks = learner.plan
        self._weights_mask = [chunks.floating(c) for c in range(chunks.num_chunks)]
        self.phase = Phase.STARTING
        self.round = 0
        self._ctx: RoundContext | None = None
        self.accuracy: float | None = None
        self.history: list[RoundMetrics] = []
        self.last_update: LocalUpdate | None = None  # this round's own update, before aggregation
        loop = asyncio.get_running_loop()
        self._start = loop.time()
        self._origin = self._start if clock_origin is None else clock_origin

    # ------------------------------------------------------------------ status
    @property
    def completion(self) -> float:
        """Share of the pieces expected this round that arrived."""
        return self._ctx.completion if self._ctx is not None else 0.0

    def status(self) -> PeerStatus:
        """Where this peer is."""
        return PeerStatus(self.peer_id, self.phase, self.round, self.completion, self.accuracy)

    def _enter(self, phase: Phase) -> None:
        self.phase = phase
        if self.fault_hook is not None:
            self.fault_hook(self.peer_id, self.round, phase)
        if self.on_phase is not None:
            self.on_phase(self.status())

    def member_left(self, peer_id: int) -> None:
        """The tracker says ``peer_id`` is gone: stop waiting for it."""
        # Only the round's waiting changes: the tracker is not in the data path, so a session
        # with that peer (if it is in fact alive) is left alone.
        if self.membership.left(peer_id):
            self._membership_changed()

    def member_joined(self, peer_id: int, first_round: int, address: Address | None = None) -> None:
        """``peer_id`` is back (it rejoined after a crash, listening at ``address``): expect its
        updates again from ``first_round`` on (it skips the rounds it missed)."""
        if self.membership.joined(peer_id, first_round, address):
            self._membership_changed()

    def member_skipped(self, peer_id: int, round_: int) -> None:
        """``peer_id`` publishes no update in ``round_`` (its device policy said no)."""
        if self.membership.sits_out(peer_id, round_):
            self._membership_changed()

    def _membership_changed(self) -> None:
        if self.round:
            self.plan.membership_changed(self.swarm, self.membership)
        self.swarm.notify()

    def check_manifest(self, manifest: Manifest) -> str | None:
        """Swarm hook: refuse blobs that cannot be used in our model by our plan."""
        problem = self.plan.check(manifest, self.learner.plan)
        if problem is not None:
            return problem
        if manifest.author not in self.membership.members:
            return f"author {manifest.author} is not a member"
        if not self.round <= manifest.round <= self.round + 1:
            return f"round {manifest.round} is outside the current window"
        if not 0 < manifest.num_samples <= MAX_SAMPLES:
            return f"sample count {manifest.num_samples} is out of range"
        return None

    # ------------------------------------------------------------------ rounds
    async def run(self, *, first_round: int = 1) -> list[RoundMetrics]:
        """Run every round from ``first_round``, then seed for the grace period."""
        for r in range(first_round, self.policy.rounds + 1):
            await self._round(r)
        self._enter(Phase.SEEDING)
        return self.history

    def _loader(self, before: Sequence[np.ndarray]) -> Callable[[Sequence[np.ndarray]], None]:
        """How the round's aggregate becomes the model: as it is, or through the server step;
        SCAFFOLD's federation variate is taken from it first."""
        step, learner, scaffold, mask = (
            self.server_step,
            self.learner,
            self.scaffold,
            self._weights_mask,
        )
        r = self.round

        def load(vectors: Sequence[np.ndarray]) -> None:
            if scaffold is not None:
                scaffold.aggregated(before, vectors, self._round_samples(r), mask)
            learner.load_vectors(vectors if step is None else step(before, vectors, mask))

        return load

    def _round_samples(self, r: int) -> list[float]:
        """The sample counts of round ``r``'s updates this peer holds a manifest of (its own
        included): the authors its aggregate is made of, or nearly."""
        blobs = round_blobs(self.swarm, self.membership, r)
        counts = [float(b.manifest.num_samples) for b in blobs.values()]
        if self.last_update is not None:
            counts.append(float(self.last_update.num_samples))
        return counts

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    async def _work(
        self, fn: Callable[[], _T], flops: Callable[[], float], speed: float = 1.0
    ) -> tuple[_T, float]:
        """Run local compute; returns its result and its (virtual or padded real) duration.

        ``flops`` is only asked for in simulation (counting them costs a second the first time).
        """
        t0 = self._now()
        if self.simulated:
            result = fn()  # blocking the loop costs no virtual time: charge the model instead
            seconds = self.device.compute_seconds(flops(), speed) if self.device else 0.0
            await asyncio.sleep(seconds)
        else:
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(self.executor, fn)
            if self.device is not None:
                await asyncio.sleep(self.device.real_padding(self._now() - t0, speed))
        elapsed = self._now() - t0
        if self.device is not None:
            self.device.busy(elapsed, now=self._now() - self._origin)
        return result, elapsed

    async def _train(
        self, r: int, before: list[np.ndarray], decision: Participation
    ) -> tuple[Trained, float]:
        """The train stage: local training, or the round-start model when the publisher does
        not train (a free rider)."""
        learner = self.learner
        if not self.publisher.trains:
            zero = [0.0] * len(before)
            return Trained(None, before, [], zero, learner.num_samples), 0.0
        scaffold = self.scaffold
        correction = scaffold.correction() if scaffold is not None else None
        update, seconds = await self._work(
            lambda: learner.local_round(r, correction), learner.train_flops, decision.speed
        )
        if scaffold is not None:
            scaffold.trained(before, update.vectors, update.train.steps, self._weights_mask)
        trained = Trained(
            update, update.vectors, update.chunks, update.importance, update.num_samples
        )
        return trained, seconds

    async def _round(self, r: int) -> None:
        self.round = r
        self._ctx = None
        start_counters = self.swarm.counters.snapshot()
        self._enter(Phase.TRAINING)
        learner = self.learner
        now = self._now() - self._origin
        members = self.membership
        selection = self.selector.select(r, members.members, members.departed, members.skipped)
        members.select(r, selection.selected)
        decision = self.device.decide(now) if self.device is not None else Participation()
        if self.peer_id not in selection.selected:
            decision = dataclasses.replace(decision, train=False, reason="not_selected")
        before = learner.vectors()
        update: LocalUpdate | None = None
        train_s = 0.0
        bytes_saved = 0
        own = before
        sent: list[np.ndarray] | None = None
        self.plan.begin(r, self.swarm, self.membership)
        if decision.train:
            trained, train_s = await self._train(r, before, decision)
            update = trained.update
            published = self.publisher.publish(
                PublishContext(
                    round=r,
                    me=self.peer_id,
                    before=before,
                    compression=decision.compression,
                    swarm=self.swarm,
                    encoder=self.encoder,
                    chunk_plan=learner.plan,
                ),
                self.privatizer(trained),
            )
            own, sent, bytes_saved = published.own, published.sent, published.bytes_saved
        else:
            log.info("peer %d round %d: sits out (%s)", self.peer_id, r, decision.reason)
            if decision.reason != "not_selected":
                # Its own record too: the selection weighs sit-outs, and every peer must weigh
                # this one as the others (told below) do.
                members.sat_out_myself(r)
                if self.on_skip is not None:
                    self.on_skip(r)  # the others cannot know: tell them (a selection they can)
        self.last_update = update
        self._ctx = ctx = RoundContext(
            round=r,
            me=self.peer_id,
            swarm=self.swarm,
            membership=self.membership,
            neighbours=self.neighbours,
            chunk_plan=learner.plan,
            defense=self.defense,
            policy=self.policy,
            base=before,
            own=own,
            own_weight=float(update.num_samples) if update is not None else None,
            sent=sent,
            judge_mask=self._weights_mask,
            quorum=selection.quorum,
            min_participants=self.selector.min_participants,
            compute=self._work,
            enter=self._enter,
            now=self._now,
            load=self._loader(before),
            observe=self._observe,
        )
        outcome = await self.plan.exchange(ctx)

        self._enter(Phase.EVALUATING)
        ev, eval_s = await self._work(learner.evaluate, learner.eval_flops)
        self.accuracy = ev.accuracy
        now = self._now()
        metrics = round_metrics(
            peer_id=self.peer_id,
            r=r,
            ev=ev,
            update=update,
            decision=decision,
            counters=self.swarm.counters.minus(start_counters),
            outcome=outcome,
            train_s=train_s,
            eval_s=eval_s,
            bytes_saved=bytes_saved,
            wall_s=now - self._start,
            sim_time_s=now - self._origin if self.simulated else None,
            device=self.device,
            attacker=self.publisher.attacker,
            selected=self.peer_id in selection.selected,
            selection=selection.reasons.get(self.peer_id, ""),
        )
        self.history.append(metrics)
        if self.on_metrics is not None:
            self.on_metrics(metrics)
        log.info(
            "peer %d round %d: acc %.3f completion %.2f authors %d",
            self.peer_id,
            r,
            ev.accuracy,
            outcome.completion,
            outcome.report.authors,
        )

    def _observe(
        self, base: Sequence[np.ndarray], others: Mapping[int, Mapping[int, np.ndarray]]
    ) -> None:
        self.publisher.observe(base, others)
