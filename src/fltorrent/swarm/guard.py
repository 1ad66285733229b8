"""What the swarm asks about credentials, injected by the runtime (``fltorrent.security``
builds them); a bare swarm (tests, benchmarks of the exchange alone) signs and checks nothing.

The swarm stays bytes-only: it signs blob ids, hands (author, blob id, signature) to ``verify``
and (the certificate the transport proved, the claimed peer id) to ``authenticate``, and
reports refusals and bans to ``audit``; it never parses a key or a certificate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# (author, blob id, signature) -> None if the author signed it, else the refusal reason
# ("bad_signature", "unknown_author").
ManifestVerify = Callable[[int, bytes, bytes], str | None]
# (kind, the neighbour concerned, reason): refusals and bans, for the audit log.
SecurityHook = Callable[[str, int, str], None]
# (certificate the transport proved or None, the peer id the handshake claims) -> refusal
Authenticate = Callable[[bytes | None, int], str | None]


@dataclass(frozen=True)
class SwarmSecurity:
    """Signing, verification and authentication hooks of one swarm."""

    sign: Callable[[bytes], bytes] | None = None  # blob id -> our signature over it
    verify: ManifestVerify | None = None
    authenticate: Authenticate | None = None
    audit: SecurityHook | None = None

    def report(self, kind: str, peer: int, reason: str) -> None:
        if self.audit is not None:
            self.audit(kind, peer, reason)
