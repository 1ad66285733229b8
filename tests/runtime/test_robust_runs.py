"""Robust rules, pre-aggregation, attacks, detection and trust, end to end from config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fltorrent.aggregate import PREAGGREGATORS, RULES
from fltorrent.attacks.behaviour import ATTACKS
from fltorrent.config import load_config
from fltorrent.runtime.federation import Federation

BASE = [
    "data.name=digits",
    "data.num_samples=1797",
    "model.name=mlp",
    "data.partition=iid",
    "train.local_epochs=3",
    "federate.client_num=8",
    "federate.total_round_num=5",
    "topology.type=full",
    "output.save_model=false",
    "output.progress=none",
]
SIM = ["federate.mode=sim"]
ATTACKERS = ["attack.peers=[7, 8]"]


def run(tmp: Path, *overrides: str) -> dict[str, Any]:
    config = load_config(None, [*BASE, *overrides])
    return Federation(config, output_dir=tmp).run().summary


def test_scaling_breaks_the_mean_and_robust_rules_hold(tmp_path: Path) -> None:
    attack = ["attack.type=scale", *ATTACKERS]
    clean = run(tmp_path / "clean", *SIM)["final_accuracy_mean"]
    broken = run(tmp_path / "mean", *SIM, *attack)["byzantine"]["final_accuracy_honest_mean"]
    held = run(tmp_path / "median", *SIM, *attack, "robust.rule=median")
    assert clean > 0.8
    assert broken < clean - 0.3
    assert held["byzantine"]["final_accuracy_honest_mean"] > clean - 0.1
    assert held["byzantine"]["attackers"] == [7, 8]


@pytest.mark.parametrize("rule", sorted(RULES))
def test_every_rule_runs_from_config(tmp_path: Path, rule: str) -> None:
    summary = run(tmp_path, *SIM, f"robust.rule={rule}", "robust.f=1")
    assert len(summary["finished_peers"]) == 8
    assert summary["final_accuracy_mean"] > 0.6


@pytest.mark.parametrize("preagg", sorted(PREAGGREGATORS))
def test_every_preaggregation_runs_from_config(tmp_path: Path, preagg: str) -> None:
    summary = run(
        tmp_path,
        *SIM,
        f"robust.preagg={preagg}",
        "robust.rule=median",
        "robust.f=1",
        "robust.clip_norm=5.0",
    )
    assert len(summary["finished_peers"]) == 8
    assert summary["final_accuracy_mean"] > 0.6


@pytest.mark.parametrize("attack", ATTACKS)
def test_every_attack_runs_and_detection_reports_rates(tmp_path: Path, attack: str) -> None:
    summary = run(
        tmp_path,
        *SIM,
        f"attack.type={attack}",
        *ATTACKERS,
        "robust.rule=trimmed_mean",
        "robust.f=2",
        "robust.detection.enabled=true",
        "robust.trust.enabled=true",
    )
    byz = summary["byzantine"]
    assert byz["attackers"] == [7, 8]
    assert len(summary["finished_peers"]) == 8
    assert byz["true_positive_rate"] is not None and byz["false_positive_rate"] is not None
    if attack in ("scale", "sign_flip", "noise"):
        assert byz["true_positive_rate"] >= 0.9
    if attack in ("chunk_poison", "equivocate"):
        # Caught by the protocol itself (hashes, two manifests), every round, by everyone,
        # and nobody waits for the liar until a deadline.
        assert byz["true_positive_rate"] == 1.0
        assert summary["deadline_rounds"] == 0
    assert byz["false_positive_rate"] <= 0.2


@pytest.mark.slow
@pytest.mark.parametrize(
    "setting",
    [
        ["robust.rule=krum", "robust.f=2", "attack.type=sign_flip"],
        ["robust.rule=centered_clip", "robust.preagg=bucketing", "attack.type=ipm"],
        ["robust.rule=geometric_median", "attack.type=label_flip"],
        [
            "robust.rule=bulyan",
            "robust.f=1",
            "robust.detection.enabled=true",
            "robust.trust.enabled=true",
            "attack.type=noise",
            "attack.sigma=0.5",
        ],
    ],
)
def test_defences_and_attacks_over_tcp(tmp_path: Path, setting: list[str]) -> None:
    summary = run(tmp_path, *ATTACKERS, *setting)
    assert len(summary["finished_peers"]) == 8
    assert summary["byzantine"]["attackers"] == [7, 8]
    assert summary["byzantine"]["final_accuracy_honest_mean"] > 0.6
