"""One peer from start to finish: listen, meet the tracker, connect, run rounds, seed, stop.

Used by every launcher: the in-process runtime runs many nodes in one event loop; the process
runtime and ``fltorrent peer`` run one node per process. The configuration comes from the
tracker's welcome, so a peer on another host needs only the tracker's address.

With device profiles (or a ``network`` section) the node shapes its swarm connections on its
access link (:mod:`fltorrent.net.shaping`) and gives its peer a device model. A node started
again after a crash registers under its old id, resumes at the federation's current round and,
when the launcher kept its :class:`PeerState` (simulation), continues from the model it had.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Coroutine
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path

from fltorrent.admission import decode_token
from fltorrent.attacks.behaviour import Adversary
from fltorrent.attacks.publishing import AttackPublisher, poison_block
from fltorrent.config import Config, parse_config
from fltorrent.control import Done, Skip, Welcome
from fltorrent.defense import Defense
from fltorrent.devices.device import Device
from fltorrent.devices.profiles import DeviceProfile
from fltorrent.errors import AuthError, FederationError, FltorrentError
from fltorrent.learn.learner import Learner
from fltorrent.learn.update_codec import UpdateEncoder
from fltorrent.net.base import Address, Connection, ConnectionHandler, Transport
from fltorrent.net.clock import offload
from fltorrent.peer import FaultHook, Peer, PeerCrash, PeerStatus, Phase, RoundPolicy
from fltorrent.plans import RoundPlan
from fltorrent.runtime import transports
from fltorrent.runtime.build import (
    build_adversary,
    build_defense,
    build_device,
    build_plan,
    build_selector,
    device_profiles,
    link_profile,
    round_policy,
    swarm_options,
)
from fltorrent.runtime.checkpoint import checkpoint_path, load_checkpoint
from fltorrent.runtime.learning import FederationData, build_learner, load_federation_data
from fltorrent.runtime.node_outputs import (
    chained,
    checkpointing,
    exchange_log,
    flushing,
    metrics_reporter,
    phase_reporter,
    save_model,
)
from fltorrent.security.audit import AuditLog
from fltorrent.security.credentials import Credentials
from fltorrent.security.guard import PeerGuard
from fltorrent.selection import Selector
from fltorrent.stages import HonestPublisher, Publisher, Scaffold, ServerMomentum
from fltorrent.swarm import Counters, Swarm, SwarmSecurity
from fltorrent.swarm.events import no_events
from fltorrent.telemetry.events import RoundMetrics
from fltorrent.tracker_client import TrackerClient

log = logging.getLogger(__name__)

"""Progress phase sent once a round's metrics exist (the progress display counts these)."""


@dataclass
class NodeOutcome:
    """How one peer's run ended."""

    peer_id: int
    finished: bool
    error: str | None = None
    crashed: bool = False  # stopped by a fault hook (PeerCrash), as if its process died
    metrics: list[RoundMetrics] = field(default_factory=list)
    counters: Counters | None = None

    @property
    def label(self) -> str:
        """``peer N``, or what it was before the tracker assigned an id (0 is no id)."""
        return f"peer {self.peer_id}" if self.peer_id else "peer (no id assigned yet)"


@dataclass
class PeerState:
    """What a peer keeps across a crash, as if on disk: model and data, device, encoder."""

    learner: Learner
    device: Device | None
    encoder: UpdateEncoder
    defense: Defense  # its trust table survives too
    adversary: Adversary | None
    selector: Selector
    server_step: ServerMomentum | None = None  # FedAvgM's velocity survives too
    scaffold: Scaffold | None = None  # and SCAFFOLD's control variates
    # Who sat out which round, from a checkpoint: the resumed peer's selection sees them.
    resumed_sat_out: dict[int, set[int]] | None = None


@dataclass
class NodeHooks:
    """Optional callbacks and shared resources injected by the launcher."""

    data: FederationData | None = None  # preloaded (in-process runtime): load once for all
    executor: Executor | None = None
    on_metrics: Callable[[RoundMetrics], None] | None = None
    on_phase: Callable[[PeerStatus], None] | None = None
    on_peer: Callable[[Peer], None] | None = None
    fault_hook: FaultHook | None = None
    simulated: bool = False  # compute charged to the virtual clock (sim runtime)
    clock_origin: float | None = None  # loop time when the federation started
    saved: dict[int, PeerState] | None = None  # keep peer state for a rejoin (sim runtime)
    audit: AuditLog | None = None  # security events (security.jsonl)
    require_tls: bool = False  # refuse plaintext connections (TLS runs; never in simulation)
    own_data: Path | None = None  # this peer's own data (fltorrent peer --data), not the config's
    device: str | None = None  # where it trains (fltorrent peer --device), not train.device
    log_dir: Path | None = None  # where the exchange logs go (output.exchange_logs)
    checkpoint_dir: Path | None = None  # the run directory checkpoints/ goes in (None: none)
    resume_round: int | None = None  # continue after this round, from its checkpoints


async def run_node(
    *,
    transport: Transport,
    tracker: Address,
    host: str,
    peer_id: int | None,
    model_dir: Path | None,
    hooks: NodeHooks | None = None,
    connect_timeout: float = 30.0,
    credentials: Credentials | None = None,
) -> NodeOutcome:
    """Run one peer until the federation is done (or it crashes); never raises FltorrentError.

    ``credentials`` prove its membership to the tracker and the other peers; without them it
    signs and checks nothing (tests of the exchange alone)."""
    hooks = hooks or NodeHooks()
    client: TrackerClient | None = None
    outcome = NodeOutcome(peer_id or 0, finished=False)
    try:
        client = await TrackerClient.connect(
            transport, tracker, timeout=connect_timeout, credentials=credentials
        )
        swarm_holder: list[ConnectionHandler] = []

        async def accept(conn: Connection) -> None:
            if swarm_holder:
                await swarm_holder[0](conn)
            else:  # not set up yet: the dialing side retries
                await conn.aclose()

        listener = await transport.listen(host, 0, accept)
        try:
            welcome = await client.register(
                federation=None,
                peer_id=peer_id,
                host=host,
                port=listener.address[1],
                timeout=connect_timeout + 600.0,
            )
            outcome.peer_id = welcome.peer_id
            guard = _guard(client, welcome, hooks)
            # The members' tokens are checked and kept as keys: the rest of the run does not
            # need them (a thousand of them are half a megabyte per peer).
            welcome = client.welcome = welcome.model_copy(update={"tokens": {}})
            await _run_registered(
                welcome=welcome,
                guard=guard,
                client=client,
                transport=transport,
                port=listener.address[1],
                swarm_holder=swarm_holder,
                hooks=hooks,
                model_dir=model_dir,
                outcome=outcome,
            )
        finally:
            await listener.aclose()
    except* PeerCrash as eg:
        outcome.crashed = True
        outcome.error = f"crashed: {eg.exceptions[0]}"
        log.warning("%s crashed (fault injection): %s", outcome.label, eg.exceptions[0])
    except* FltorrentError as eg:
        exc = eg.exceptions[0]
        outcome.error = f"{type(exc).__name__}: {exc}"
        log.info("%s failed: %s", outcome.label, exc)  # whoever ran it reports the outcome
    except* Exception as eg:
        # A fault boundary: a bug in one peer must not cancel the other peers of this process.
        bug = eg.exceptions[0]
        outcome.error = f"{type(bug).__name__}: {bug}"
        log.error("%s crashed: %s", outcome.label, bug, exc_info=bug)
    finally:
        if client is not None:
            await client.aclose()
    return outcome


async def _peer_state(
    config: Config, peer_id: int, profile: DeviceProfile | None, hooks: NodeHooks
) -> PeerState:
    if hooks.saved is not None and peer_id in hooks.saved:
        return hooks.saved[peer_id]
    data = hooks.data
    if data is None and hooks.own_data is None:
        data = await offload(lambda: load_federation_data(config))
    learner = await offload(
        lambda: build_learner(
            config,
            peer_id,
            data,
            own_data=hooks.own_data,
            device=hooks.device,
            gpu_share=1.0 if profile is None else profile.gpu_share,
        )
    )
    state = PeerState(
        learner=learner,
        device=build_device(config, peer_id, learner, profile),
        encoder=UpdateEncoder(
            learner.plan, topk_ratio=config.devices.topk_ratio, seed=learner.seed
        ),
        defense=build_defense(config, peer_id),
        adversary=build_adversary(config, peer_id),
        selector=build_selector(config),
        server_step=server_step(config),
        scaffold=scaffold(config),
    )
    if hooks.resume_round is not None and hooks.checkpoint_dir is not None:
        path = checkpoint_path(hooks.checkpoint_dir, peer_id, hooks.resume_round)
        if not path.is_file():
            raise FederationError(
                f"peer {peer_id}: no checkpoint of round {hooks.resume_round} ({path})"
            )
        load_checkpoint(path, state)
    if hooks.saved is not None:
        hooks.saved[peer_id] = state
    return state


async def _run_registered(
    *,
    welcome: Welcome,
    client: TrackerClient,
    transport: Transport,
    port: int,
    swarm_holder: list[ConnectionHandler],
    hooks: NodeHooks,
    model_dir: Path | None,
    outcome: NodeOutcome,
    guard: PeerGuard | None,
) -> None:
    config = parse_config(welcome.config)
    peer_id = welcome.peer_id
    profiles = device_profiles(config)
    profile = profiles[peer_id - 1] if profiles is not None else None
    state = await _peer_state(config, peer_id, profile, hooks)
    learner = state.learner
    neighbours = set(welcome.neighbours)
    plan = build_plan(
        config, neighbours=neighbours, degrees=welcome.degrees, chunks=learner.plan.num_chunks
    )
    policy = round_policy(config)
    link = link_profile(config, profile)
    async with contextlib.AsyncExitStack() as stack:
        xlog = exchange_log(config, hooks.log_dir, peer_id, origin=hooks.clock_origin)
        if xlog is not None:
            stack.callback(xlog.close)
            hooks = dataclasses.replace(hooks, on_metrics=flushing(xlog, hooks.on_metrics))
        every = config.output.checkpoint_every
        if hooks.checkpoint_dir is not None and every > 0:
            running: list[Peer] = []  # the round loop, once made (its membership's sit-outs)
            hooks = dataclasses.replace(
                hooks,
                on_metrics=checkpointing(
                    state, hooks.checkpoint_dir, every, hooks.on_metrics, running
                ),
                on_peer=chained(running.append, hooks.on_peer),
            )
        swarm_transport: Transport = transport
        if link is not None:
            shaper = transports.shaped(transport, link, seed=config.federate.seed * 7919 + peer_id)
            swarm_transport = await stack.enter_async_context(shaper)
        poisoner = state.adversary is not None and state.adversary.kind == "chunk_poison"
        swarm = Swarm(
            swarm_options(config, federation=welcome.federation, peer_id=peer_id, listen_port=port),
            transport=swarm_transport,
            want=lambda _round, _author, _topic: False,
            allow_peer=lambda p: p in neighbours or plan.allows(p),
            serve_hook=poison_block if poisoner else None,
            security=_swarm_security(guard),
            events=xlog if xlog is not None else no_events,
        )
        await stack.enter_async_context(swarm)
        tg = await stack.enter_async_context(asyncio.TaskGroup())
        if xlog is not None:
            xlog.watch_topology(set(neighbours), config.topology.timeout)
        accept = swarm.accept if link is None else shaper.shaped_handler(swarm.accept)
        await _run_peer(
            welcome=welcome,
            client=client,
            swarm=swarm,
            state=state,
            accept=accept,
            neighbours=neighbours,
            policy=policy,
            plan=plan,
            swarm_holder=swarm_holder,
            hooks=hooks,
            tg=tg,
            outcome=outcome,
            guard=guard,
        )
        if model_dir is not None:
            await offload(lambda: save_model(learner, model_dir, peer_id, policy.rounds))


async def _run_peer(
    *,
    welcome: Welcome,
    client: TrackerClient,
    swarm: Swarm,
    state: PeerState,
    accept: ConnectionHandler,
    neighbours: set[int],
    policy: RoundPolicy,
    plan: RoundPlan,
    swarm_holder: list[ConnectionHandler],
    hooks: NodeHooks,
    tg: asyncio.TaskGroup,
    outcome: NodeOutcome,
    guard: PeerGuard | None,
) -> None:
    peer_id = welcome.peer_id

    def spawn(coro: Coroutine[object, object, None]) -> None:
        tg.create_task(coro)

    peer = Peer(
        peer_id=peer_id,
        learner=state.learner,
        swarm=swarm,
        members=set(welcome.members),
        policy=policy,
        executor=hooks.executor,
        on_metrics=metrics_reporter(client, hooks.on_metrics, tg),
        on_phase=phase_reporter(client, hooks.on_phase, tg),
        on_skip=lambda r: spawn(client.progress(Skip(round=r))),
        fault_hook=hooks.fault_hook,
        device=state.device,
        simulated=hooks.simulated,
        encoder=state.encoder,
        clock_origin=hooks.clock_origin,
        defense=state.defense,
        plan=plan,
        selector=state.selector,
        publisher=_publisher(state.adversary),
        neighbours=neighbours,
        addresses=welcome.members,
        server_step=state.server_step,
        scaffold=state.scaffold,
    )
    for gone in client.left | set(welcome.departed):
        peer.membership.left(gone)
    swarm.set_manifest_check(peer.check_manifest)
    swarm_holder.append(accept)
    if state.resumed_sat_out:  # a resumed run: its selection remembers who sat out
        peer.membership.skipped.update(state.resumed_sat_out)
        state.resumed_sat_out = None
    if hooks.on_peer is not None:
        hooks.on_peer(peer)
    client.on_left = peer.member_left
    client.on_skipped = peer.member_skipped

    def joined(other: int, address: Address, first_round: int, token: str) -> None:
        if guard is not None and not guard.admit(other, _token(token)):
            return  # its token does not hold: not a member for us
        peer.member_joined(other, first_round, address)
        if other in neighbours and other > peer_id:  # we are the dialing side of this edge
            swarm.connect(other, address)

    client.on_joined = joined

    def link(other: int, address: Address) -> None:
        neighbours.add(other)  # allow_peer reads this set
        if other > peer_id:
            swarm.connect(other, address)

    client.on_link = link

    def revoked(signed: str) -> None:
        for other in guard.revoke(signed) if guard is not None else []:
            neighbours.discard(other)
            swarm.disconnect(other)
            peer.member_left(other)

    client.on_revoked = revoked
    listen_task = tg.create_task(client.listen())
    for other in neighbours:
        if other > peer_id:  # the lower id dials: one connection per edge
            swarm.connect(other, welcome.members[other])
    try:
        outcome.metrics = peer.history  # filled round by round, kept if the peer crashes
        resumed = (hooks.resume_round or 0) + 1  # a resumed run continues after its checkpoints
        await peer.run(first_round=max(1, welcome.round, resumed))
        await client.progress(Done())
        # Keep seeding until every live peer is done, the tracker is gone, or the grace ends.
        waits = [tg.create_task(client.all_done.wait()), tg.create_task(client.lost.wait())]
        await asyncio.wait(waits, timeout=policy.seed_grace, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
        peer.phase = Phase.DONE
        outcome.finished = True
        outcome.counters = swarm.counters.snapshot()
    finally:
        listen_task.cancel()
        await client.aclose()


def _token(text: str) -> bytes:
    try:
        return decode_token(text)
    except AuthError:
        return b""  # refused by the guard as not a token


def _guard(client: TrackerClient, welcome: Welcome, hooks: NodeHooks) -> PeerGuard | None:
    """This peer's view of membership, from the members' tokens in the welcome."""
    if client.credentials is None:
        return None
    guard = PeerGuard(
        client.credentials,
        peer_id=welcome.peer_id,
        require_tls=hooks.require_tls,
        audit=hooks.audit,
        run=bytes.fromhex(welcome.run),
    )
    if welcome.revocations:
        guard.revoke(welcome.revocations)
    guard.admit_all({pid: _token(t) for pid, t in welcome.tokens.items()})
    return guard


def _swarm_security(guard: PeerGuard | None) -> SwarmSecurity | None:
    if guard is None:
        return None
    return SwarmSecurity(
        sign=guard.sign,
        verify=guard.verify_manifest,
        authenticate=guard.authenticate,
        audit=guard.swarm_event,
    )


def server_step(config: Config) -> ServerMomentum | None:
    """FedAvgM's stage, when the configuration asks for it."""
    t = config.train
    if t.server_momentum == 0 and t.server_lr == 1:
        return None
    return ServerMomentum(beta=t.server_momentum, lr=t.server_lr)


def scaffold(config: Config) -> Scaffold | None:
    """SCAFFOLD's stage, when the configuration asks for it (its step is SGD's, momentum
    included: lr / (1 - momentum))."""
    t = config.train
    if not t.scaffold:
        return None
    return Scaffold(lr=t.lr / (1 - t.momentum), epochs=t.local_epochs, batch_size=t.batch_size)


def _publisher(adversary: Adversary | None) -> Publisher:
    """The publishing stage: honest, or the configured attack (experiments)."""
    return HonestPublisher() if adversary is None else AttackPublisher(adversary)
