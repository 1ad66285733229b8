"""``fltorrent report RUN_DIR``: a run's figures as PNG files and one self-contained HTML page.

Written to ``RUN_DIR/report/`` (or another folder): accuracy per round (each peer, mean, min),
loss, bytes up/down with duplicate and control bytes, completion and deadline hits, training
and exchange time, chunk availability over time (a heatmap, from the exchange logs), who was
flagged or excluded (robust runs), battery, temperature and participation (device runs), and
time to accuracy (simulated time in simulation). A figure whose data the run does not have is
left out and the page says why. Works on any run directory (:mod:`.run_dir`), an interrupted
one included. Drawn with matplotlib's object API on the Agg canvas (no display, no global
pyplot state); ``index.html`` embeds the same PNGs, so it is one file to pass around.
"""

from __future__ import annotations

import base64
import html
import statistics
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from fltorrent.telemetry.exchange_log import read_exchange_logs
from fltorrent.telemetry.run_dir import RunData, is_number, read_run

REPORT_DIR = "report"
HEATMAP_BINS = 80
MB = 1e6


@dataclass(frozen=True)
class Plot:
    """One figure of the report."""

    name: str  # the PNG's file name, without .png
    title: str
    caption: str


Records = Sequence[dict[str, Any]]


def _by_round(records: Records) -> dict[int, list[dict[str, Any]]]:
    rounds: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        rounds[int(r["round"])].append(r)
    return dict(sorted(rounds.items()))


def _values(rows: Records, key: str) -> list[float]:
    """The finite numbers under ``key`` (a run directory is a file anyone may have edited)."""
    return [float(r[key]) for r in rows if is_number(r.get(key))]


def _mean(rows: Records, key: str) -> float:
    vals = _values(rows, key)
    return statistics.fmean(vals) if vals else float("nan")


def _extreme(rounds: dict[int, list[dict[str, Any]]], key: str, pick: Any) -> list[float]:
    """Per round, ``pick`` (min or max) of ``key`` over the peers (NaN when none has it)."""
    return [pick(_values(rows, key), default=np.nan) for rows in rounds.values()]


def _mean_and_min(
    ax: Axes,
    rounds: dict[int, list[dict[str, Any]]],
    key: str,
    *,
    mean_style: tuple[str, float] = ("o-", 1.5),
) -> None:
    """The mean of ``key`` over the peers per round, and its minimum (dashed)."""
    xs = list(rounds)
    style, width = mean_style
    ax.plot(xs, [_mean(rows, key) for rows in rounds.values()], style, lw=width, label="mean")
    ax.plot(xs, _extreme(rounds, key, min), "r--", lw=1.6, label="min")


def _figure(
    rows: int = 1, height: float = 3.6, *, by_round: bool = True
) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(8.0, height * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(rows, 1, i + 1) for i in range(rows)]
    for ax in axes:
        ax.grid(True, alpha=0.3)
        if by_round:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig, axes


# --- the figures -------------------------------------------------------------------------------


def _accuracy(run: RunData) -> Figure:
    fig, (ax,) = _figure()
    for peer in run.peers:
        mine = [r for r in run.records if r["peer"] == peer and r.get("accuracy") is not None]
        ax.plot([r["round"] for r in mine], [r["accuracy"] for r in mine], lw=0.8, alpha=0.35)
    _mean_and_min(ax, _by_round(run.records), "accuracy", mean_style=("k-", 2.2))
    ax.set(xlabel="round", ylabel="test accuracy", title="Accuracy per round (thin: each peer)")
    ax.legend(loc="lower right")
    return fig


def _loss(run: RunData) -> Figure:
    fig, (ax,) = _figure()
    rounds = _by_round(run.records)
    xs = list(rounds)
    ax.plot(xs, [_mean(rows, "loss") for rows in rounds.values()], "o-", label="test loss (mean)")
    ax.plot(
        xs,
        [_mean(rows, "train_loss") for rows in rounds.values()],
        "s-",
        label="training loss (mean over peers that trained)",
    )
    ax.set(xlabel="round", ylabel="loss", title="Loss per round")
    ax.legend()
    return fig


def _bytes(run: RunData) -> Figure:
    fig, (ax,) = _figure()
    rounds = _by_round(run.records)
    xs = np.array(list(rounds))

    def total(key: str) -> list[float]:
        return [sum(_values(rows, key)) / MB for rows in rounds.values()]

    width = 0.4
    ax.bar(xs - width / 2, total("bytes_up"), width, label="up")
    ax.bar(xs + width / 2, total("bytes_down"), width, label="down")
    ax.plot(xs, total("duplicate_bytes"), "k^-", label="duplicate (down)")
    ax.plot(xs, total("control_bytes"), "mv-", label="control (protocol overhead)")
    ax.set(xlabel="round", ylabel="MB (all peers)", title="Bytes per round")
    ax.legend()
    return fig


def _completion(run: RunData) -> Figure:
    fig, (ax,) = _figure()
    rounds = _by_round(run.records)
    xs = list(rounds)
    _mean_and_min(ax, rounds, "completion")
    ax.set(xlabel="round", ylabel="completion (pieces received / expected)", ylim=(-0.02, 1.05))
    hits = ax.twinx()
    hits.bar(
        xs,
        [sum(bool(r.get("deadline_hit")) for r in rows) for rows in rounds.values()],
        alpha=0.25,
        color="tab:orange",
        label="peers at a deadline",
    )
    hits.set_ylabel("peers that hit a deadline")
    hits.set_ylim(0, max(1, len(run.peers)))
    hits.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("Completion and deadline hits per round")
    ax.legend(loc="lower left")
    hits.legend(loc="lower right")
    return fig


def _timing(run: RunData) -> Figure:
    fig, (ax,) = _figure()
    rounds = _by_round(run.records)
    xs = np.array(list(rounds))
    bottom = np.zeros(len(xs))
    for key, label in (
        ("train_s", "training"),
        ("exchange_s", "exchange"),
        ("aggregate_s", "aggregation"),
        ("eval_s", "evaluation"),
    ):
        vals = np.nan_to_num(np.array([_mean(rows, key) for rows in rounds.values()]))
        ax.bar(xs, vals, bottom=bottom, label=label)
        bottom += vals
    simulated = any(r.get("sim_time_s") is not None for r in run.records)
    unit = "simulated s" if simulated else "s"
    ax.set(xlabel="round", ylabel=f"{unit} (mean over peers)", title="Time per round")
    ax.legend()
    return fig


def availability_grid(pieces: Records, bins: int = HEATMAP_BINS) -> tuple[np.ndarray, float, int]:
    """(grid, span, rounds): ``grid[piece, b]`` is the share of (peer, author) pairs holding
    that piece index by ``(b + 1) / bins * span`` seconds after the round's first piece
    arrived, averaged over rounds (``span``: most rounds' length; later arrivals count in the
    last bin)."""
    verified = [p for p in pieces if p.get("verified")]
    if not verified:
        return np.zeros((0, bins)), 0.0, 0
    by_round: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for p in sorted(verified, key=lambda p: p["t"]):
        by_round[int(p["round"])].append(p)
    num_pieces = max(int(p["piece"]) for p in verified) + 1
    spans = sorted(rows[-1]["t"] - rows[0]["t"] for rows in by_round.values())
    span = max(spans[int(0.9 * (len(spans) - 1))], 1e-6)  # most rounds fit; stragglers clip
    grid = np.zeros((num_pieces, bins))
    for rows in by_round.values():
        start = rows[0]["t"]
        pairs = len({(int(p["peer"]), int(p["author"])) for p in rows})
        arrivals = np.zeros((num_pieces, bins))
        for p in rows:
            b = min(int((p["t"] - start) / span * bins), bins - 1)
            arrivals[int(p["piece"]), b] += 1
        grid += np.cumsum(arrivals, axis=1) / max(pairs, 1)
    return grid / len(by_round), span, len(by_round)


def _availability(pieces: Records) -> Figure | None:
    """Which pieces spread first (see :func:`availability_grid`)."""
    grid, span, rounds = availability_grid(pieces)
    if rounds == 0:
        return None
    num_pieces = grid.shape[0]
    fig, (ax,) = _figure(height=4.0, by_round=False)
    image = ax.imshow(
        grid,
        aspect="auto",
        origin="lower",
        cmap="viridis",
        vmin=0.0,
        vmax=1.0,
        extent=(0.0, span, -0.5, num_pieces - 0.5),
        interpolation="nearest",
    )
    fig.colorbar(image, ax=ax, label="share of peers x authors holding it")
    ax.grid(False)
    ax.set(
        xlabel="seconds since the round's first piece arrived",
        ylabel="piece (chunk) index",
        title=f"Chunk availability within a round (mean over {rounds} rounds)",
    )
    return fig


def _robust(run: RunData) -> Figure | None:
    rounds = _by_round(run.records)
    flagged = {r: {a for x in rows for a in x.get("flagged") or []} for r, rows in rounds.items()}
    excluded = {r: {a for x in rows for a in x.get("excluded") or []} for r, rows in rounds.items()}
    if not any(flagged.values()) and not any(excluded.values()):
        return None
    fig, (ax,) = _figure()
    for r in rounds:
        ax.scatter([r] * len(flagged[r]), sorted(flagged[r]), marker="x", color="tab:orange")
        ax.scatter(
            [r] * len(excluded[r]),
            sorted(excluded[r]),
            marker="o",
            facecolors="none",
            edgecolors="tab:red",
            s=80,
        )
    ax.scatter([], [], marker="x", color="tab:orange", label="flagged by some peer")
    ax.scatter([], [], marker="o", facecolors="none", edgecolors="tab:red", label="excluded")
    ax.set(xlabel="round", ylabel="author (peer id)", title="Who was flagged or excluded")
    ax.legend()
    return fig


def _devices(run: RunData) -> Figure | None:
    has_battery = any(r.get("battery_level") is not None for r in run.records)
    has_heat = any(r.get("temperature_c") is not None for r in run.records)
    if not has_battery and not has_heat and all(r.get("trained", True) for r in run.records):
        return None
    fig, axes = _figure(rows=3, height=2.6)
    rounds = _by_round(run.records)
    xs = list(rounds)
    _mean_and_min(axes[0], rounds, "battery_level", mean_style=("-", 1.5))
    axes[0].set(ylabel="battery level", title="Devices: battery, temperature, participation")
    axes[0].legend()
    axes[1].plot(
        xs,
        _extreme(rounds, "temperature_c", max),
        "o-",
        color="tab:red",
    )
    axes[1].set(ylabel="max temperature (°C)")
    axes[2].bar(
        xs,
        [sum(bool(r.get("trained", True)) for r in rows) / len(rows) for rows in rounds.values()],
    )
    axes[2].set(xlabel="round", ylabel="share that trained", ylim=(0, 1.05))
    return fig


def _time_to_accuracy(run: RunData) -> Figure:
    fig, (ax,) = _figure(by_round=False)
    rounds = _by_round(run.records)
    simulated = any(r.get("sim_time_s") is not None for r in run.records)
    key = "sim_time_s" if simulated else "wall_s"
    xs = _extreme(rounds, key, max)
    ax.plot(xs, [_mean(rows, "accuracy") for rows in rounds.values()], "o-")
    what = "simulated seconds" if simulated else "seconds (the slowest peer's)"
    ax.set(xlabel=what, ylabel="mean test accuracy", title="Time to accuracy")
    return fig


Maker = Callable[[], Figure | None]


def _plots(run: RunData, pieces: Records) -> list[tuple[Plot, Maker, str]]:
    """(plot, how to draw it, why it may be missing)."""
    return [
        (
            Plot("accuracy", "Accuracy", "Test accuracy of each peer's model per round."),
            lambda: _accuracy(run),
            "",
        ),
        (
            Plot("loss", "Loss", "Mean test loss and mean local training loss."),
            lambda: _loss(run),
            "",
        ),
        (
            Plot("bytes", "Bytes", "All peers' traffic per round; duplicate and control bytes."),
            lambda: _bytes(run),
            "",
        ),
        (
            Plot(
                "completion",
                "Completion",
                "Share of expected pieces that arrived; peers that went on at a deadline.",
            ),
            lambda: _completion(run),
            "",
        ),
        (
            Plot(
                "timing",
                "Time per round",
                "Mean time spent training, exchanging, aggregating and evaluating.",
            ),
            lambda: _timing(run),
            "",
        ),
        (
            Plot(
                "availability",
                "Chunk availability",
                "How each piece index spreads over the "
                "peers in each round (from bittorrent_logs/).",
            ),
            lambda: _availability(pieces),
            "no exchange logs (output.exchange_logs was off)",
        ),
        (
            Plot(
                "robust",
                "Flagged and excluded",
                "Authors the outlier filter flagged and authors left out of aggregates.",
            ),
            lambda: _robust(run),
            "nobody was flagged or excluded",
        ),
        (
            Plot(
                "devices", "Devices", "Battery, temperature and participation of device profiles."
            ),
            lambda: _devices(run),
            "no device profiles in this run",
        ),
        (
            Plot("time_to_accuracy", "Time to accuracy", "Mean accuracy against time."),
            lambda: _time_to_accuracy(run),
            "",
        ),
    ]


# --- the page ----------------------------------------------------------------------------------


def _facts(run: RunData) -> list[tuple[str, str]]:
    s = run.summary
    finals = [r for r in run.records if r["round"] == max(run.rounds)]
    accs = _values(finals, "accuracy")
    if s is None:
        status = "interrupted (no summary.json)"
    elif s.get("interrupted"):
        status = f"interrupted ({s['interrupted']})"
    else:
        status = "finished"
    total = s.get("rounds") if s is not None else None
    facts = [
        ("status", status),
        ("peers", str(len(run.peers))),
        ("rounds", f"{max(run.rounds)}" + (f" of {total}" if total is not None else "")),
        (
            f"accuracy in round {max(run.rounds)}",
            f"mean {statistics.fmean(accs):.4f}, min {min(accs):.4f}" if accs else "-",
        ),
        ("bytes up (all peers)", f"{sum(_values(run.records, 'bytes_up')) / MB:.1f} MB"),
    ]
    if s is not None:
        for key, label in (("wall_time_s", "wall time"), ("sim_time_s", "simulated time")):
            if isinstance(s.get(key), int | float):
                facts.append((label, f"{s[key]:.1f} s"))
        if s.get("failed_peers"):
            facts.append(("peers that did not finish", str(s["failed_peers"])))
        topo = s.get("topology_construction_s")
        if isinstance(topo, dict) and isinstance(topo.get("max"), int | float):
            facts.append(("topology construction (max)", f"{topo['max']:.3f} s"))
    return facts


def _page(run: RunData, drawn: list[tuple[Plot, bytes]], missing: list[tuple[Plot, str]]) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in _facts(run)
    )
    figures = "".join(
        f'<figure id="{p.name}"><h2>{html.escape(p.title)}</h2>'
        f'<img alt="{html.escape(p.title)}" src="data:image/png;base64,'
        f'{base64.b64encode(png).decode()}"><figcaption>{html.escape(p.caption)}</figcaption>'
        "</figure>"
        for p, png in drawn
    )
    absent = "".join(f"<li>{html.escape(p.title)}: {html.escape(why)}</li>" for p, why in missing)
    return (
        "<!doctype html><html lang=en><meta charset=utf-8>"
        f"<title>fltorrent run {html.escape(run.path.name)}</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse}th,td{text-align:left;padding:.2em .8em;"
        "border-bottom:1px solid #ddd}img{max-width:100%}figcaption{color:#555}</style>"
        f"<h1>fltorrent run {html.escape(run.path.name)}</h1><table>{rows}</table>"
        f"{figures}" + (f"<h2>Not drawn</h2><ul>{absent}</ul>" if absent else "") + "</html>\n"
    )


def write_report(run_dir: Path, out_dir: Path | None = None) -> list[Path]:
    """Draw ``run_dir``'s figures into ``out_dir`` (default ``run_dir/report``); returns the
    files written (the PNGs, then ``index.html``)."""
    run = read_run(run_dir)
    _, pieces = read_exchange_logs(run_dir)
    out = out_dir if out_dir is not None else run_dir / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    drawn: list[tuple[Plot, bytes]] = []
    missing: list[tuple[Plot, str]] = []
    for plot, make, why in _plots(run, pieces):
        fig = make()
        if fig is None:
            missing.append((plot, why))
            continue
        path = out / f"{plot.name}.png"
        fig.savefig(path, dpi=100)
        written.append(path)
        drawn.append((plot, path.read_bytes()))
    index = out / "index.html"
    index.write_text(_page(run, drawn, missing), encoding="utf-8")
    return [*written, index]
