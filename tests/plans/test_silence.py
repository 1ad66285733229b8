"""A member that registered but never publishes holds a round only for a grace proportional to
the round's own pace, not until a deadline (all_to_all, neighbours with it, reduce_scatter)."""

from __future__ import annotations

import pytest

from fltorrent.config import load_config
from fltorrent.peer import Peer
from fltorrent.stages import HonestPublisher, PublishContext, Published, Trained
from fltorrent.telemetry.events import RoundMetrics
from tests.aio import aio
from tests.plans.test_plans_sim import SMALL, run_peers


class SilentPublisher(HonestPublisher):
    """Trains, keeps its update, publishes nothing: alive and registered, but silent."""

    def publish(self, ctx: PublishContext, trained: Trained) -> Published:
        return Published(own=trained.vectors, sent=trained.vectors, bytes_saved=0)


async def _rounds(*overrides: str) -> list[RoundMetrics]:
    # seed_grace: the silent member, done with its own rounds early, stays (alive and silent).
    config = load_config(
        None, [*SMALL, "bittorrent.timeout=600", "bittorrent.seed_grace=3000", *overrides]
    )

    def silence(peer: Peer) -> None:
        if peer.peer_id == 4:
            peer.publisher = SilentPublisher()

    outcomes, _ = await run_peers(config, on_peer=silence)
    return [m for o in outcomes if o.peer_id != 4 for m in o.metrics]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("plan", "waited_s"),
    # Without the rule: all_to_all waits for the soft deadline; reduce_scatter's owners for
    # half of it (then the share that arrived is enough), and the others for their aggregates.
    [("all_to_all", 600.0), ("reduce_scatter", 300.0)],
)
@aio(timeout=7200, virtual=True)
async def test_a_silent_member_is_not_waited_for_until_the_deadline(
    plan: str, waited_s: float
) -> None:
    rounds = await _rounds(f"exchange.plan={plan}")
    first = [m for m in rounds if m.round == 1]
    later = [m for m in rounds if m.round > 1]
    # Round 1: nobody's pace is known yet, so the silent member costs one deadline.
    assert all(m.exchange_s >= waited_s - 1e-6 for m in first), [m.exchange_s for m in first]
    # Then: everyone else delivered within about a second; the silent one, never seen to
    # deliver, gets 3x the wait, 10 s at least.
    assert later and all(not m.deadline_hit for m in later)
    assert all(m.exchange_s < 30 for m in later), [m.exchange_s for m in later]
    if plan == "all_to_all":
        assert all(m.authors_aggregated == 7 for m in rounds)
    waited = await _rounds(
        f"exchange.plan={plan}", "bittorrent.silence_factor=0", "federate.total_round_num=2"
    )
    assert all(m.exchange_s >= waited_s - 1e-6 for m in waited), [m.exchange_s for m in waited]


@pytest.mark.slow
@aio(timeout=7200, virtual=True)
async def test_honest_slow_trainers_keep_their_place() -> None:
    # Half the peers are IoT devices training ten epochs: they publish tens of seconds after
    # the edge servers, every round. They are slow, not silent: nobody goes on without them.
    config = load_config(
        None,
        [
            *SMALL,
            "federate.client_num=6",
            "federate.total_round_num=2",
            "train.local_epochs=10",
            "devices.distribution={edge_server: 0.5, iot_device: 0.5}",
        ],
    )
    outcomes, _ = await run_peers(config)
    rounds = [m for o in outcomes for m in o.metrics]
    assert len(rounds) == 12
    assert all(m.authors_aggregated == 6 and not m.deadline_hit for m in rounds)
    trains = sorted(m.train_s for m in rounds if m.round == 1)
    assert trains[-1] > 5 * trains[0]  # the slow ones really are slow
