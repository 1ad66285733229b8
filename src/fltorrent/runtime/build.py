"""Turn a :class:`~fltorrent.config.Config` into components with explicit arguments.

This and ``config.py`` are the only places that read the configuration tree.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

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
from fltorrent.errors import LearnError, PluginError
from fltorrent.learn.data import Dataset, load_dataset
from fltorrent.learn.importance import ImportanceScorer
from fltorrent.learn.learner import EvalCache, Learner
from fltorrent.learn.models import build_model
from fltorrent.learn.partition import partition, split_test_like
from fltorrent.learn.plugins import (
    resolve,
    user_data,
    user_evaluate,
    user_model,
    user_rule,
    user_train,
)
from fltorrent.net.shaping import LinkProfile
from fltorrent.phases import RoundPolicy
from fltorrent.plans import RoundPlan, make_plan
from fltorrent.selection import Selector, capability
from fltorrent.swarm import SwarmOptions
from fltorrent.tracker import MemberState, TopologySpec, Tracker


def default_cache_dir() -> Path:
    """Where generated datasets are cached (``$XDG_CACHE_HOME/fltorrent``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fltorrent"


@dataclass(frozen=True)
class FederationData:
    """The dataset and every peer's share of it (indices into train and test)."""

    dataset: Dataset
    train_parts: list[np.ndarray]
    test_parts: list[np.ndarray]
    # The global test set as tensors, shared by every peer of the process (one copy in memory,
    # and the identity the evaluation cache keys on).
    x_test: torch.Tensor
    y_test: torch.Tensor
    eval_cache: EvalCache


def load_federation_data(config: Config) -> FederationData | None:
    """Load (or generate) the dataset and split it among ``client_num`` peers, seeded;
    ``None`` when each peer loads its own (``data.factory``)."""
    d = config.data
    if d.factory is not None:
        return None
    seed = config.federate.seed
    n = config.federate.client_num
    dataset = load_dataset(
        d.name,
        num_samples=d.num_samples,
        seed=seed,
        cache_dir=d.cache_dir or default_cache_dir(),
        num_groups=n,
        synthetic_alpha=d.synthetic_alpha,
        synthetic_beta=d.synthetic_beta,
    )
    parts = partition(
        dataset.y_train,
        n,
        method=d.partition,
        alpha=d.alpha,
        shards_per_client=d.shards_per_client,
        seed=seed,
        min_samples=d.min_samples,
        groups=dataset.groups,
    )
    tests = split_test_like(parts, dataset.y_train, dataset.y_test, seed=seed)
    x_test, y_test = torch.from_numpy(dataset.x_test), torch.from_numpy(dataset.y_test)
    return FederationData(dataset, parts, tests, x_test, y_test, EvalCache())


def build_learner(config: Config, peer_id: int, data: FederationData | None) -> Learner:
    """The learner of peer ``peer_id`` (1-based): same initial model on every peer."""
    seed = config.federate.seed
    mine = _peer_data(config, peer_id, data)
    m = config.model
    if m.factory is not None:
        model = user_model(m.factory, m.options, seed=seed, who=f"peer {peer_id}")
    elif mine.classes is None:
        raise LearnError(
            "a built-in model needs the number of classes, which one peer's data cannot tell: "
            "give the datasets of data.factory a 'classes' list, or use model.factory"
        )
    else:
        model = build_model(
            m.name,
            input_shape=mine.input_shape,
            num_classes=mine.classes,
            hidden=m.hidden,
            seed=seed,
        )
    if config.data.factory is not None:
        _check_labels(model, mine, who=f"peer {peer_id}")
    labels = mine.train[1]
    attack = config.attack
    if attack.type == "label_flip" and peer_id in attack.attackers(
        config.federate.client_num, config.federate.seed
    ):
        labels = (mine.classes or int(labels.max()) + 1) - 1 - labels
    t = config.train
    chunk = config.chunk
    return Learner(
        model=model,
        train_data=(mine.train[0], labels),
        test_data=mine.test,
        local_test_data=mine.local_test,
        plan_size=chunk.plan_size(),
        layout=chunk.layout,
        train_options={
            "epochs": t.local_epochs,
            "batch_size": t.batch_size,
            "lr": t.lr,
            "optimizer": t.optimizer,
            "momentum": t.momentum,
            "weight_decay": t.weight_decay,
            "proximal_mu": t.proximal_mu,
        },
        scorer=ImportanceScorer(
            chunk.importance_method,
            options=chunk.importance_config.model_dump(),
            seed=seed * 1000 + peer_id,
        ),
        seed=seed * 1000 + peer_id,
        eval_cache=data.eval_cache if data is not None else None,
        train_fn=user_train(t.step, who=f"peer {peer_id}") if t.step is not None else None,
        eval_fn=(
            user_evaluate(t.evaluate, who=f"peer {peer_id}") if t.evaluate is not None else None
        ),
    )


def _check_labels(model: nn.Module, mine: _PeerData, *, who: str) -> None:
    """The user's labels must be class indices the model has outputs for: one forward pass
    on two samples (in eval mode, so no batch-norm statistics move) tells how many."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(mine.train[0][:2])
    except Exception as exc:
        raise PluginError(
            f"{who}: the model cannot take the inputs of data.factory "
            f"({tuple(mine.train[0].shape[1:])}): {type(exc).__name__}: {exc}"
        ) from None
    finally:
        model.train(was_training)
    if out.dim() != 2:
        raise PluginError(f"{who}: the model gives outputs of shape {tuple(out.shape)}, not (n, C)")
    top = max(int(mine.train[1].max()), int(mine.test[1].max()))
    if top >= out.shape[1]:
        raise PluginError(
            f"{who}: data.factory has label {top}, the model only {out.shape[1]} classes"
        )


@dataclass(frozen=True)
class _PeerData:
    train: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]  # what "accuracy" is measured on
    local_test: tuple[torch.Tensor, torch.Tensor]  # "local_accuracy"
    input_shape: tuple[int, ...]
    classes: int | None


def _peer_data(config: Config, peer_id: int, data: FederationData | None) -> _PeerData:
    """The peer's share of the built-in dataset, or its own data from ``data.factory`` (whose
    test set is then both the global and the local one: no peer sees another's)."""
    d = config.data
    if d.factory is not None:
        own = user_data(
            d.factory,
            d.options,
            peer=peer_id,
            num_peers=config.federate.client_num,
            seed=config.federate.seed,
            who=f"peer {peer_id}",
        )
        shape = tuple(int(s) for s in own.train[0].shape[1:])
        return _PeerData(own.train, own.test, own.test, shape, own.classes)
    assert data is not None, "built-in data is loaded by load_federation_data"
    ds = data.dataset
    train_idx, test_idx = data.train_parts[peer_id - 1], data.test_parts[peer_id - 1]
    return _PeerData(
        (torch.from_numpy(ds.x_train[train_idx]), torch.from_numpy(ds.y_train[train_idx])),
        (data.x_test, data.y_test),
        (torch.from_numpy(ds.x_test[test_idx]), torch.from_numpy(ds.y_test[test_idx])),
        ds.input_shape,
        ds.num_classes,
    )


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
