"""Swarm layer: blobs of bytes exchanged in pieces among neighbours. Never imports torch."""

from fltorrent.swarm.counters import Counters
from fltorrent.swarm.guard import SwarmSecurity
from fltorrent.swarm.manifest import Manifest, sha256
from fltorrent.swarm.manifests import ManifestCheck
from fltorrent.swarm.options import SwarmOptions
from fltorrent.swarm.store import Blob, BlockResult, Buffer
from fltorrent.swarm.swarm import Audience, PieceFilter, RelayFilter, ServeHook, Swarm, WantFn
from fltorrent.wire import UPDATE, Topic, TopicKind

__all__ = [
    "UPDATE",
    "Audience",
    "Blob",
    "BlockResult",
    "Buffer",
    "Counters",
    "Manifest",
    "ManifestCheck",
    "PieceFilter",
    "RelayFilter",
    "ServeHook",
    "Swarm",
    "SwarmOptions",
    "SwarmSecurity",
    "Topic",
    "TopicKind",
    "WantFn",
    "sha256",
]
