"""The robustness benchmark's grid is made of config overrides: every cell must be a valid config.

A typo in a rule's options would otherwise surface only hours into a benchmark run.
"""

from __future__ import annotations

import pytest

from fltorrent.config import load_config
from fltorrent.errors import ConfigError
from tests.benchmark_scripts import load_benchmark

BENCH = load_benchmark("robustness")


@pytest.mark.parametrize("detect", [False, True])
@pytest.mark.parametrize("rule", sorted(BENCH.RULES))
@pytest.mark.parametrize("attack", sorted(BENCH.ATTACKS))
def test_every_cell_of_the_grid_is_a_valid_config(attack: str, rule: str, detect: bool) -> None:
    job = BENCH.Job("full", attack, rule, detect, seed=0, rounds=20, chunks=4)
    config = load_config(None, BENCH.overrides(job))
    assert config.robust.rule == next(
        o.split("=", 1)[1] for o in BENCH.RULES[rule] if o.startswith("robust.rule=")
    )
    assert config.attack.type == attack
    assert config.robust.detection.enabled is detect


def test_bucketing_cell_sets_the_preaggregator() -> None:
    config = load_config(None, ["federate.client_num=20", *BENCH.RULES["bucketing_centered_clip"]])
    assert (config.robust.preagg, config.robust.bucket_size) == ("bucketing", 2)
    assert (config.robust.tau, config.robust.iters) == (0.1, 3)


def test_a_bad_override_is_refused() -> None:
    with pytest.raises(ConfigError):
        load_config(None, ["federate.client_num=20", "robust.rule=trimmed_mean", "robust.f=10"])
