"""A Byzantine peer's behaviour: what it publishes instead of its honest update.

The attacker runs the ordinary protocol (it trains, exchanges and aggregates like anyone: its
own model stays the honest aggregate, so its attacks do not compound on itself) and lies in
what it publishes. Updates are whole-model deltas against its round-start model, flattened
over the chunk plan.

* ``sign_flip``: ``-delta``; ``scale``: ``factor * delta``; ``noise``: ``delta + N(0, sigma^2)``.
* ``alie``, ``ipm``, ``min_max`` need the honest updates. An attacker sees what every peer sees:
  the updates it received. It uses the previous round's complete updates from authors outside
  its coalition (colluding attackers know each other, as in the papers), as deltas against
  that round's start; in the first round, with nothing seen yet, it publishes honestly.
* ``free_ride``: does not train; publishes no change (``zero``) or its previous round's model
  (``stale``).
* ``label_flip`` changes the attacker's training labels (``y -> classes - 1 - y``, see
  ``runtime/build.py``); what it publishes is its honest training on those labels.
* ``chunk_poison``: publishes honestly but serves every block corrupted
  (:class:`~fltorrent.swarm.adversary.AdversarialSwarm`).
* ``equivocate``: publishes its honest update to its even-numbered neighbours and
  :meth:`Adversary.twin` (the update reversed) to the odd-numbered ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np

from fltorrent.attacks.vectors import alie, gaussian_noise, ipm, min_max, scale, sign_flip

Vector = np.ndarray
AttackKind = Literal[
    "sign_flip",
    "noise",
    "scale",
    "label_flip",
    "alie",
    "ipm",
    "min_max",
    "free_ride",
    "chunk_poison",
    "equivocate",
]
ATTACKS: tuple[str, ...] = get_args(AttackKind)
SWARM_ATTACKS = ("chunk_poison", "equivocate")  # lies told by the swarm (swarm/adversary.py)
SEEING = ("alie", "ipm", "min_max")  # attacks that need the honest updates


@dataclass
class Adversary:
    """One attacking peer (see the module docstring)."""

    kind: str
    coalition: frozenset[int] = frozenset()  # the attackers, this one included
    peers: int = 0  # federation size (ALIE's z_max)
    factor: float = -10.0
    sigma: float = 1.0
    alie_tau: float | None = None
    ipm_tau: float = 2.0
    free_ride: str = "zero"
    seed: int = 0
    _seen: np.ndarray | None = None  # last round's honest deltas, one row per author
    _last: list[Vector] | None = None  # what it published last round
    _rng: np.random.Generator = field(init=False)

    def __post_init__(self) -> None:
        if self.kind not in ATTACKS:
            raise ValueError(f"unknown attack {self.kind!r}; one of {ATTACKS}")
        self._rng = np.random.default_rng(self.seed)

    @property
    def trains(self) -> bool:
        """Whether the attacker trains (a free rider does not)."""
        return self.kind != "free_ride"

    @property
    def watches(self) -> bool:
        """Whether it needs the updates it receives (:meth:`observe`)."""
        return self.kind in SEEING

    def observe(
        self, base: Sequence[Vector], others: Mapping[int, Mapping[int, Vector]], chunks: int
    ) -> None:
        """Remember this round's complete honest updates (author -> chunk -> vector)."""
        rows = [
            np.concatenate([np.asarray(vectors[c]) - base[c] for c in range(chunks)])
            for a, vectors in sorted(others.items())
            if a not in self.coalition and len(vectors) == chunks
        ]
        self._seen = np.stack(rows) if rows else None

    def twin(self, before: Sequence[Vector], after: Sequence[Vector]) -> list[Vector]:
        """The second, different update an equivocating attacker shows some neighbours."""
        return [2 * np.asarray(b, dtype=np.float64) - a for b, a in zip(before, after, strict=True)]

    def craft(self, before: Sequence[Vector], after: Sequence[Vector]) -> list[Vector]:
        """The chunk vectors to publish instead of the honest ``after``."""
        sizes = [len(v) for v in before]
        start = np.concatenate([np.asarray(v, dtype=np.float64) for v in before])
        delta = np.concatenate([np.asarray(v, dtype=np.float64) for v in after]) - start
        seen = self._seen
        match self.kind:
            case "sign_flip":
                delta = sign_flip(delta)
            case "scale":
                delta = scale(delta, self.factor)
            case "noise":
                delta = gaussian_noise(delta, self.sigma, self._rng)
            case "alie" if seen is not None and len(seen) >= 2:
                f = len(self.coalition)
                delta = alie(seen, self.alie_tau, n=self.peers, f=f)
            case "ipm" if seen is not None:
                delta = ipm(seen, self.ipm_tau)
            case "min_max" if seen is not None and len(seen) >= 2:
                delta = min_max(seen)
            case "free_ride":
                if self.free_ride == "stale" and self._last is not None:
                    delta = np.concatenate(self._last) - start
                else:
                    delta = np.zeros_like(delta)
        out = np.split(start + delta, np.cumsum(sizes)[:-1])
        self._last = [v.copy() for v in out]
        return out
