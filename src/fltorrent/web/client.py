"""Reading a status back: from a run directory (its live ``status.json``, or what its metrics
and summary say) or from a status endpoint over HTTP, with a deadline."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from fltorrent.errors import ConfigError, DeadlineExceeded, FltorrentError
from fltorrent.telemetry.run_dir import RunData, read_run
from fltorrent.telemetry.snapshot import (
    EVALUATED,
    STATUS_FILE,
    PeerView,
    RoundHistory,
    make_snapshot,
)


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
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            body = response.read()
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
    try:
        status = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise FltorrentError(f"{url}: the answer is not JSON") from None
    if not isinstance(status, dict) or "peers" not in status:
        raise FltorrentError(f"{url}: the answer is not a status")
    return status


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
        except (json.JSONDecodeError, UnicodeDecodeError):
            status = None  # written atomically, so only a foreign file is broken: fall back
        if isinstance(status, dict) and "peers" in status:
            return status
    return snapshot_of_run(read_run(run_dir))


def snapshot_of_run(run: RunData) -> dict[str, Any]:
    """The snapshot a run's records and summary describe (no topology)."""
    history = RoundHistory()
    views: dict[int, PeerView] = {}
    for r in run.records:  # sorted by (round, peer)
        peer, round_ = int(r["peer"]), int(r["round"])
        history.add(
            round_,
            peer,
            accuracy=float(r["accuracy"]),
            completion=float(r["completion"]),
            bytes_up=r.get("bytes_up"),
            bytes_down=r.get("bytes_down"),
        )
        views[peer] = PeerView(peer, EVALUATED, round_, float(r["completion"]), r["accuracy"])
    summary = run.summary or {}
    for p in summary.get("finished_peers", []):
        views.setdefault(p, PeerView(p)).phase = "done"
    for p in summary.get("failed_peers", []):
        views.setdefault(p, PeerView(p)).phase = "failed"
    for view in views.values():
        view.bytes_up, view.bytes_down = history.peer_bytes(view.peer)
    federate = run.config.get("federate")
    rounds = federate.get("total_round_num") if isinstance(federate, dict) else None
    if not isinstance(rounds, int):
        rounds = summary.get("rounds") if isinstance(summary.get("rounds"), int) else None
    return make_snapshot(views.values(), total_rounds=rounds, history=history, source="run_dir")
