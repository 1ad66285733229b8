"""The one exception tree of fltorrent.

Every error this package raises on purpose derives from :class:`FltorrentError`, so a caller can
catch everything of ours with one clause and still tell the kinds apart::

    FltorrentError
    ├── ConfigError                 the configuration (YAML, --set, arguments) is invalid;
    │                               raised before anything starts. CLI exit code 2.
    ├── ProtocolError               the wire protocol was violated
    │   ├── LocalProtocolError      ...by us (a bug, or a call in the wrong state)
    │   └── RemoteProtocolError     ...by the remote side: malformed, oversized, unknown or
    │                               out-of-order bytes. The connection is closed with the
    │                               reason logged; the peer carries on.
    ├── TransportError              a connection could not be used
    │   ├── ClosedResourceError     ...because we closed it (using it after close is a bug)
    │   ├── BrokenResourceError     ...because the other side went away or the link broke
    │   └── ConnectError            ...because it could not be established
    ├── SwarmError                  the exchange of blobs failed
    │   ├── ManifestError           a manifest is malformed or inconsistent
    │   └── PieceVerificationError  a piece did not match its hash
    ├── LearnError                  datasets, models, chunk plans (e.g. mismatched state dict)
    │   └── PluginError             user code plugged in (a model factory) failed; the message
    │                               names the key and carries the user's traceback
    ├── AggregationError            preconditions of an aggregation rule are violated
    ├── TrackerError                rendezvous failed (timeout, refused registration)
    ├── SecurityError               keys, tokens and signatures
    │   └── AuthError               a remote party's credentials do not hold (bad or
    │                               expired token, revoked member, wrong key, bad signature);
    │                               the connection is refused with the reason audited
    └── FederationError             the federation as a whole could not run; CLI exit code 1
        └── SimulationStalled       virtual time: every task waits and nothing is scheduled

The split between local and remote protocol errors follows h11; closed versus broken
resources follows trio. ``DeadlineExceeded`` is a ``TimeoutError`` *and* an
``FltorrentError`` so that ``asyncio`` code can treat it as an ordinary timeout.
"""

from __future__ import annotations


class FltorrentError(Exception):
    """Root of every error raised on purpose by fltorrent."""


class ConfigError(FltorrentError):
    """An invalid configuration. ``path`` names the offending key (``section.key``)."""

    def __init__(self, message: str, *, path: str = "") -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.reason = message


class ProtocolError(FltorrentError):
    """The wire protocol was violated."""


class LocalProtocolError(ProtocolError):
    """We tried to do something the protocol state does not allow."""


class RemoteProtocolError(ProtocolError):
    """The remote peer sent bytes that violate the protocol."""


class TransportError(FltorrentError):
    """A connection could not be used."""


class ClosedResourceError(TransportError):
    """The resource was closed by us and used afterwards."""


class BrokenResourceError(TransportError):
    """The other side went away or the link broke."""


class ConnectError(TransportError):
    """A connection could not be established."""


class SwarmError(FltorrentError):
    """The exchange of blobs failed."""


class ManifestError(SwarmError):
    """A manifest is malformed or inconsistent with what it describes."""


class PieceVerificationError(SwarmError):
    """A piece did not match the hash in its manifest."""


class LearnError(FltorrentError):
    """Datasets, models or chunk plans were used inconsistently."""


class PluginError(LearnError):
    """User code plugged in by import string failed, or returned the wrong kind of object."""


class AggregationError(FltorrentError):
    """The inputs of an aggregation rule violate its preconditions."""


class TrackerError(FltorrentError):
    """Rendezvous with the tracker failed."""


class SecurityError(FltorrentError):
    """Keys, federation certificates, tokens or signatures could not be used."""


class AuthError(SecurityError):
    """A remote party's credentials do not hold; ``reason`` is a short audit label."""

    def __init__(self, message: str, *, reason: str = "bad_token") -> None:
        super().__init__(message)
        self.reason = reason


class FederationError(FltorrentError):
    """The federation as a whole could not run."""


class DeadlineExceeded(FltorrentError, TimeoutError):
    """A wait reached its deadline."""


class SimulationStalled(FederationError):
    """In virtual time, every task is waiting and no timer can ever wake one (a deadlock)."""
