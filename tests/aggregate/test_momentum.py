"""FedAvgM: momentum each peer applies to its own aggregate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from fltorrent.aggregate.momentum import server_momentum
from fltorrent.config import load_config
from fltorrent.errors import AggregationError
from fltorrent.runtime.federation import Federation
from fltorrent.stages import ServerMomentum


def test_no_momentum_and_unit_step_give_the_aggregate() -> None:
    base, agg = [np.zeros(3)], [np.array([1.0, -2.0, 0.5])]
    model, velocity = server_momentum(base, agg, None, beta=0.0, lr=1.0)
    np.testing.assert_array_equal(model[0], agg[0])
    np.testing.assert_array_equal(velocity[0], agg[0])


def test_the_velocity_accumulates_the_rounds_pseudo_gradients() -> None:
    step = ServerMomentum(beta=0.9, lr=0.5)
    mask = [np.array([True, True, False])]
    # Round 1: from 0 the aggregate moves by d1; round 2: from m1 it moves by d2.
    d1, d2 = np.array([1.0, 2.0, 7.0]), np.array([-1.0, 0.5, 9.0])
    m1 = step([np.zeros(3)], [d1], mask)[0]
    np.testing.assert_allclose(m1[:2], 0.5 * d1[:2])
    assert m1[2] == 7.0  # outside the mask (a step counter): the aggregate as it is
    m2 = step([m1], [m1 + d2], mask)[0]
    np.testing.assert_allclose(m2[:2], m1[:2] + 0.5 * (0.9 * d1[:2] + d2[:2]))
    assert m2[2] == m1[2] + d2[2]


@pytest.mark.parametrize(("beta", "lr"), [(1.0, 1.0), (-0.1, 1.0), (0.9, 0.0)])
def test_impossible_settings_are_refused(beta: float, lr: float) -> None:
    with pytest.raises(AggregationError):
        server_momentum([np.zeros(1)], [np.ones(1)], None, beta=beta, lr=lr)


def _run(tmp: Path, *extra: str) -> tuple[list[float], dict[int, dict[str, np.ndarray]]]:
    config = load_config(
        None,
        [
            "federate.mode=sim",
            "federate.client_num=4",
            "federate.total_round_num=4",
            "topology.type=full",
            "data.num_samples=2000",
            "output.progress=none",
            *extra,
        ],
    )
    result = Federation(config, output_dir=tmp).run()
    curve = [r["mean"] for r in result.summary["accuracy_per_round"]]
    models = {p: load_file(str(tmp / "models" / f"peer-{p}.safetensors")) for p in range(1, 5)}
    return curve, models


@pytest.mark.slow
def test_every_peer_follows_the_same_momentum(tmp_path: Path) -> None:
    plain, _ = _run(tmp_path / "plain")
    same, _ = _run(tmp_path / "same", "train.server_momentum=0", "train.server_lr=1")
    assert same == plain  # the stage is off: nothing changes
    curve, models = _run(tmp_path / "m", "train.server_momentum=0.9")
    assert curve != plain
    # Complete graph, full delivery: every peer had the same aggregates, so the same velocity.
    for k, v in models[1].items():
        for p in (2, 3, 4):
            np.testing.assert_array_equal(models[p][k], v)
