"""Importance methods and the new models, end to end from config, in sim and in real mode."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fltorrent.config import load_config
from fltorrent.learn.importance import IMPORTANCE_METHODS
from fltorrent.runtime.federation import Federation

BASE = [
    "data.name=digits",
    "data.num_samples=1797",
    "model.name=mlp",
    "data.partition=iid",
    "federate.client_num=4",
    "topology.type=full",
    "output.save_model=false",
    "output.progress=none",
]
# Links slow enough that a deadline cuts the exchange short: partial aggregation at work.
TIGHT = [
    "network.up_mbit=1",
    "network.down_mbit=4",
    "bittorrent.timeout=0.3",
    "bittorrent.hard_timeout=0.3",
    "bittorrent.min_completion_ratio=1.0",
]


def run(tmp: Path, *overrides: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    config = load_config(None, [*BASE, *overrides])
    result = Federation(config, output_dir=tmp).run()
    return result.summary, result.metrics


@pytest.mark.parametrize("method", IMPORTANCE_METHODS)
def test_every_method_runs_in_sim_under_a_deadline(tmp_path: Path, method: str) -> None:
    summary, records = run(
        tmp_path,
        "federate.mode=sim",
        "federate.total_round_num=3",
        f"chunk.importance_method={method}",
        *TIGHT,
    )
    assert len(summary["finished_peers"]) == 4
    assert 0.0 < summary["completion_mean"] < 1.0  # the deadline bit
    assert any(r["partial_chunks"] > 0 for r in records)
    assert summary["final_accuracy_mean"] > 0.3  # chance is 0.1
    assert all(r["train_wall_s"] > 0 for r in records)
    if method in ("snip", "fisher"):
        # They run forward and backward passes: measurable, and charged in virtual time.
        assert all(r["score_s"] > 0 for r in records)
        assert summary["score_overhead"] > 0


def test_scoring_is_charged_in_virtual_time(tmp_path: Path) -> None:
    sim = [
        "federate.mode=sim",
        "federate.total_round_num=1",
        "devices.distribution={edge_server: 1}",
    ]
    _, cheap = run(tmp_path / "r", *sim, "chunk.importance_method=random")
    _, costly = run(
        tmp_path / "f",
        *sim,
        "chunk.importance_method=fisher",
        "chunk.importance_config={fisher: {num_samples: 300}}",
    )
    # 300 extra forward+backward samples on top of one epoch over the peer's samples.
    for a, b in zip(cheap, costly, strict=True):
        n = a["num_samples"]
        assert n > 300
        assert b["train_s"] == pytest.approx(a["train_s"] * (n + 300) / n, rel=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("method", IMPORTANCE_METHODS)
def test_every_method_runs_over_tcp(tmp_path: Path, method: str) -> None:
    summary, records = run(
        tmp_path, "federate.total_round_num=2", f"chunk.importance_method={method}"
    )
    assert len(summary["finished_peers"]) == 4
    assert all(r["authors_aggregated"] == 4 for r in records)
    assert summary["final_accuracy_mean"] > 0.5


@pytest.mark.slow
@pytest.mark.parametrize("model", ["resnet", "transformer"])
def test_new_models_train_and_exchange_over_tcp(tmp_path: Path, model: str) -> None:
    summary, records = run(
        tmp_path,
        "data.name=mnist1d",
        "data.num_samples=3000",
        f"model.name={model}",
        "federate.total_round_num=3",
        "train.local_epochs=2",
        "chunk.num_chunks=12",
    )
    assert len(summary["finished_peers"]) == 4
    # Every peer took every other author's architecture-aware chunks, verified and aggregated.
    assert all(r["authors_aggregated"] == 4 and r["completion"] == 1.0 for r in records)
    assert all(r["pieces_expected"] >= 3 * 10 for r in records)
    assert summary["final_accuracy_mean"] > 0.25  # chance is 0.1
