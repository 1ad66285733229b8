"""One key chooses the launcher; the older keys still work and may not contradict it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fltorrent.config import load_config
from fltorrent.errors import ConfigError
from fltorrent.runtime.build import swarm_options
from fltorrent.runtime.federation import Federation, make_launcher
from fltorrent.runtime.launcher import launcher_name


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        ([], "local"),
        (["federate.mode=sim"], "sim"),
        (["runtime.processes=true"], "processes"),
        (["runtime.launcher=sim"], "sim"),
        (["runtime.launcher=processes"], "processes"),
        (["runtime.launcher=local"], "local"),
        (["runtime.launcher=sim", "federate.mode=sim"], "sim"),
    ],
)
def test_the_launcher_key_and_its_older_spellings(overrides: list[str], name: str) -> None:
    config = load_config(None, overrides)
    assert launcher_name(config) == name
    launcher = make_launcher(config)
    assert launcher.name == name and launcher.virtual_time == (name == "sim")
    # The older keys follow the one key, so every component sees the same mode.
    assert (config.federate.mode == "sim") == (name == "sim")
    assert config.runtime.processes == (name == "processes")


@pytest.mark.parametrize(
    "overrides",
    [
        ["runtime.launcher=local", "federate.mode=sim"],
        ["runtime.launcher=sim", "runtime.processes=true"],
        ["runtime.launcher=processes", "federate.mode=sim"],
    ],
)
def test_contradicting_keys_are_refused_with_the_key_path(overrides: list[str]) -> None:
    with pytest.raises(ConfigError, match=r"runtime\.(launcher|processes)"):
        load_config(None, overrides)


def test_swarm_settings_come_from_the_bittorrent_section() -> None:
    config = load_config(None, ["bittorrent.upload_slots=1", "bittorrent.pipeline_seconds=0.03"])
    opts = swarm_options(config, federation="f", peer_id=3, listen_port=0)
    assert (opts.upload_slots, opts.pipeline_seconds) == (1, 0.03)
    default = swarm_options(load_config(None, []), federation="f", peer_id=3, listen_port=0)
    assert (default.upload_slots, default.pipeline_seconds) == (0, 0.1)
    with pytest.raises(ConfigError, match=r"bittorrent\.pipeline_seconds"):
        load_config(None, ["bittorrent.pipeline_seconds=0"])


def test_a_sim_launcher_runs_in_virtual_time(tmp_path: Path) -> None:
    config = load_config(
        None,
        [
            "runtime.launcher=sim",
            "data.num_samples=2000",
            "federate.client_num=3",
            "federate.total_round_num=1",
            "output.progress=none",
            "output.save_model=false",
            "network.up_mbit=0.1",  # 32 KB at 100 kbit/s: seconds of virtual time, no wall time
            "network.down_mbit=0.1",
        ],
    )
    result = Federation(config, output_dir=tmp_path).run()
    assert result.summary["mode"] == "sim" and result.summary["sim_time_s"] > 2.0
    assert result.summary["wall_time_s"] < result.summary["sim_time_s"]


@pytest.mark.slow
def test_peer_processes_report_their_records_as_they_go(tmp_path: Path) -> None:
    # The status (dashboard, status.json) gets each process's round records while it runs,
    # through the tracker; the run's metrics still come from the processes' own files.
    config = load_config(
        None,
        [
            "federate.client_num=2",
            "federate.total_round_num=2",
            "runtime.processes=true",
            "data.num_samples=600",
        ],
    )
    fed = Federation(config, output_dir=tmp_path, progress="none")
    seen: list[tuple[int, int, int]] = []
    board_record = fed.board.record

    def record(m: Any) -> None:
        seen.append((m.round, m.peer, m.bytes_down))
        board_record(m)

    fed.board.record = record  # type: ignore[method-assign]
    result = fed.run()
    keys = [(r, p) for r, p, _ in seen]
    # each record twice: live from the tracker, then merged from the process's file
    assert sorted(keys) == sorted([(r, p) for r in (1, 2) for p in (1, 2)] * 2)
    assert all(b > 0 for _, _, b in seen)
    assert len(result.metrics) == 4
