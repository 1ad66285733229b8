"""Where a peer trains: the CPU or a CUDA GPU, and sharing one GPU among the peers of a process.

``train.device`` is ``auto`` (a GPU when torch sees one, else the CPU), ``cpu``, ``cuda`` or
``cuda:N``. A peer's model lives on the CPU; it goes to the GPU for training and evaluation and
comes back after, so everything the exchange reads and writes stays in CPU memory.

Peers of one process that train on the same GPU hold a share of it while they do
(:class:`GpuShares`): the device profile's ``gpu_share`` (1 without profiles), at most 1 in all
at a time, so two peers of share 0.5 train together and a peer of share 1 alone. Peers in other
processes are not counted (their memory and time slices are the driver's business).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from fltorrent.config_types import DEVICE_PATTERN
from fltorrent.errors import LearnError

_DEVICE = re.compile(DEVICE_PATTERN)


def select_device(spec: str, *, key: str = "train.device") -> torch.device:
    """The device ``spec`` (the setting ``key``) names on this host; :class:`LearnError` when
    it is not here."""
    if not _DEVICE.match(spec):
        raise LearnError(f"{key} must be auto, cpu, cuda or cuda:N, not {spec!r}")
    available = torch.cuda.is_available()
    if spec == "auto":
        return torch.device("cuda" if available else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if not available:
        raise LearnError(
            f"{key} is {spec!r}, but torch sees no CUDA device on this host (a CPU-only "
            "torch build, or no driver); use auto or cpu"
        )
    device = torch.device(spec)
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise LearnError(f"{key} is {spec!r}, but this host has {count} CUDA device(s)")
    return device


class GpuShares:
    """Shares of each GPU held by the peers of this process (at most 1 per GPU at a time)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._used: dict[str, float] = {}

    def used(self, device: torch.device) -> float:
        """The share of ``device`` held now."""
        with self._cond:
            return self._used.get(str(device), 0.0)

    @contextmanager
    def hold(self, device: torch.device, share: float, *, timeout: float) -> Iterator[None]:
        """Hold ``share`` (in (0, 1]; larger is taken as 1) of ``device`` inside; waits until it
        is free, at most ``timeout`` seconds (then :class:`LearnError`)."""
        if not share > 0:
            raise LearnError(f"a GPU share must be positive, got {share}")
        share = min(share, 1.0)
        key = str(device)
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._used.get(key, 0.0) + share > 1.0 + 1e-9:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise LearnError(
                        f"waited {timeout:.0f} s for a {share:g} share of {key} "
                        f"({self._used.get(key, 0.0):g} held by other peers)"
                    )
                self._cond.wait(left)
            self._used[key] = self._used.get(key, 0.0) + share
        try:
            yield
        finally:
            with self._cond:
                self._used[key] -= share
                self._cond.notify_all()


GPU_SHARES = GpuShares()
"""The shares of this process's peers."""
