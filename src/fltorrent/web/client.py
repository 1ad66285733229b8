"""Reading a status back: from a run directory (its live ``status.json``, or what its metrics
and summary say) or from a status endpoint over HTTP, with a deadline."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from fltorrent.errors import ConfigError, DeadlineExceeded, FltorrentError
from fltorrent.telemetry.run_dir import RunData, is_number, read_run
from fltorrent.telemetry.snapshot import (
    EVALUATED,
    STATUS_FILE,
    PeerView,
    RoundHistory,
    make_snapshot,
)


class _Peer(BaseModel):
    peer: int
    phase: str
    round: int
    completion: float | None = None
    accuracy: float | None = None
    bytes_up: int | None = None
    bytes_down: int | None = None


class _Round(BaseModel):
    round: int
    peers: int
    accuracy_mean: float | None = None
    accuracy_min: float | None = None
    completion_mean: float | None = None
    bytes_down: int | None = None


class _Status(BaseModel):
    """The shape of a status snapshot, checked where one comes back from a file or a server
    (both anyone's to write): what the status command reads must be there, of its type."""

    model_config = ConfigDict(extra="allow")
    state: str = "?"
    round: int = 0
    total_rounds: int | None = None
    completion: float | None = None
    accuracy_mean: float | None = None
    accuracy_min: float | None = None
    peers: dict[int, _Peer]
    history: list[_Round] = []
    edges: list[tuple[int, int]] | None = None


def checked_status(value: Any) -> dict[str, Any] | None:
    """``value`` if it is a status snapshot (see :class:`_Status`), else ``None``."""
    try:
        _Status.model_validate(value)
    except (ValidationError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


MAX_STATUS_BYTES = 32 << 20  # a status of thousands of peers is a few MB


def parse_address(text: str, *, key: str = "--tracker") -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) -> (host, port); :class:`ConfigError` if
    malformed."""
    host, sep, port = text.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ConfigError(f"must be HOST:PORT (port 1-65535), got {text!r}", path=key)
    return host, int(port)


def fetch_status(host: str, port: int, *, timeout: float = 5.0) -> dict[str, Any]:
    """``GET http://host:port/status`` within ``timeout`` seconds (no proxy);
    :class:`FltorrentError` with a one-line reason when it cannot be had."""
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/status"
    done: list[bytes | BaseException] = []

    def get() -> None:  # in a thread: the deadline is on the whole answer, not each read
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(url, timeout=timeout) as response:
                done.append(response.read(MAX_STATUS_BYTES + 1))
        except BaseException as exc:  # handed to the caller
            done.append(exc)

    worker = threading.Thread(target=get, name="status-fetch", daemon=True)
    worker.start()
    worker.join(timeout)
    if not done:
        raise DeadlineExceeded(f"{url}: no whole answer within {timeout:g}s")
    body = _answer(url, done[0], timeout)
    if len(body) > MAX_STATUS_BYTES:
        raise FltorrentError(f"{url}: the answer is over {MAX_STATUS_BYTES} bytes")
    try:
        status = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise FltorrentError(f"{url}: the answer is not JSON") from None
    checked = checked_status(status)
    if checked is None:
        raise FltorrentError(f"{url}: the answer is not a status")
    return checked


def _answer(url: str, outcome: bytes | BaseException, timeout: float) -> bytes:
    """The body, or the one-line error the failure ``outcome`` of a fetch stands for."""
    if isinstance(outcome, bytes):
        return outcome
    try:
        raise outcome
    except urllib.error.HTTPError as exc:
        raise FltorrentError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError | socket.timeout):
            raise DeadlineExceeded(f"{url}: no answer within {timeout:g}s") from None
        text = reason.strerror if isinstance(reason, OSError) and reason.strerror else reason
        raise FltorrentError(f"cannot reach {url}: {text}") from None
    except TimeoutError:
        raise DeadlineExceeded(f"{url}: no answer within {timeout:g}s") from None
    except OSError as exc:
        raise FltorrentError(f"cannot reach {url}: {exc.strerror or exc}") from None
    except http.client.HTTPException as exc:
        raise FltorrentError(f"{url}: a broken answer ({type(exc).__name__})") from None


def read_status(run_dir: Path) -> dict[str, Any]:
    """A run directory's status: ``status.json`` (written live by the run), or, without one
    (older runs, a peer's own directory), what ``metrics.jsonl`` and ``summary.json`` say.
    :class:`ConfigError` if ``run_dir`` is not a directory, :class:`FltorrentError` if it holds
    neither."""
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: no such run directory")
    path = run_dir / STATUS_FILE
    if path.is_file():
        try:
            status = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            status = None  # written atomically, so only a foreign file is broken: fall back
        checked = checked_status(status)
        if checked is not None:
            return checked
    return snapshot_of_run(read_run(run_dir))


def snapshot_of_run(run: RunData) -> dict[str, Any]:
    """The snapshot a run's records and summary describe (no topology)."""
    history = RoundHistory()
    views: dict[int, PeerView] = {}
    for r in run.records:  # sorted by (round, peer)
        peer, round_ = int(r["peer"]), int(r["round"])
        accuracy: Any = r.get("accuracy")
        completion: Any = r.get("completion")
        if not (is_number(accuracy) and is_number(completion)):
            continue  # not a record of ours
        ups, downs = r.get("bytes_up"), r.get("bytes_down")
        history.add(
            round_,
            peer,
            accuracy=float(accuracy),
            completion=float(completion),
            bytes_up=ups if type(ups) is int else None,
            bytes_down=downs if type(downs) is int else None,
        )
        views[peer] = PeerView(peer, EVALUATED, round_, float(completion), float(accuracy))
    summary = run.summary or {}
    for key, phase in (("finished_peers", "done"), ("failed_peers", "failed")):
        peers = summary.get(key)
        for p in peers if isinstance(peers, list) else []:
            if type(p) is int:
                views.setdefault(p, PeerView(p)).phase = phase
    for view in views.values():
        view.bytes_up, view.bytes_down = history.peer_bytes(view.peer)
    federate = run.config.get("federate")
    rounds = federate.get("total_round_num") if isinstance(federate, dict) else None
    if not isinstance(rounds, int):
        rounds = summary.get("rounds") if isinstance(summary.get("rounds"), int) else None
    return make_snapshot(views.values(), total_rounds=rounds, history=history, source="run_dir")
