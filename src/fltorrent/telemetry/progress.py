"""Progress display: one line per round, under a live rich bar on a terminal."""

from __future__ import annotations

import statistics
import sys
import time
from collections import defaultdict
from types import TracebackType
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)


class RoundProgress:
    """Reports a round once every live peer has finished it."""

    def __init__(
        self,
        *,
        peers: int,
        rounds: int,
        mode: str = "auto",
        stream: TextIO | None = None,
        done_rounds: int = 0,
    ) -> None:
        """``done_rounds``: rounds a resumed run already has (reporting starts after them)."""
        self.peers = peers
        self.rounds = rounds
        self.stream = stream or sys.stdout
        if mode == "auto":
            mode = "rich" if self.stream.isatty() else "plain"
        self.mode = mode
        self.failed: set[int] = set()
        self._acc: dict[int, dict[int, float]] = defaultdict(dict)
        self._completion: dict[int, list[float]] = defaultdict(list)
        self._reported = done_rounds
        self._start = time.perf_counter()
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> RoundProgress:
        if self.mode == "rich":
            self._progress = Progress(
                TextColumn("[bold]rounds"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.description}"),
                TimeElapsedColumn(),
                console=Console(file=self.stream),
            )
            self._progress.__enter__()
            self._task = self._progress.add_task("", total=self.rounds, completed=self._reported)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.__exit__(exc_type, exc, tb)

    def peer_round(self, peer: int, round_: int, accuracy: float, completion: float) -> None:
        """A peer finished a round."""
        self._acc[round_][peer] = accuracy
        self._completion[round_].append(completion)
        self._flush()

    def peer_failed(self, peer: int) -> None:
        """A peer left; rounds no longer wait for it."""
        self.failed.add(peer)
        self._flush()

    def _flush(self) -> None:
        live = self.peers - len(self.failed)
        while self._reported < self.rounds:
            r = self._reported + 1
            accs = self._acc.get(r, {})
            if len(accs) < live or live <= 0:
                return
            self._reported = r
            vals = list(accs.values())
            line = (
                f"round {r}/{self.rounds}: accuracy mean {statistics.fmean(vals):.3f} "
                f"min {min(vals):.3f}, completion {statistics.fmean(self._completion[r]):.2f}, "
                f"{len(vals)} peers, {time.perf_counter() - self._start:.1f}s"
            )
            if self._progress is not None and self._task is not None:
                # The line goes above the live bar, so every round stays in the scrollback.
                self._progress.console.print(line, highlight=False)
                self._progress.update(self._task, advance=1, description=line.split(": ", 1)[1])
            elif self.mode == "plain":
                print(line, file=self.stream, flush=True)
