"""Config section ``output``: what a run writes where (its directory, model, progress,
logging, exchange logs, checkpoints, sinks). Part of :mod:`fltorrent.config`, on the shared
base of ``config_types``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from fltorrent.config_types import Fraction, Section

AUTO_EXCHANGE_LOG_PEERS = 32


class OutputConfig(Section):
    """What is written where."""

    dir: Path | None = None
    save_model: bool = True
    progress: Literal["auto", "rich", "plain", "none"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "warning"
    sinks: list[Literal["tensorboard", "mlflow"]] = Field(
        default_factory=list,
        description="where round records go besides metrics.jsonl: tensorboard "
        "(RUN_DIR/tensorboard), mlflow (RUN_DIR/mlruns); each needs its package",
    )
    checkpoint_every: int = Field(
        1,
        ge=0,
        description="each peer writes a checkpoint (checkpoints/peer-N/, safetensors) after "
        "every this many rounds, for fltorrent run --resume (0: none)",
    )
    exchange_logs: bool | Literal["auto"] = Field(
        "auto",
        description="write topology_logs/ and bittorrent_logs/ (every connection and every "
        "piece); auto: on up to 32 peers (a 100-peer run logs about a million pieces)",
    )
    accuracy_targets: list[Fraction] = Field(
        default_factory=lambda: [0.5, 0.6, 0.7, 0.8, 0.9],
        description="summary.json reports when the mean accuracy first reached each",
    )

    @field_validator("dir", mode="before")
    @classmethod
    def _not_empty(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            raise ValueError("an empty path; leave the key out for runs/<time>")
        return value

    def logs_exchange(self, peers: int) -> bool:
        """Whether a run of ``peers`` peers writes exchange logs."""
        if self.exchange_logs == "auto":
            return peers <= AUTO_EXCHANGE_LOG_PEERS
        return self.exchange_logs
