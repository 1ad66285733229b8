"""A member that registered but never publishes holds a round only for a grace proportional to
the round's own pace, not until the soft deadline (all_to_all, and neighbours with it)."""

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
@aio(timeout=7200, virtual=True)
async def test_a_silent_member_is_not_waited_for_until_the_deadline() -> None:
    rounds = await _rounds()
    assert rounds and all(not m.deadline_hit for m in rounds)
    # Everyone else delivered within about a second; the silent one got 3x that, 10 s at least.
    assert all(m.exchange_s < 30 for m in rounds), [m.exchange_s for m in rounds]
    assert all(m.authors_aggregated == 7 for m in rounds)
    # Without the rule, every round waits for the soft deadline.
    waited = await _rounds("bittorrent.silence_factor=0", "federate.total_round_num=1")
    assert all(m.exchange_s >= 600 for m in waited), [m.exchange_s for m in waited]
