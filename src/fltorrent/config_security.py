"""Config section ``security``: transport encryption, the federation's credentials, limits.

Part of the configuration tree of :mod:`fltorrent.config` (kept apart for size, as
``config_robust``); the same rules hold: every key has a default, and a bad value is refused
with its key path before anything starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from fltorrent.config_types import PositiveInt, Seconds, Section


class SecurityConfig(Section):
    """Identities, tokens, TLS and the tracker's join limits (``fltorrent.security``)."""

    transport: Literal["tls", "plain"] = Field(
        "tls",
        description="'tls': every connection (peer-peer, peer-tracker) is TLS 1.3 with both "
        "sides' tokens as certificates; 'plain': unencrypted, for tests and benchmarks on a "
        "trusted network (tokens and manifest signatures are still checked). Simulation "
        "skips the TLS record layer either way",
    )
    federation_dir: Path | None = Field(
        None,
        description="a federation made with 'fltorrent keys create' (its admin.key issues "
        "this run's tokens, its revoked.json is enforced); null: a fresh federation for the "
        "run (kept in memory; written to <output>/keys when peers run as processes)",
    )
    token_days: float = Field(
        30.0, gt=0, le=3650, description="validity of the tokens a run issues itself (days)"
    )
    handshake_timeout: Seconds = Field(
        10.0, description="a TLS or wire handshake that takes longer is dropped"
    )
    max_refusals_per_address: PositiveInt = Field(
        64, description="tracker: refused registrations from one address before it is cut off"
    )
    audit: bool = Field(True, description="write security.jsonl in the run's output")
