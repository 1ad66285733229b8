"""``fltorrent new``: the project runs with its own config through a tracker and peer processes,
each started from the project's directory, as a user runs a federation across hosts; and
peers that bring their own data files (``fltorrent peer --data``) to a plain tracker."""

from __future__ import annotations

import csv
import json
import math
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

SCRIPT = Path(sys.executable).with_name("fltorrent")  # the installed console script
PEERS = 2
ROUNDS = 2
DEADLINE_S = 240.0  # the whole federation; it takes seconds


def _fltorrent(*args: str, cwd: Path) -> str:
    """Run a short ``fltorrent`` command to completion; its stdout."""
    done = subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, timeout=120, check=False, cwd=cwd
    )
    assert done.returncode == 0, (args, done.stderr)
    return done.stdout


def _start(*args: str, cwd: Path, log: Path) -> subprocess.Popen[str]:
    """Start ``fltorrent ARGS`` in ``cwd`` (the console script, which, unlike ``python -m``,
    does not put the current directory on sys.path); stdout piped, stderr to ``log``."""
    with log.open("w") as err:
        return subprocess.Popen(
            [str(SCRIPT), *args], stdout=subprocess.PIPE, stderr=err, text=True, cwd=cwd
        )


def _left(deadline: float) -> float:
    return max(1.0, deadline - time.monotonic())


def _listening_address(tracker: subprocess.Popen[str], log: Path, deadline: float) -> str:
    """The HOST:PORT of the tracker's "tracker listening on HOST:PORT ..." line in ``log``."""
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if "listening on " in line:
                return line.split("listening on ")[1].split()[0]
        assert tracker.poll() is None, f"tracker exited before listening: {log.read_text()}"
        time.sleep(0.1)
    raise AssertionError(f"tracker not listening in time: {log.read_text()}")


# --- data files, keys and the federation run ------------------------------------------------

DIM = 8  # features per sample
CLASSES = 3
NPZ_TRAIN, NPZ_TEST = 300, 100  # peer 1's .npz: its own train and test split
CSV_ROWS = 250  # peer 2's .csv: test_fraction (0.2) of it is held out, the rest trains
CSV_TRAIN = CSV_ROWS - math.ceil(CSV_ROWS * 0.2)


def _labelled(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` samples of a learnable rule shared by all peers: the argmax of a fixed linear map
    (same map for every seed) of standard normal features."""
    weights = np.random.default_rng(1234).normal(size=(DIM, CLASSES))
    x = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return x, np.argmax(x @ weights, axis=1).astype(np.int64)


def _write_npz(path: Path) -> None:
    x_train, y_train = _labelled(NPZ_TRAIN, seed=1)
    x_test, y_test = _labelled(NPZ_TEST, seed=2)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


def _write_csv(path: Path) -> None:
    x, y = _labelled(CSV_ROWS, seed=3)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow([f"f{j}" for j in range(DIM)] + ["label"])
        w.writerows(
            [*(f"{v:.6f}" for v in row), str(label)] for row, label in zip(x, y, strict=True)
        )


def _federation(tmp_path: Path, peers: int) -> Path:
    """The admin's federation directory and, per peer ``i``, ``peer{i}.key`` and
    ``peer{i}.token`` in ``tmp_path``, made as the README says."""
    fed = tmp_path / "fed"
    _fltorrent("keys", "create", str(fed), "--name", "own-data-test", cwd=tmp_path)
    for i in range(1, peers + 1):
        key = tmp_path / f"peer{i}.key"
        _fltorrent("keys", "new-key", str(key), cwd=tmp_path)
        token = ["--out", str(tmp_path / f"peer{i}.token")]
        issue = ["keys", "issue", str(fed), "--key", f"{key}.pub", "--role", "peer", "--id", str(i)]
        _fltorrent(*issue, *token, cwd=tmp_path)
    return fed


def _peer_args(keys: Path, address: str, i: int, out: Path) -> list[str]:
    """``fltorrent peer`` joining ``address`` as peer ``i`` with the federation, key and token
    that :func:`_federation` made in ``keys``; its outputs in ``out``."""
    args = ["peer", "--tracker", address, "--id", str(i), "-o", str(out)]
    args += ["--federation", str(keys / "fed"), "--key", str(keys / f"peer{i}.key")]
    return [*args, "--token", str(keys / f"peer{i}.token")]


def _federate(
    tmp_path: Path, settings: list[str], *, cwd: Path, peer_args: dict[int, list[str]]
) -> dict[int, list[dict[str, Any]]]:
    """Run ``fltorrent tracker`` (``settings``: its options) and one ``fltorrent peer`` per
    entry of ``peer_args`` (their extra options), all in ``cwd``, with the keys and tokens
    :func:`_federation` made in ``tmp_path``; every process must end well. Each peer's metrics
    records, checked for one per round with a finite accuracy."""
    deadline = time.monotonic() + DEADLINE_S
    tracker_log = tmp_path / "tracker.log"
    args = ["tracker", "--federation", str(tmp_path / "fed"), "--port", "0"]
    args += ["-o", str(tmp_path / "tracker"), "--peers", str(len(peer_args))]
    args += ["--rounds", str(ROUNDS), "--set", "bittorrent.seed_grace=1", *settings]
    tracker = _start(*args, cwd=cwd, log=tracker_log)
    peers: dict[int, subprocess.Popen[str]] = {}
    records: dict[int, list[dict[str, Any]]] = {}
    try:
        address = _listening_address(tracker, tracker_log, deadline)
        for i, extra in peer_args.items():
            args = [*_peer_args(tmp_path, address, i, tmp_path / f"out{i}"), *extra]
            peers[i] = _start(*args, cwd=cwd, log=tmp_path / f"peer{i}.log")
        for i, p in peers.items():
            out, _ = p.communicate(timeout=_left(deadline))
            assert p.returncode == 0, (tmp_path / f"peer{i}.log").read_text()[-2000:]
            assert f"peer {i} round {ROUNDS}:" in out, out
            lines = (tmp_path / f"out{i}" / "metrics.jsonl").read_text().splitlines()
            records[i] = [json.loads(line) for line in lines]
            assert [(r["round"], r["peer"]) for r in records[i]] == [
                (r, i) for r in range(1, ROUNDS + 1)
            ]
            assert all(math.isfinite(r["accuracy"]) and 0 <= r["accuracy"] <= 1 for r in records[i])
        out, _ = tracker.communicate(timeout=_left(deadline))
        assert tracker.returncode == 0, tracker_log.read_text()[-2000:]
        assert json.loads(out)["members"] == {str(i): "done" for i in peer_args}
        _check_tracker_run(tmp_path / "tracker", records)
    finally:
        for p in [tracker, *peers.values()]:
            p.kill()
            p.wait(timeout=30)
    return records


def _check_tracker_run(run: Path, records: dict[int, list[dict[str, Any]]]) -> None:
    """A tracker-mode run is a run: the tracker's directory holds the peers' records merged
    (exactly what each peer wrote), a summary and the report."""
    merged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    mine = [r for rs in records.values() for r in rs]
    key = lambda r: (r["round"], r["peer"])  # noqa: E731
    assert sorted(merged, key=key) == sorted(mine, key=key)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["mode"] == "tracker" and summary["failed_peers"] == []
    assert summary["finished_peers"] == sorted(records) and summary["records_dropped"] == 0
    assert (run / "config.yaml").is_file() and (run / "report" / "index.html").is_file()


@pytest.mark.slow
def test_a_tracker_run_with_a_member_that_did_not_finish_fails(tmp_path: Path) -> None:
    """Peer 2 is killed after its second round: the federation goes on without it, and the
    tracker's run says who failed and exits non-zero."""
    _federation(tmp_path, PEERS)
    tracker_log = tmp_path / "tracker.log"
    args = ["tracker", "--federation", str(tmp_path / "fed"), "--port", "0", "--rounds", "5"]
    args += ["-o", str(tmp_path / "run"), "--peers", str(PEERS), "--set", "data.num_samples=600"]
    args += ["--set", "bittorrent.seed_grace=1", "--set", "bittorrent.timeout=5"]
    tracker = _start(*args, cwd=tmp_path, log=tracker_log)
    deadline = time.monotonic() + DEADLINE_S
    peers: list[subprocess.Popen[str]] = []
    try:
        address = _listening_address(tracker, tracker_log, deadline)
        for i in (1, 2):
            out = tmp_path / f"out{i}"
            peers.append(
                _start(
                    *_peer_args(tmp_path, address, i, out),
                    cwd=tmp_path,
                    log=tmp_path / f"peer{i}.log",
                )
            )
        assert peers[1].stdout is not None
        # Killed once its second round is done: its first round's record has left by then.
        while "round 2:" not in peers[1].stdout.readline():
            assert time.monotonic() < deadline and peers[1].poll() is None
        peers[1].kill()
        peers[0].communicate(timeout=_left(deadline))
        assert peers[0].returncode == 0, (tmp_path / "peer1.log").read_text()[-2000:]
        tracker.communicate(timeout=_left(deadline))
        assert tracker.returncode == 1, tracker_log.read_text()[-2000:]
        assert "peers that did not finish: [2]" in tracker_log.read_text()
        summary = json.loads((tmp_path / "run" / "summary.json").read_text())
        assert summary["failed_peers"] == [2] and summary["finished_peers"] == [1]
        merged = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
        rounds = {(json.loads(x)["peer"], json.loads(x)["round"]) for x in merged}
        assert {(1, r) for r in (1, 2, 3, 4, 5)} <= rounds and (2, 1) in rounds
    finally:
        for p in [tracker, *peers]:
            p.kill()
            p.wait(timeout=30)


@pytest.mark.slow
def test_the_project_runs_through_a_tracker_and_peer_processes(tmp_path: Path) -> None:
    """The project's own config on the tracker; the peers resolve its import strings from the
    project directory (their working directory)."""
    _fltorrent("new", "proj", cwd=tmp_path)
    _federation(tmp_path, PEERS)
    settings = ["-c", "fltorrent.yaml", "--set", "data.options.samples=200"]
    records = _federate(
        tmp_path, settings, cwd=tmp_path / "proj", peer_args={i: [] for i in range(1, PEERS + 1)}
    )
    assert all(r["completion"] == 1.0 for rs in records.values() for r in rs)


@pytest.fixture(scope="module")
def one_peer_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A federation with one peer's key and token (see :func:`_federation`), made once."""
    keys = tmp_path_factory.mktemp("keys")
    _federation(keys, 1)
    return keys


@pytest.mark.slow
def test_peers_train_on_their_own_files_of_different_formats(tmp_path: Path) -> None:
    """A plain tracker config (built-in model, ``data.num_classes``); each peer brings its own
    file with --data, peer 1 a .npz with its own splits and peer 2 a .csv with a header."""
    own = {1: tmp_path / "peer1.npz", 2: tmp_path / "peer2.csv"}
    _write_npz(own[1])
    _write_csv(own[2])
    _federation(tmp_path, PEERS)
    settings = ["--set", "model.name=mlp", "--set", f"data.num_classes={CLASSES}"]
    peer_args = {i: ["--data", str(path)] for i, path in own.items()}
    if not torch.cuda.is_available():
        # A device this host lacks in the federation's config; --device on each peer wins.
        settings += ["--set", "train.device=cuda"]
        peer_args = {i: [*args, "--device", "cpu"] for i, args in peer_args.items()}
    records = _federate(tmp_path, settings, cwd=tmp_path, peer_args=peer_args)
    train_size = {1: NPZ_TRAIN, 2: CSV_TRAIN}
    for i, rs in records.items():
        # It trained on its own file's train split, not on a share of the config's data.
        assert [r["num_samples"] for r in rs] == [train_size[i]] * ROUNDS, rs
        # The rule is learnt well above chance (1/3) by the last round (0.88 and 0.94 here).
        assert rs[-1]["accuracy"] > 1 / CLASSES + 0.2, rs[-1]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("option", "value", "named"),
    [
        ("--data", "/nonexistent/peer.npz", "no such file or folder"),
        ("--data", "peer.txt", "unknown data format"),
        ("--device", "cuda:7", "cuda:7"),
        ("--device", "gpu", "gpu"),
    ],
)
def test_peer_refuses_bad_own_data_or_device_before_joining(
    tmp_path: Path, one_peer_keys: Path, option: str, value: str, named: str
) -> None:
    """A bad --data or --device is a usage error (exit 2, one line) before the peer connects:
    the tracker address here has nothing listening, and the output directory is not made."""
    (tmp_path / "peer.txt").write_text("1,2,3\n")
    with socket.socket() as unused:  # bound, never listening: connecting to it is refused
        unused.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{unused.getsockname()[1]}"
        args = [
            str(SCRIPT),
            *_peer_args(one_peer_keys, address, 1, tmp_path / "out"),
            option,
            value,
        ]
        done = subprocess.run(
            args, capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path
        )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith(f"error: {option}: ") and named in lines[0], lines
    assert done.stdout == ""
    assert not (tmp_path / "out").exists()  # it stopped before making its output directory
