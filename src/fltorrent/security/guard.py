"""A peer's side of membership: whose tokens it accepts, whom it talks to, whose manifests.

The welcome hands a peer every member's token; the peer checks each against the federation's
certificate itself (not trusting the tracker for it) and keeps the identity and key each one
binds to its display id. From then on:

* a connection whose TLS certificate is not a valid peer token for the display id that its
  wire handshake claims is refused (``identity_mismatch``); plaintext connections are refused
  when the federation runs TLS;
* a manifest must carry its author's signature (:meth:`PeerGuard.verify_manifest`);
* a revocation list from the tracker is adopted only if the federation's admin signed it, and
  the members it revokes are forgotten (their connections closed, their manifests refused).
"""

from __future__ import annotations

import logging

from fltorrent.errors import AuthError
from fltorrent.security.audit import AuditEvent, AuditLog
from fltorrent.security.credentials import Credentials
from fltorrent.security.signing import AuthorKeys
from fltorrent.security.tokens import Revocations

log = logging.getLogger(__name__)


class PeerGuard:
    """Tokens, keys and revocations as one peer sees them."""

    def __init__(
        self,
        credentials: Credentials,
        *,
        peer_id: int,
        require_tls: bool,
        audit: AuditLog | None = None,
        run: bytes = b"",
    ) -> None:
        self.credentials = credentials
        self.verifier = credentials.verifier
        self.signer = credentials.signer
        self.peer_id = peer_id
        self.require_tls = require_tls
        self.audit = audit
        self.run = run  # the tracker's nonce for this run: signatures are valid in it only
        self.keys = AuthorKeys()

    def report(self, kind: str, reason: str, *, peer: int | None = None) -> None:
        if self.audit is not None:
            identity = self.keys.identity(peer) if peer is not None else None
            self.audit(AuditEvent(kind, f"peer {self.peer_id}", reason, identity, peer))

    # ------------------------------------------------------------------ members
    def admit(self, peer_id: int, token: bytes) -> bool:
        """Accept ``peer_id``'s token (its key signs its manifests); audited if refused."""
        try:
            member = self.verifier.member(token)
            if member.role != "peer":
                raise AuthError(f"a {member.role} token", reason="bad_role")
            if member.peer_id not in (None, peer_id):
                raise AuthError(f"token is for peer {member.peer_id}", reason="identity_mismatch")
            held = self.keys.peers_of({member.identity})
            if held and held != [peer_id]:  # the tracker is not trusted to map ids: one each
                raise AuthError(
                    f"identity {member.identity} is already member {held[0]}",
                    reason="identity_mismatch",
                )
        except AuthError as exc:
            self.keys.remove(peer_id)
            self.report("refused", f"{exc.reason}: member {peer_id}: {exc}", peer=peer_id)
            return False
        self.keys.set(peer_id, member.identity, member.public_key)
        return True

    def admit_all(self, tokens: dict[int, bytes]) -> None:
        for pid, token in sorted(tokens.items()):
            self.admit(pid, token)

    def revoke(self, signed: str) -> list[int]:
        """Adopt the tracker's revocation list; returns the members it newly revokes."""
        try:
            revoked = self.verifier.update_revocations(Revocations.from_bytes(signed.encode()))
        except AuthError as exc:
            log.error("peer %d: revocation list ignored: %s", self.peer_id, exc)
            self.report("refused", f"{exc.reason}: revocation list")
            return []
        gone = self.keys.peers_of(revoked)
        for pid in gone:
            self.report("revoked", "revoked by the admin", peer=pid)
            self.keys.remove(pid)
        return gone

    # ------------------------------------------------------------------ swarm hooks
    def sign(self, blob_id: bytes) -> bytes:
        return self.signer.sign_manifest(blob_id, self.run)

    def verify_manifest(self, author: int, blob_id: bytes, signature: bytes) -> str | None:
        return self.keys.check_manifest(author, blob_id, signature, self.run)

    def authenticate(self, certificate: bytes | None, claimed: int) -> str | None:
        """Why a connection claiming to be peer ``claimed`` is refused (``None``: it is not)."""
        if certificate is None:
            return "plaintext connection (security.transport is tls)" if self.require_tls else None
        try:
            member = self.verifier.member(certificate)
        except AuthError as exc:
            return f"{exc.reason}: {exc}"
        if member.role != "peer":
            return f"bad_role: a {member.role} token"
        if member.identity != self.keys.identity(claimed):
            return f"identity_mismatch: {member.identity} is not member {claimed}"
        return None

    def swarm_event(self, kind: str, peer: int, reason: str) -> None:
        self.report(kind, reason, peer=peer)
