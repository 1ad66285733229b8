"""Whole federations over real loopback TCP."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fltorrent.aggregate import fedavg
from fltorrent.config import load_config
from fltorrent.peer import Peer, PeerCrash, Phase
from fltorrent.runtime.local import run_local
from fltorrent.telemetry.events import RoundMetrics
from tests.aio import aio

SMALL = [
    "data.num_samples=2000",
    "federate.client_num=4",
    "federate.total_round_num=2",
    "bittorrent.seed_grace=2",
    "output.save_model=false",
]


@aio(timeout=120)
async def test_full_delivery_equals_centralized_fedavg() -> None:
    config = load_config(None, [*SMALL, "topology.type=full", "chunk.num_chunks=7"])
    peers: dict[int, Peer] = {}
    updates: dict[int, dict[int, tuple[list[np.ndarray], int]]] = defaultdict(dict)
    aggregates: dict[int, dict[int, np.ndarray]] = defaultdict(dict)
    records: list[RoundMetrics] = []

    def on_metrics(m: RoundMetrics) -> None:
        # Called right after peer m.peer aggregated and evaluated round m.round.
        peer = peers[m.peer]
        assert peer.last_update is not None
        updates[m.round][m.peer] = (peer.last_update.vectors, peer.last_update.num_samples)
        aggregates[m.round][m.peer] = np.concatenate(peer.learner.vectors())
        records.append(m)

    outcomes = await run_local(
        config,
        model_dir=None,
        on_metrics=on_metrics,
        on_phase=lambda s: None,
        on_peer=lambda p: peers.__setitem__(p.peer_id, p),
    )
    assert all(o.finished for o in outcomes)
    assert len(records) == 8 and all(r.completion == 1.0 for r in records)
    for rnd in (1, 2):
        central = fedavg(
            [(np.concatenate(v), float(n)) for _, (v, n) in sorted(updates[rnd].items())]
        )
        for pid, agg in aggregates[rnd].items():
            diff = float(np.max(np.abs(agg - central)))
            assert diff <= 1e-6, f"peer {pid} round {rnd}: max abs diff {diff}"
        # Updates differ between peers (non-IID local training), so the check is not vacuous.
        first = np.concatenate(updates[rnd][1][0])
        assert np.max(np.abs(first - central)) > 1e-3


@pytest.mark.parametrize("plan", ["all_to_all", "reduce_scatter"])
@aio(timeout=120)
async def test_every_peer_ends_with_fedavg_over_tcp(plan: str) -> None:
    # all_to_all on a ring relays; reduce_scatter opens the owner connections the ring lacks.
    config = load_config(None, [*SMALL, "topology.type=ring", f"exchange.plan={plan}"])
    peers: dict[int, Peer] = {}
    outcomes = await run_local(
        config,
        model_dir=None,
        on_metrics=lambda m: None,
        on_phase=lambda s: None,
        on_peer=lambda p: peers.__setitem__(p.peer_id, p),
    )
    assert all(o.finished for o in outcomes)
    assert all(m.completion == 1.0 for o in outcomes for m in o.metrics)
    models = [np.concatenate(p.learner.vectors()) for p in peers.values()]
    for model in models[1:]:
        np.testing.assert_array_equal(model, models[0])


@pytest.mark.slow
@aio(timeout=180)
async def test_a_peer_killed_in_round_2_does_not_hang_the_rest() -> None:
    config = load_config(
        None,
        [
            *SMALL,
            "federate.client_num=5",
            "federate.total_round_num=4",
            "topology.type=mesh",
            "topology.connections=2",
            "bittorrent.timeout=60",
        ],
    )

    def kill_peer_3(peer_id: int, round_: int, phase: Phase) -> None:
        if peer_id == 3 and round_ == 2 and phase is Phase.EXCHANGING:
            raise PeerCrash("killed by the test in round 2")

    records: list[RoundMetrics] = []
    outcomes = await run_local(
        config,
        model_dir=None,
        on_metrics=records.append,
        on_phase=lambda s: None,
        fault_hook=kill_peer_3,
    )
    by_peer = {o.peer_id: o for o in outcomes}
    assert not by_peer[3].finished and "killed" in (by_peer[3].error or "")
    survivors = [1, 2, 4, 5]
    assert all(by_peer[p].finished for p in survivors)
    for p in survivors:
        mine = sorted((r for r in records if r.peer == p), key=lambda r: r.round)
        assert [r.round for r in mine] == [1, 2, 3, 4]
        assert mine[0].authors_aggregated == 5
        for r in mine[2:]:
            # Peer 3 is gone: its blob is no longer expected, the other four are complete.
            assert r.authors_aggregated == 4 and r.authors_expected == 3
            assert r.completion == 1.0
        # Nobody waited for the dead peer until the 60 s deadline.
        assert not any(r.deadline_hit for r in mine)
        assert max(r.exchange_s for r in mine) < 30


@aio(timeout=120)
async def test_training_status_while_running(tmp_path: Path) -> None:
    import asyncio

    from fltorrent import Federation

    fed = Federation(
        {
            "federate": {"client_num": 3, "total_round_num": 3},
            "data": {"num_samples": 1000},
            "bittorrent": {"seed_grace": 1},
        },
        output_dir=tmp_path / "run",
        progress="none",
    )
    seen: list[dict[str, Any]] = []
    task = asyncio.create_task(fed.arun())
    while not task.done():
        seen.append(fed.get_training_status())
        await asyncio.sleep(0.05)
    result = task.result()
    assert result.summary["finished_peers"] == [1, 2, 3]
    rounds = [s["round"] for s in seen]
    assert rounds == sorted(rounds) and rounds[-1] == 3  # monotone, reaches the last round
    phases = {p["phase"] for s in seen for p in s["peers"].values()}
    assert {"training", "exchanging"} & phases
    final = fed.get_training_status()
    assert all(p["phase"] == "done" for p in final["peers"].values())
    assert (tmp_path / "run" / "summary.json").exists()


@pytest.mark.slow
def test_spec_device_distribution_in_real_mode(tmp_path: Path) -> None:
    # Real sockets, each peer's connections shaped on its device's link (an IoT sensor at
    # 128 kbit/s up), compute padded to the device's CPU share, compression by tier.
    from fltorrent.runtime.federation import Federation

    config = load_config(
        None,
        [
            *SMALL,
            "federate.client_num=8",
            "output.progress=none",
            # The IoT peer finishes early (its neighbours' updates arrive while it trains) and
            # must stay to upload its own at 128 kbit/s: a grace long enough for that.
            "bittorrent.seed_grace=60",
            "devices.distribution={smartphone_high: 0.2, smartphone_low: 0.4, "
            "raspberry_pi: 0.2, iot_device: 0.15, edge_server: 0.05}",
        ],
    )
    result = Federation(config, output_dir=tmp_path).run()
    s = result.summary
    assert s["mode"] == "in-process" and s["finished_peers"] == list(range(1, 9))
    records = result.metrics
    assert all(r["completion"] == 1.0 for r in records), [
        (r["round"], r["peer"], r["device"], r["completion"], r["deadline_hit"], r["exchange_s"])
        for r in records
    ]
    devices = {r["device"] for r in records}
    assert {"smartphone_low", "iot_device", "raspberry_pi"} <= devices
    iot = [r for r in records if r["device"] == "iot_device"]
    # 0.1 of a core: the padded training takes ~10x the real one, which is > 0.
    assert iot and all(r["train_s"] > 0.05 and r["compression"] == "q8" for r in iot)
    assert s["bytes_saved"] > 0
    assert all(r["sim_time_s"] is None for r in records)


@pytest.mark.slow
def test_churn_over_real_sockets(tmp_path: Path) -> None:
    # The same crash-and-rejoin schedule as in simulation, on loopback TCP in real time.
    from fltorrent.runtime.federation import Federation

    config = load_config(
        None,
        [
            *SMALL,
            "federate.total_round_num=4",
            "output.progress=none",
            "faults.crash_rounds={2: [2]}",
            "faults.rejoin_after=1",
            "bittorrent.timeout=30",
        ],
    )
    result = Federation(config, output_dir=tmp_path).run()
    s = result.summary
    assert s["finished_peers"] == [1, 2, 3, 4]
    absent = [r["absent"] for r in s["accuracy_per_round"]]
    assert absent == [[], [2], [], []]
    assert not any(r["deadline_hit"] for r in result.metrics)
    assert s["wall_time_s"] < 30  # nobody waited for a deadline


@pytest.mark.parametrize("level", ["info", "warning"])
def test_log_level_applies_to_the_python_api(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, level: str
) -> None:
    import logging

    from fltorrent import Federation

    logger = logging.getLogger("fltorrent")
    before = logger.level
    caplog.set_level(logging.DEBUG, logger="tests")  # a handler that takes every level
    Federation(
        {
            "federate": {"client_num": 2, "total_round_num": 1},
            "data": {"num_samples": 500},
            "bittorrent": {"seed_grace": 0.5},
            "output": {"log_level": level, "save_model": False},
        },
        output_dir=tmp_path / "run",
        progress="none",
    ).run()
    opened = [
        r for r in caplog.records if "session with" in r.getMessage() and "open" in r.getMessage()
    ]
    if level == "info":
        assert opened and all(r.name.startswith("fltorrent.") for r in opened)
    else:
        assert not opened
    assert logger.level == before  # the run does not leave its level behind
