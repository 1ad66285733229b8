"""Config sections for Byzantine robustness: ``robust`` (rule, detection, trust) and ``attack``.

Part of the configuration tree of :mod:`fltorrent.config` (kept apart for size); the same
rules hold: every key has a default, and a bad value is refused with its key path before
anything starts, including a rule whose preconditions the federation cannot meet.
"""

from __future__ import annotations

import math
import random
from typing import Any, Literal

from pydantic import Field

from fltorrent.aggregate import check_preaggregator, check_rule
from fltorrent.attacks.behaviour import AttackKind
from fltorrent.config_types import Fraction, ImportString, Positive, Section
from fltorrent.errors import AggregationError, ConfigError

RuleName = Literal[
    "mean",
    "median",
    "trimmed_mean",
    "krum",
    "multi_krum",
    "geometric_median",
    "centered_clip",
    "bulyan",
]
AttackName = Literal["none", AttackKind]


class DetectionConfig(Section):
    """IQR outlier filter over per-chunk update statistics (norm; cosine and sign agreement with
    the median), on each author's moving average of its deltas."""

    enabled: bool = False
    iqr_k: Positive = Field(1.5, description="Tukey fence: k x IQR beyond the quartiles")
    min_share: Fraction = Field(
        0.5, description="an author is flagged when this share of its judged chunks is"
    )
    momentum: float = Field(
        0.9,
        ge=0.0,
        lt=1.0,
        description="judge each author's moving average of its deltas (0: each round alone)",
    )
    burst_k: float = Field(
        3.0,
        ge=0.0,
        description="with momentum: also flag a round's update whose norm is beyond Q3 + "
        "burst_k x IQR (0: off)",
    )


class TrustConfig(Section):
    """Per-author trust over rounds: multiplied by decay when flagged, + recovery when clean."""

    enabled: bool = False
    decay: float = Field(0.5, ge=0.0, lt=1.0)
    recovery: float = Field(0.1, gt=0.0, le=1.0)
    threshold: float = Field(0.5, gt=0.0, le=1.0, description="excluded below this score")


class RobustConfig(Section):
    """How each peer aggregates each chunk over the authors that delivered it."""

    rule: RuleName = Field(
        "mean", description="'mean' is sample-weighted FedAvg; the others ignore sample counts"
    )
    rule_factory: ImportString | None = Field(
        None,
        description="the user's own rule: an import string naming a function of the (n, d) "
        "array of the authors' deltas for one chunk that returns the d-vector delta (replaces "
        "rule; detection and trust still apply)",
    )
    f: int = Field(0, ge=0, description="Byzantine authors the rule must tolerate")
    m: int | None = Field(None, ge=1, description="multi_krum: updates averaged (n - f)")
    nu: Positive = Field(0.1, description="geometric_median: smoothing")
    max_iter: int = Field(100, ge=1, description="geometric_median: Weiszfeld iterations")
    tol: float = Field(1e-7, ge=0.0, description="geometric_median: stop below this step")
    tau: Positive = Field(1.0, description="centered_clip: clipping radius (update units)")
    iters: int = Field(3, ge=1, description="centered_clip: iterations")
    preagg: Literal["none", "bucketing", "nnm", "clip"] = "none"
    bucket_size: int = Field(2, ge=1, description="bucketing: updates averaged per bucket")
    clip_norm: Positive = Field(1.0, description="clip: largest update norm per chunk")
    detection: DetectionConfig = DetectionConfig()
    trust: TrustConfig = TrustConfig()

    @property
    def plain(self) -> bool:
        """Whether this is plain partial FedAvg (no rule, filter or trust)."""
        return (
            self.rule == "mean"
            and self.preagg == "none"
            and not self.detection.enabled
            and not self.trust.enabled
        )

    def rule_options(self) -> dict[str, Any]:
        """Keyword arguments of the configured rule (besides the updates)."""
        options: dict[str, dict[str, Any]] = {
            "trimmed_mean": {"f": self.f},
            "krum": {"f": self.f},
            "multi_krum": {"f": self.f, "m": self.m},
            "bulyan": {"f": self.f},
            "geometric_median": {"nu": self.nu, "max_iter": self.max_iter, "tol": self.tol},
            "centered_clip": {"tau": self.tau, "iters": self.iters},
        }
        return options.get(self.rule, {})

    def check(self, peers: int) -> None:
        """Refuse a rule that cannot run when every one of ``peers`` delivers a chunk."""
        if self.trust.enabled and not self.detection.enabled:
            raise ConfigError("trust scores need robust.detection.enabled", path="robust.trust")
        try:
            n = peers
            if self.preagg != "none":
                options: dict[str, dict[str, Any]] = {
                    "bucketing": {"s": self.bucket_size},
                    "clip": {"c": self.clip_norm},
                }
                n = check_preaggregator(self.preagg, peers, self.f, **options.get(self.preagg, {}))
            opts = {k: v for k, v in self.rule_options().items() if k != "f" and v is not None}
            check_rule(self.rule, n, self.f, **opts)
        except AggregationError as exc:
            raise ConfigError(f"{exc} (with {peers} peers)", path="robust.rule") from None
        if self.f and 2 * self.f >= peers:
            raise ConfigError(
                f"f={self.f} of {peers} peers: no rule tolerates half or more", path="robust.f"
            )


class AttackConfig(Section):
    """Byzantine peers and what they do (for experiments: the attackers are known)."""

    type: AttackName = "none"
    peers: list[int] = Field(default_factory=list, description="attacker ids (else: share)")
    share: Fraction = Field(0.0, description="share of peers attacking, drawn with the seed")
    factor: float = Field(-10.0, allow_inf_nan=False, description="scale: update multiplier")
    sigma: Positive = Field(1.0, description="noise: std of the Gaussian added per element")
    alie_tau: float | None = Field(
        None, allow_inf_nan=False, description="alie: std multiplier (None: the paper's z_max)"
    )
    ipm_tau: Positive = Field(2.0, description="ipm: the attack sends -tau x the honest mean")
    free_ride: Literal["zero", "stale"] = Field(
        "zero", description="free_ride: send no change, or the previous round's model"
    )

    def attackers(self, peers: int, seed: int) -> list[int]:
        """The attacking peer ids (1-based): ``peers`` if given, else a seeded draw."""
        if self.type == "none":
            return []
        if self.peers:
            return sorted(set(self.peers))
        k = math.floor(self.share * peers + 0.5)
        return sorted(random.Random(seed * 7919 + 17).sample(range(1, peers + 1), k))

    def check(self, peers: int) -> None:
        """Refuse attacker ids outside the federation."""
        bad = [p for p in self.peers if not 1 <= p <= peers]
        if bad:
            raise ConfigError(f"peer ids {bad} outside 1..{peers}", path="attack.peers")
        if self.type != "none" and not self.peers and self.share == 0:
            raise ConfigError("an attack needs attack.peers or attack.share", path="attack.type")
