"""Config section ``chunk``: how an update is cut into pieces and how pieces are scored.

Part of the configuration tree of :mod:`fltorrent.config` (kept apart for size, as
``config_plans`` and ``config_robust``); the same rules hold: every key has a default, and a bad
value is refused with its key path before anything starts.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from fltorrent.config_types import PositiveInt, Section


class MagnitudeConfig(Section):
    history_window: PositiveInt = 10
    use_variance: bool = True


class L2NormConfig(Section):
    depth_boost: float = Field(0.3, ge=0.0)
    normalize_by_size: bool = True


class SnipConfig(Section):
    batch_size: PositiveInt = 128
    use_cached: bool = Field(
        False,
        description="score with the gradients of the last local training step instead of a "
        "fresh batch: no extra forward and backward pass, at the price of scoring one "
        "training batch (a fresh batch when training left no gradients)",
    )


class FisherConfig(Section):
    num_samples: PositiveInt = 100
    damping: float = Field(0.001, ge=0.0)


class ImportanceConfig(Section):
    magnitude: MagnitudeConfig = MagnitudeConfig()
    l2_norm: L2NormConfig = L2NormConfig()
    snip: SnipConfig = SnipConfig()
    fisher: FisherConfig = FisherConfig()


class ChunkConfig(Section):
    """How an update is cut into pieces and how pieces are scored."""

    num_chunks: PositiveInt | None = 20
    chunk_bytes: PositiveInt | None = None
    importance_method: Literal["magnitude", "l2_norm", "snip", "fisher", "random", "adaptive"] = (
        "l2_norm"
    )
    importance_config: ImportanceConfig = ImportanceConfig()
    layout: Literal["auto", "tensor"] = Field(
        "auto",
        description="'auto': architecture-aware (a conv filter with its batch norm, an "
        "attention head with its Q/K/V stay in one chunk); 'tensor': split tensors by rows",
    )

    @model_validator(mode="after")
    def _one_size(self) -> ChunkConfig:
        explicit = self.model_fields_set
        both = self.num_chunks is not None and self.chunk_bytes is not None
        if both and {"num_chunks", "chunk_bytes"} <= explicit:
            raise ValueError("set num_chunks or chunk_bytes, not both")
        if self.num_chunks is None and self.chunk_bytes is None:
            raise ValueError("set num_chunks or chunk_bytes")
        return self

    def plan_size(self) -> dict[str, int]:
        """Keyword arguments for the chunk plan: ``chunk_bytes`` when set wins."""
        if self.chunk_bytes is not None:
            return {"chunk_bytes": self.chunk_bytes}
        assert self.num_chunks is not None
        return {"num_chunks": self.num_chunks}
