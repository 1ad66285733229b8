"""The command line: exit codes and messages for bad input, config commands, real runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from fltorrent.cli import app
from fltorrent.security import Authority, load_or_create_key

runner = CliRunner()

SPEC_EXAMPLE = """
federate:   {client_num: 10, total_round_num: 50, mode: distributed}
topology:   {use: true, type: mesh, connections: 3}
bittorrent: {enable: true, timeout: 600.0, chunk_selection: rarest_first, min_completion_ratio: 0.8}
chunk:      {num_chunks: 20, importance_method: snip}
"""


def test_config_show_prints_every_default() -> None:
    result = runner.invoke(app, ["config", "show", "--set", "federate.client_num=5"])
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.output)
    assert shown["federate"]["client_num"] == 5
    assert shown["bittorrent"]["min_completion_ratio"] == 0.8
    assert shown["data"]["name"] == "mnist1d"


def test_spec_example_validates(tmp_path: Path) -> None:
    path = tmp_path / "fltorrent.yaml"
    path.write_text(SPEC_EXAMPLE)
    result = runner.invoke(app, ["config", "validate", str(path)])
    assert result.exit_code == 0, result.output
    assert "valid" in result.output


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "federate: {client_num: 0}",
            "federate.client_num: Input should be greater than or equal to 1",
        ),
        ("bittorrent: {timeout: soon}", "bittorrent.timeout: Input should be a valid number"),
        ("chunk: {num_chunk: 3}", "chunk.num_chunk: unknown key"),
        ("topology: {type: mesh, connections: 12}", "topology.connections"),
        (
            "topology: {type: custom, custom_graph: {1: [2]}}\nfederate: {client_num: 3}",
            "topology.custom_graph: the topology is disconnected",
        ),
        ("- just\n- a list", "must hold a mapping"),
        ("federate: {client_num: [", "not valid YAML"),
        ("devices: {distribution: {phone: 1.0}}", "devices.distribution.phone: unknown profile"),
        ("devices: {distribution: {iot_device: 0.5}}", "shares must sum to 1"),
        (
            "devices: {profiles: {p: {extends: iot_device, speed: 2}}}",
            "devices.profiles.p.speed: unknown key",
        ),
        ("devices: {availability: {model: trace}}", "needs trace_file"),
        (
            "devices: {availability: {model: trace, trace_file: /nonexistent.yaml}}",
            "cannot read",
        ),
        ("faults: {crash_rounds: {2: [99]}}", "faults.crash_rounds"),
        ("federate: {mode: sim}\nruntime: {processes: true}", "runtime.processes"),
        ("network: {up_mbit: 0}", "network.up_mbit"),
        ("data: {name: cifar10}", "data.path: data.name 'cifar10' needs data.path"),
        ("data: {path: x.npz}", "data.path: is for data.name cifar10, emnist, femnist or files"),
        ("data: {name: cifar10, path: 'c{peer}'}", "{peer} is for data.name 'files'"),
        ("data: {name: files, path: 'p{id}.npz'}", "the only placeholder is {peer}"),
        ("data: {partition: natural}", "'natural' needs data.name synthetic or femnist"),
        ("data: {name: files, path: a.csv, test_fraction: 1.0}", "data.test_fraction"),
        ("train: {device: gpu}", "train.device"),
        ("model: {name: cnn2d}", "'cnn2d' needs image data"),
    ],
)
def test_bad_configs_exit_2_with_the_key_path(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = runner.invoke(app, ["config", "validate", str(path)])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_bad_overrides_and_arguments_exit_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", "--peers", "0", "--output-dir", str(tmp_path / "x")])
    assert result.exit_code == 2 and "federate.client_num" in result.output
    assert not (tmp_path / "x").exists()  # refused before anything started
    result = runner.invoke(app, ["run", "--set", "nonsense"])
    assert result.exit_code == 2 and "section.key=value" in result.output
    result = runner.invoke(app, ["config", "validate", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2 and "cannot read config file" in result.output
    result = runner.invoke(app, ["peer", "--tracker", "localhost"])
    assert result.exit_code == 2 and "HOST:PORT" in result.output


def test_what_this_host_lacks_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    out = tmp_path / "run"
    missing = ["--set", "data.name=files", "--set", f"data.path={tmp_path}/p{{peer}}.npz"]
    result = runner.invoke(app, ["run", "--peers", "3", "-o", str(out), *missing])
    assert result.exit_code == 2, result.output
    assert "data.path" in result.output and "p1.npz and 2 more" in result.output
    assert not out.exists()
    if not torch.cuda.is_available():
        result = runner.invoke(app, ["run", "-o", str(out), "--set", "train.device=cuda"])
        assert result.exit_code == 2 and "train.device" in result.output
        assert "no CUDA device" in result.output
        assert not out.exists()


def _fltorrent(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "fltorrent", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


@pytest.mark.slow
def test_run_ring_of_six_writes_eighteen_complete_records(tmp_path: Path) -> None:
    out = tmp_path / "D"
    proc = _fltorrent(
        "run", "--peers", "6", "--rounds", "3", "--topology", "ring", "--output-dir", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 18
    assert {(r["round"], r["peer"]) for r in records} == {
        (r, p) for r in (1, 2, 3) for p in range(1, 7)
    }
    assert all(r["completion"] == 1.0 and r["corrupt_pieces"] == 0 for r in records)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished_peers"] == [1, 2, 3, 4, 5, 6]
    assert yaml.safe_load((out / "config.yaml").read_text())["topology"]["type"] == "ring"
    assert (out / "model.safetensors").stat().st_size > 0
    assert "round 3/3" in proc.stdout


@pytest.mark.slow
def test_processes_mode_matches_the_in_process_run(tmp_path: Path) -> None:
    args = ["--peers", "3", "--rounds", "2", "--set", "data.num_samples=2000"]
    proc = _fltorrent("run", "--processes", *args, "--output-dir", str(tmp_path / "P"))
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(x) for x in (tmp_path / "P" / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 6 and all(r["completion"] == 1.0 for r in records)
    summary = json.loads((tmp_path / "P" / "summary.json").read_text())
    assert summary["mode"] == "processes"
    # Same seed, complete delivery: one process or many, the models are the same.
    proc = _fltorrent("run", *args, "--output-dir", str(tmp_path / "L"))
    assert proc.returncode == 0, proc.stderr
    local = json.loads((tmp_path / "L" / "summary.json").read_text())
    assert local["mode"] == "in-process"
    assert [r["mean"] for r in local["accuracy_per_round"]] == [
        r["mean"] for r in summary["accuracy_per_round"]
    ]


@pytest.mark.slow
@pytest.mark.parametrize("plan", ["neighbours", "reduce_scatter"])
def test_every_plan_runs_in_processes_as_in_one_process(tmp_path: Path, plan: str) -> None:
    args = ["--peers", "4", "--rounds", "2", "--set", "data.num_samples=2000"]
    args += ["--set", f"exchange.plan={plan}"]
    runs = {}
    for name, extra in (("P", ["--processes"]), ("L", [])):
        proc = _fltorrent("run", *extra, *args, "--output-dir", str(tmp_path / name))
        assert proc.returncode == 0, proc.stderr
        runs[name] = json.loads((tmp_path / name / "summary.json").read_text())
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        records = [json.loads(x) for x in lines]
        assert len(records) == 8 and all(r["completion"] == 1.0 for r in records)
        if plan == "reduce_scatter":
            assert all(r["owned_chunks"] > 0 for r in records)
    assert [r["mean"] for r in runs["P"]["accuracy_per_round"]] == [
        r["mean"] for r in runs["L"]["accuracy_per_round"]
    ]


@pytest.mark.slow
def test_default_federation_reaches_the_accuracy_target(tmp_path: Path) -> None:
    # The README's run command: 8 peers, mesh of 3, mnist1d Dirichlet(0.5), 1-D CNN, 20 rounds.
    proc = _fltorrent("run", "--output-dir", str(tmp_path / "default"))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "default" / "summary.json").read_text())
    assert summary["peers"] == 8 and summary["rounds"] == 20
    assert summary["finished_peers"] == list(range(1, 9))
    assert summary["final_accuracy_mean"] >= 0.85


def _federation(directory: Path, peers: int, *, bind_ids: bool = True) -> list[list[str]]:
    """A federation in ``directory`` (as ``fltorrent keys`` makes one) with a key and token per
    peer; returns each peer's credential arguments for ``fltorrent peer``."""
    authority = Authority.new("cli-test")
    authority.save(directory)
    args = []
    for i in range(1, peers + 1):
        key = load_or_create_key(directory / f"peer{i}.key")
        token = authority.issue(key.public_key(), peer_id=i if bind_ids else None)
        (directory / f"peer{i}.token").write_bytes(token)
        args.append(
            [
                "--federation",
                str(directory),
                "--key",
                str(directory / f"peer{i}.key"),
                "--token",
                str(directory / f"peer{i}.token"),
            ]
        )
    return args


def _start_tracker(federation: Path, *args: str) -> tuple[subprocess.Popen[str], str]:
    """``fltorrent tracker --port 0 --federation DIR ARGS``; returns the process and the address
    it listens on."""
    tracker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fltorrent",
            "tracker",
            "--port",
            "0",
            "--federation",
            str(federation),
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert tracker.stderr is not None
    line = tracker.stderr.readline()
    while "listening on" not in line:
        assert line, "tracker exited before listening"
        line = tracker.stderr.readline()
    return tracker, line.split("listening on ")[1].split()[0]


def _start_peer(address: str, out: Path, *args: str) -> subprocess.Popen[str]:
    """``fltorrent peer --tracker ADDRESS --output-dir OUT ARGS``."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fltorrent",
            "peer",
            "--tracker",
            address,
            "--output-dir",
            str(out),
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_tracker_and_peers_as_separate_commands(tmp_path: Path) -> None:
    creds = _federation(tmp_path / "fed", 3, bind_ids=False)  # the tracker assigns the ids
    tracker, address = _start_tracker(
        tmp_path / "fed",
        "--peers",
        "3",
        "--rounds",
        "2",
        "--set",
        "data.num_samples=2000",
        "--set",
        "bittorrent.seed_grace=5",
    )
    try:
        peers = [_start_peer(address, tmp_path / f"peer{i}", *creds[i]) for i in range(3)]
        for p in peers:
            out, err = p.communicate(timeout=300)
            assert p.returncode == 0, err
            assert "round 2" in out
        out, _ = tracker.communicate(timeout=60)
        assert tracker.returncode == 0
        assert json.loads(out)["members"] == {"1": "done", "2": "done", "3": "done"}
    finally:
        tracker.kill()


@pytest.mark.slow
def test_sigkilled_peer_process_does_not_hang_the_others(tmp_path: Path) -> None:
    creds = _federation(tmp_path / "fed", 5)
    tracker, address = _start_tracker(
        tmp_path / "fed",
        "--peers",
        "5",
        "--rounds",
        "4",
        "--set",
        "data.num_samples=2000",
        "--set",
        "bittorrent.timeout=120",
        "--set",
        "topology.connections=2",
    )
    peers: list[subprocess.Popen[str]] = []
    try:
        for i in range(1, 6):
            peers.append(_start_peer(address, tmp_path / f"peer{i}", "--id", str(i), *creds[i - 1]))
        victim = peers[2]
        assert victim.stdout is not None
        first = victim.stdout.readline()  # printed when its round 1 is evaluated
        assert "round 1" in first, first
        victim.kill()  # SIGKILL in round 2: no goodbye, sockets reset by the kernel
        victim.wait()
        for i, p in enumerate(peers):
            if p is victim:
                continue
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
            assert "round 4" in out, (i, out)
            records = [
                json.loads(x)
                for x in (tmp_path / f"peer{i + 1}" / "metrics.jsonl").read_text().splitlines()
            ]
            assert [r["round"] for r in records] == [1, 2, 3, 4]
            assert records[0]["authors_aggregated"] == 5
            assert all(r["authors_aggregated"] == 4 for r in records[2:])
            assert not any(r["deadline_hit"] for r in records)  # nobody waited out 120 s
        tracker.communicate(timeout=60)
    finally:
        for p in [tracker, *peers]:
            p.kill()
