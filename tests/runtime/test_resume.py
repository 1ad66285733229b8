"""Checkpoints and resume: a stopped run continues from its peers' checkpoints and ends with the
learning results of an uninterrupted run; an interrupted run still leaves a summary."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fltorrent.config import load_config
from fltorrent.errors import ConfigError, FederationError
from fltorrent.net.clock import run_virtual
from fltorrent.peer import Phase
from fltorrent.runtime.checkpoint import common_round, latest, load_checkpoint, save_checkpoint
from fltorrent.runtime.federation import Federation
from fltorrent.runtime.node import NodeHooks, _peer_state
from fltorrent.telemetry.sink import read_metrics
from tests.aio import aio

BASE = [
    "federate.client_num=3",
    "federate.mode=sim",
    "data.num_samples=900",
    "model.name=mlp",
]
# What a resumed run must reproduce exactly: everything learning decides. Times, bytes and the
# simulated clock of the first resumed round differ (connections are made again).
LEARNING = (
    "accuracy",
    "loss",
    "local_accuracy",
    "train_loss",
    "num_samples",
    "trained",
    "authors_expected",
    "authors_aggregated",
    "completion",
    "flagged",
    "excluded",
    "selected",
    "selection",
    "skip_reason",
)


def _learning(records: list[dict[str, Any]], after: int) -> dict[tuple[int, int], tuple[Any, ...]]:
    return {
        (r["round"], r["peer"]): tuple(r[k] for k in LEARNING)
        for r in records
        if r["round"] > after
    }


def _config(*extra: str) -> Any:
    return load_config(None, [*BASE, *extra])


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra",
    [
        [],
        # state beyond the model: FedAvgM velocity, q8 error feedback, trust and momentum
        [
            "train.server_momentum=0.9",
            "devices.compression=q8",
            "devices.distribution={smartphone_high: 1.0}",
            "robust.detection.enabled=true",
            "robust.trust.enabled=true",
        ],
        # who sat out recent rounds weighs in each round's selection (the phones never charge)
        [
            "selection.max_participants=2",
            "devices.distribution={smartphone_high: 0.5, edge_server: 0.5}",
            "devices.policy.charging_only=true",
        ],
    ],
    ids=["plain", "stateful", "selection"],
)
def test_a_run_stopped_after_two_rounds_resumes_to_the_same_results(
    tmp_path: Path, extra: list[str]
) -> None:
    whole = Federation(
        _config("federate.total_round_num=4", *extra),
        output_dir=tmp_path / "whole",
        progress="none",
    ).run()
    Federation(
        _config("federate.total_round_num=2", *extra), output_dir=tmp_path / "part", progress="none"
    ).run()
    assert common_round(tmp_path / "part", [1, 2, 3]) == 2
    resumed = Federation.resume(tmp_path / "part", rounds=4, progress="none").run()
    assert resumed.summary["resumed_after_round"] == 2
    got, want = _learning(resumed.metrics, 2), _learning(whole.metrics, 2)
    assert set(got) == {(r, p) for r in (3, 4) for p in (1, 2, 3)}
    assert got == want
    # Rounds 1-2 are those of the first part, kept once.
    assert [(r["round"], r["peer"]) for r in resumed.metrics][:6] == [
        (r, p) for r in (1, 2) for p in (1, 2, 3)
    ]


@pytest.mark.slow
def test_an_interrupted_run_leaves_a_summary_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = _config("federate.total_round_num=4")
    reached = asyncio.Event()

    def hook(peer: int, round_: int, phase: Phase) -> None:
        if round_ == 3 and phase is Phase.TRAINING:
            reached.set()

    async def stop_midway() -> None:
        fed = Federation(config, output_dir=out, progress="none", fault_hook=hook)
        task = asyncio.create_task(fed.arun())
        await reached.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run_virtual(stop_midway())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"].startswith("CancelledError")
    done = common_round(out, [1, 2, 3])
    assert 1 <= done <= 2
    resumed = Federation.resume(out, progress="none").run()
    whole = Federation(config, output_dir=tmp_path / "whole", progress="none").run()
    assert _learning(resumed.metrics, done) == _learning(whole.metrics, done)
    assert "interrupted" not in resumed.summary and resumed.summary["finished_peers"] == [1, 2, 3]
    rounds = [r["round"] for r in read_metrics(out / "metrics.jsonl")]
    assert sorted(rounds) == [r for r in (1, 2, 3, 4) for _ in range(3)]  # each round once


def test_resume_refusals(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no config\.yaml there"):
        Federation.resume(tmp_path)
    config = _config("federate.total_round_num=2", "output.checkpoint_every=0")
    Federation(config, output_dir=tmp_path / "none", progress="none").run()
    with pytest.raises(ConfigError, match="no round that every peer checkpointed"):
        Federation.resume(tmp_path / "none", rounds=3).run()
    Federation(
        _config("federate.total_round_num=2"), output_dir=tmp_path / "done", progress="none"
    ).run()
    with pytest.raises(ConfigError, match="the run has all 2 rounds"):
        Federation.resume(tmp_path / "done").run()
    assert len(latest(tmp_path / "done", 1)) == 2


@aio()
async def test_a_checkpoint_round_trips_the_state_and_refuses_a_foreign_model(
    tmp_path: Path,
) -> None:
    config = load_config(
        None,
        [
            "federate.client_num=2",
            "data.num_samples=400",
            "train.server_momentum=0.5",
            "devices.compression=q8",
            "devices.distribution={smartphone_low: 1.0}",
        ],
    )
    state = await _peer_state(config, 1, None, NodeHooks())
    update = state.learner.local_round(1)
    state.encoder.encode(
        "q8",
        before=update.vectors,
        after=[v + 0.01 for v in update.vectors],
        raw_pieces=[b""] * len(update.vectors),
    )
    state.server_step.velocity = [np.full(3, 0.25)]  # type: ignore[union-attr]
    path = save_checkpoint(tmp_path, state, peer=1, round_=5, sim_time_s=12.5)
    fresh = await _peer_state(config, 1, None, NodeHooks())
    got = load_checkpoint(path, fresh)
    assert (got.peer, got.round, got.sim_time_s) == (1, 5, 12.5)
    for a, b in zip(state.learner.vectors(), fresh.learner.vectors(), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(fresh.server_step.velocity[0], np.full(3, 0.25))  # type: ignore[index,union-attr]
    before = state.encoder._feedback["q8"]
    after = fresh.encoder._feedback["q8"]
    assert before._rng.bit_generator.state == after._rng.bit_generator.state
    for k, v in before._residuals.items():
        np.testing.assert_array_equal(v, after._residuals[k])
    other = load_config(None, ["federate.client_num=2", "data.num_samples=400", "model.hidden=8"])
    foreign = await _peer_state(other, 1, None, NodeHooks())
    with pytest.raises(FederationError, match="does not fit this peer's model"):
        load_checkpoint(path, foreign)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(FederationError, match="not a readable checkpoint"):
        load_checkpoint(path, fresh)


@pytest.mark.slow
def test_peer_processes_resume_without_duplicating_records(tmp_path: Path) -> None:
    # Peer processes keep their own metrics; the resumed run merges only the new rounds.
    config = load_config(
        None,
        [
            "federate.client_num=3",
            "federate.total_round_num=1",
            "runtime.processes=true",
            "data.num_samples=600",
        ],
    )
    Federation(config, output_dir=tmp_path, progress="none").run()
    result = Federation.resume(tmp_path, rounds=2, progress="none").run()
    assert [(r["round"], r["peer"]) for r in read_metrics(tmp_path / "metrics.jsonl")] == [
        (r, p) for r in (1, 2) for p in (1, 2, 3)
    ]
    assert result.summary["finished_peers"] == [1, 2, 3]


def test_resume_takes_the_runs_own_configuration(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from fltorrent.cli import app

    result = CliRunner().invoke(app, ["run", "--resume", str(tmp_path), "--peers", "3"])
    assert result.exit_code == 2 and "only --rounds" in result.output
    result = CliRunner().invoke(app, ["run", "--resume", str(tmp_path)])
    assert result.exit_code == 2 and "not a run directory" in result.output


def _rewrite_meta(path: Path, change: Any) -> None:
    """Rewrite the JSON metadata of a checkpoint with ``change(meta_text) -> text``."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        meta = (f.metadata() or {})["fltorrent"]
    save_file(tensors, str(path), metadata={"fltorrent": change(meta)})


def test_a_damaged_checkpoint_refuses_the_resume_before_any_peer_starts(tmp_path: Path) -> None:
    Federation(_config("federate.total_round_num=2"), output_dir=tmp_path, progress="none").run()
    path = tmp_path / "checkpoints" / "peer-1" / "round-000002.safetensors"
    original = path.read_bytes()

    def bad_rng(text: str) -> str:
        meta = json.loads(text)
        meta["state"]["defense"]["rng"] = {"bit_generator": "PCG64", "state": "x"}
        return json.dumps(meta)

    _rewrite_meta(path, bad_rng)
    with pytest.raises(ConfigError, match=r"peer-1/round-000002.safetensors: a damaged checkpoint"):
        Federation.resume(tmp_path, rounds=3, progress="none").run()
    for damage in (
        lambda t: t.replace('"round": 2', '"round": Infinity'),
        lambda t: t.replace('"round": 2', '"round": 3'),  # not what its name says
        lambda t: '{"version": 1, "peer": 1, "round": ' + "[" * 100_000 + "]" * 100_000 + "}",
        lambda t: t.replace('"sat_out": {}', '"sat_out": {"x": [1]}'),
    ):
        path.write_bytes(original)
        _rewrite_meta(path, damage)
        with pytest.raises(ConfigError, match="checkpoint"):
            Federation.resume(tmp_path, rounds=3, progress="none").run()
    path.write_bytes(original)  # whole again: it resumes
    assert Federation.resume(tmp_path, rounds=3, progress="none").run().summary["rounds"] == 3
