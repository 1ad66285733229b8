"""SCAFFOLD's control variates (Karimireddy et al., 2020), estimated without a server.

SCAFFOLD corrects every local step by ``c - c_i``: ``c`` estimates the federation's gradient,
``c_i`` the client's own. With option II a client's new variate is
``c_i <- c_i - c + (x - y_i) / (K_i lr)`` (``x`` the round's start, ``y_i`` its trained model,
``K_i`` its steps), and the server's is the average of the clients' ``(x - y_j) / (K_j lr)``.

Without a server there is no one to average the variates, and sending them doubles every
round's bytes. But each peer holds the round's aggregate ``x+ = sum_j w_j y_j``, and
``(x - x+) / (K lr)`` with ``K = sum_j w_j K_j`` is ``sum_j (w_j K_j / K) (x - y_j) / (K_j lr)``:
a weighted average of the same per-client terms, exactly SCAFFOLD's ``c`` when the clients'
sample and step counts are equal, and a differently weighted average of the clients' gradients
otherwise. So every peer computes ``c`` from its own aggregate, with nothing more on the wire.

With SGD momentum ``beta`` a run of steps moves about ``lr / (1 - beta)`` per unit gradient, so
``lr`` here is that effective step; the correction itself passes through the momentum like the
gradient it corrects.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from fltorrent.errors import AggregationError

Vector = npt.NDArray[np.float64]


def drift_gradient(
    start: Sequence[npt.ArrayLike],
    end: Sequence[npt.ArrayLike],
    *,
    steps: float,
    lr: float,
    mask: Sequence[npt.NDArray[np.bool_]],
) -> list[Vector]:
    """``(start - end) / (steps * lr)`` per chunk: the mean gradient of ``steps`` SGD steps of
    size ``lr`` that went from ``start`` to ``end``; 0 outside ``mask`` (step counters)."""
    if not steps > 0 or not lr > 0:
        raise AggregationError(f"a drift needs steps > 0 and lr > 0, got {steps}, {lr}")
    if not len(start) == len(end) == len(mask):
        raise AggregationError("start, end and mask must have as many chunks")
    out = []
    for s, e, m in zip(start, end, mask, strict=True):
        d = (np.asarray(s, dtype=np.float64) - np.asarray(e, dtype=np.float64)) / (steps * lr)
        out.append(np.where(m, d, 0.0))
    return out


def local_control(
    own: Sequence[Vector] | None, federation: Sequence[Vector] | None, drift: Sequence[Vector]
) -> list[Vector]:
    """Option II's client variate: ``c_i - c + drift`` (``None``: a variate still at 0)."""
    out = []
    for k, d in enumerate(drift):
        v = np.array(d, dtype=np.float64)
        if own is not None:
            v += own[k]
        if federation is not None:
            v -= federation[k]
        out.append(v)
    return out


def mean_steps(samples: Sequence[float], *, epochs: int, batch_size: int) -> float:
    """``K = sum_j w_j K_j`` for authors of ``samples`` (weights ``w_j`` proportional to
    them), ``K_j = epochs * ceil(n_j / batch_size)`` (the built-in step's count)."""
    counts = np.asarray(samples, dtype=np.float64)
    if counts.size == 0 or not np.all(counts > 0):
        raise AggregationError("mean_steps needs positive sample counts")
    steps = epochs * np.ceil(counts / batch_size)
    return float((counts * steps).sum() / counts.sum())
