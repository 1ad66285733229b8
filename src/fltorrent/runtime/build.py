"""Turn a :class:`~fltorrent.config.Config` into components with explicit arguments.

This and ``config.py`` are the only places that read the configuration tree.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from fltorrent.admission import Admission
from fltorrent.aggregate.trust import TrustTable
from fltorrent.attacks.behaviour import Adversary
from fltorrent.config import Config
from fltorrent.defense import Defense
from fltorrent.devices.availability import AlwaysOn, Availability, Diurnal, Trace, load_traces
from fltorrent.devices.device import REFERENCE_PROFILE, Device
from fltorrent.devices.failures import FailureParams, crash_share_schedule
from fltorrent.devices.failures import failure_schedule as plan_failures
from fltorrent.devices.policy import COMPRESSION_BY_TIER, PolicyParams
from fltorrent.devices.profiles import DeviceProfile, assign_profiles
from fltorrent.learn.learner import Learner
from fltorrent.learn.plugins import (
    resolve,
    user_rule,
)
from fltorrent.net.shaping import LinkProfile
from fltorrent.phases import RoundPolicy
from fltorrent.plans import RoundPlan, make_plan
from fltorrent.selection import Selector, capability
from fltorrent.swarm import SwarmOptions
from fltorrent.tracker import MemberState, TopologySpec, Tracker


def swarm_options(
    config: Config, *, federation: str, peer_id: int, listen_port: int
) -> SwarmOptions:
    """Swarm settings of one peer."""
    bt = config.bittorrent
    return SwarmOptions(
        federation=federation,
        peer_id=peer_id,
        listen_port=listen_port,
        block_size=bt.block_size,
        max_frame_size=bt.max_frame_size,
        max_block_size=max(bt.block_size, min(1024 * 1024, bt.max_frame_size - 64)),
        max_inflight_bytes=bt.max_inflight_bytes,
        request_timeout=bt.request_timeout,
        connect_timeout=bt.connect_timeout,
        max_connection_attempts=config.topology.max_connection_attempts,
        idle_timeout=bt.idle_timeout,
        keepalive_interval=bt.keepalive_interval,
        upload_slots=bt.upload_slots,
        pipeline_seconds=bt.pipeline_seconds,
        super_seeding=bt.super_seeding,
        seed=config.federate.seed * 1000 + peer_id,
    )


def round_policy(config: Config) -> RoundPolicy:
    """When rounds end."""
    bt = config.bittorrent
    return RoundPolicy(
        rounds=config.federate.total_round_num,
        timeout=bt.timeout,
        hard_timeout=bt.hard_timeout if bt.hard_timeout is not None else 2 * bt.timeout,
        min_completion_ratio=bt.min_completion_ratio,
        seed_grace=bt.seed_grace,
        critical_window=bt.critical_window,
        silence_factor=bt.silence_factor,
        silence_floor=bt.silence_floor,
    )


def build_plan(
    config: Config, *, neighbours: Collection[int], degrees: Mapping[int, int], chunks: int
) -> RoundPlan:
    """One peer's round plan (``exchange.plan``), given its live neighbour set, every member's
    degree in the overlay as built, and the number of chunks of the model."""
    ex = config.exchange
    return make_plan(
        ex.plan,
        neighbours=neighbours,
        degrees=degrees,
        chunks=chunks,
        replicas=ex.owners,
        seed=config.federate.seed,
    )


def build_selector(config: Config) -> Selector:
    """Participant selection (``selection``), with every member's capability from its device
    profile (1.0 without profiles)."""
    sel = config.selection
    profiles = device_profiles(config)
    caps = {i + 1: capability(p) for i, p in enumerate(profiles)} if profiles else {}
    return Selector(
        seed=config.federate.seed,
        min_participants=sel.min_participants,
        max_participants=sel.max_participants,
        overcommit=sel.overcommit,
        window=sel.window,
        capabilities=caps,
    )


def check_plugins(config: Config) -> None:
    """Import the user's code named in ``config`` now, so that a bad import string is a
    configuration error before anything starts (each peer resolves it again where it runs)."""
    for key, spec in (
        ("model.factory", config.model.factory),
        ("data.factory", config.data.factory),
        ("robust.rule_factory", config.robust.rule_factory),
        ("train.step", config.train.step),
        ("train.evaluate", config.train.evaluate),
    ):
        if spec is not None:
            resolve(spec, key=key)


def make_tracker(
    config: Config,
    *,
    on_progress: Callable[[MemberState], None] | None = None,
    admission: Admission | None = None,
    on_record: Callable[[int, dict[str, Any]], None] | None = None,
) -> Tracker:
    """The tracker of this federation; it hands the configuration to every peer."""
    profiles = device_profiles(config)
    return Tracker(
        federation=config.federate.federation_id,
        client_num=config.federate.client_num,
        config=config.model_dump(mode="json"),
        topology=topology_spec(config),
        registration_timeout=config.runtime.registration_timeout,
        on_progress=on_progress,
        on_record=on_record,
        bridge_preference=(lambda p: profiles[p - 1].up_mbit) if profiles else None,
        admission=admission,
    )


def topology_spec(config: Config) -> TopologySpec:
    """Arguments for the tracker's topology builder."""
    t = config.topology
    return TopologySpec(
        kind=t.type,
        connections=t.connections,
        branching=t.branching,
        custom_graph=t.custom_graph,
        seed=config.federate.seed,
        use=t.use,
    )


def federation_id(config: Config) -> str:
    """The id peers present in their handshakes."""
    return config.federate.federation_id


def device_profiles(config: Config) -> list[DeviceProfile] | None:
    """Each peer's device profile (index = peer id - 1), or ``None`` without a distribution."""
    dev = config.devices
    if dev.distribution is None:
        return None
    n = config.federate.client_num
    return assign_profiles(dev.distribution, n, config.federate.seed, dev.all_profiles())


def build_device(
    config: Config, peer_id: int, learner: Learner, profile: DeviceProfile | None
) -> Device | None:
    """Peer ``peer_id``'s device model; in sim mode a peer without a profile gets a
    reference device (one core of ``devices.core_gflops``, mains powered, no heat)."""
    dev = config.devices
    if profile is None:
        if config.federate.mode != "sim":
            return None
        profile = REFERENCE_PROFILE
    seed = config.federate.seed * 1000 + peer_id
    availability: Availability = AlwaysOn()
    av = dev.availability
    if av.model == "diurnal":
        availability = Diurnal(seed, start_hour=dev.start_hour, p_online=av.p_online)
    elif av.model == "trace":
        assert av.trace_file is not None
        availability = _traces(av.trace_file).get(peer_id, AlwaysOn())
    p = dev.policy
    return Device(
        profile,
        core_flops=dev.core_gflops * 1e9,
        policy=PolicyParams(
            min_battery=p.min_battery,
            charging_only=p.charging_only,
            thermal_pause=p.thermal_pause,
            wifi_preferred=p.wifi_preferred,
            large_transfer_bytes=p.large_transfer_bytes,
        ),
        availability=availability,
        charging_hours=tuple(dev.charging_hours),
        start_hour=dev.start_hour,
        compression=None if dev.compression == "auto" else dev.compression,
        tier_compression={
            tier: dev.tier_compression.get(tier, codec)
            for tier, codec in COMPRESSION_BY_TIER.items()
        },
        update_bytes=learner.plan.total_bytes,
    )


def link_profile(config: Config, profile: DeviceProfile | None) -> LinkProfile | None:
    """The access link of a peer: its device's, else the ``network`` section's, else none."""
    if profile is not None:
        return LinkProfile.from_mbit(
            profile.up_mbit,
            profile.down_mbit,
            latency_ms=profile.latency_ms,
            jitter_ms=profile.jitter_ms,
            loss=profile.loss,
        )
    net = config.network
    if not net.shaped:
        return None
    return LinkProfile.from_mbit(
        net.up_mbit,
        net.down_mbit,
        latency_ms=net.latency_ms,
        jitter_ms=net.jitter_ms,
        loss=net.loss,
    )


def failure_schedule(config: Config) -> dict[int, list[tuple[int, int | None]]]:
    """Who crashes in which round and when (if ever) it rejoins: {peer id: [(crash, rejoin)]}.

    The ``crash_share`` draw becomes explicit crashes, so that one schedule keeps every
    guarantee (no overlapping outages, never every peer down at once).
    """
    f = config.faults
    fed = config.federate
    peers = list(range(1, fed.client_num + 1))
    explicit: dict[int, list[int]] = {r: list(ids) for r, ids in f.crash_rounds.items()}
    if f.crash_share > 0:
        share = crash_share_schedule(f.crash_share, f.crash_round, peers, fed.seed, None)
        chosen = [p for p, outages in share.items() if outages]
        already = set(explicit.get(f.crash_round, []))
        explicit.setdefault(f.crash_round, []).extend(p for p in chosen if p not in already)
    return plan_failures(
        FailureParams(f.crash_rate, f.rejoin_after, explicit),
        peers,
        fed.total_round_num,
        fed.seed + 1,
    )


@functools.lru_cache(maxsize=8)
def _traces(path: Path) -> dict[int, Trace]:
    return load_traces(path)


def build_defense(config: Config, peer_id: int) -> Defense:
    """Peer ``peer_id``'s aggregation rule, outlier filter and trust table."""
    rb = config.robust
    by_preagg: dict[str, dict[str, Any]] = {
        "bucketing": {"s": rb.bucket_size},
        "nnm": {"f": rb.f},
        "clip": {"c": rb.clip_norm},
    }
    preagg_options = by_preagg.get(rb.preagg, {})
    trust = rb.trust
    return Defense(
        rule=rb.rule,
        rule_options=rb.rule_options(),
        preagg=rb.preagg,
        preagg_options=preagg_options,
        detection=rb.detection.enabled,
        iqr_k=rb.detection.iqr_k,
        min_share=rb.detection.min_share,
        momentum=rb.detection.momentum,
        burst_k=rb.detection.burst_k,
        trust=(
            TrustTable(decay=trust.decay, threshold=trust.threshold, recovery=trust.recovery)
            if trust.enabled
            else None
        ),
        seed=config.federate.seed * 1000 + peer_id,
        custom=(
            user_rule(rb.rule_factory, who=f"peer {peer_id}")
            if rb.rule_factory is not None
            else None
        ),
    )


def build_adversary(config: Config, peer_id: int) -> Adversary | None:
    """Peer ``peer_id``'s attack, when it is one of the configured attackers (label flipping
    happens in its training data, see :func:`build_learner`; the adversary then publishes
    that training as is)."""
    attack = config.attack
    n = config.federate.client_num
    coalition = attack.attackers(n, config.federate.seed)
    if peer_id not in coalition:
        return None
    return Adversary(
        kind=attack.type,
        coalition=frozenset(coalition),
        peers=n,
        factor=attack.factor,
        sigma=attack.sigma,
        alie_tau=attack.alie_tau,
        ipm_tau=attack.ipm_tau,
        free_ride=attack.free_ride,
        seed=config.federate.seed * 1000 + peer_id,
    )
