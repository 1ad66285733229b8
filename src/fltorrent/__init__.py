"""fltorrent: decentralized federated learning over a BitTorrent-style swarm.

``Federation(config).run()`` runs a whole federation; see the README.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Config", "Federation", "FederationResult", "__version__", "load_config"]

if TYPE_CHECKING:
    from fltorrent.config import Config, load_config
    from fltorrent.runtime import Federation, FederationResult


def __getattr__(name: str) -> Any:
    # Lazy: importing fltorrent.wire or fltorrent.swarm must not import torch.
    if name in ("Federation", "FederationResult"):
        from fltorrent import runtime

        return getattr(runtime, name)
    if name in ("Config", "load_config"):
        from fltorrent import config

        return getattr(config, name)
    raise AttributeError(f"module 'fltorrent' has no attribute {name!r}")
