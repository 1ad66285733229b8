"""Launchers: in-process (one loop, loopback TCP) and one process per peer."""

from fltorrent.runtime.federation import Federation, FederationResult

__all__ = ["Federation", "FederationResult"]
