"""Who may register with the tracker: tokens, proofs of key possession, identities, limits.

The tracker sends every connection a fresh nonce (``Hello``). A registration carries the
peer's token (its certificate from the federation's authority) and its signature over that
nonce, so a token seen on the wire (the welcome hands every member's token to the others) is
no use to anyone without its key. Over TLS, the certificate the connection proved must be that
same token's. Then: the role must be ``peer``; a token that names a display id binds it; one
identity holds one live membership, and a departed member's id can be taken again only by the
identity that held it. Authentication failures are counted per address: an address that keeps
failing is cut off for the rest of the run, which bounds what a join flood from one host costs.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from fltorrent.control import Register
from fltorrent.errors import AuthError
from fltorrent.security.audit import AuditEvent, AuditLog
from fltorrent.security.signing import verify_signature
from fltorrent.security.tokens import Member, Revocations, TokenVerifier

log = logging.getLogger(__name__)

REGISTER_CONTEXT = b"fltorrent register v1\0"


def register_message(nonce: str, federation: str) -> bytes:
    """What a registration's proof signs."""
    return REGISTER_CONTEXT + bytes.fromhex(nonce) + federation.encode()


def encode_token(token: bytes) -> str:
    return base64.b64encode(token).decode("ascii")


def decode_token(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise AuthError("token is not base64", reason="bad_token") from None


@dataclass
class Admission:
    """The tracker's membership checks (see the module docstring)."""

    verifier: TokenVerifier
    require_tls: bool = True
    revocations_path: Path | None = None
    audit: AuditLog | None = None
    max_refusals_per_address: int = 64
    refusals: dict[str, int] = field(default_factory=dict)
    _stamp: tuple[int, int] = (0, 0)
    _checked_at: float = -math.inf

    @staticmethod
    def nonce() -> str:
        return os.urandom(16).hex()

    def blocked(self, host: str) -> bool:
        """Whether ``host`` failed too often to be heard again."""
        return self.refusals.get(host, 0) >= self.max_refusals_per_address

    def admit(self, msg: Register, nonce: str, federation: str, cert: bytes | None) -> Member:
        """The member ``msg`` proves to be; :class:`AuthError` (with its audit reason) if not."""
        if self.require_tls and cert is None:
            raise AuthError("plaintext registration (security.transport is tls)", reason="no_tls")
        if not msg.token:
            raise AuthError("registration without a token", reason="no_token")
        member = self.verifier.member(decode_token(msg.token))
        if member.role != "peer":
            raise AuthError(f"a {member.role} token cannot register as a peer", reason="bad_role")
        if not msg.proof or not verify_signature(
            member.public_key, register_message(nonce, federation), bytes.fromhex(msg.proof)
        ):
            raise AuthError("registration not signed with the token's key", reason="bad_proof")
        if cert is not None and self.verifier.member(cert).identity != member.identity:
            raise AuthError("TLS identity differs from the token's", reason="identity_mismatch")
        if member.peer_id is not None and msg.peer_id not in (None, member.peer_id):
            raise AuthError(
                f"token is for peer {member.peer_id}, not {msg.peer_id}", reason="identity_mismatch"
            )
        return member

    def refused(
        self, host: str, reason: str, detail: str, peer: int | None = None, *, count: bool = True
    ) -> None:
        """Audit a refusal; ``count`` it against ``host`` (authentication failures only: a
        member refused for membership reasons, e.g. reconnecting before its old connection was
        noticed gone, must not get its address cut off)."""
        if count:
            self.refusals[host] = self.refusals.get(host, 0) + 1
        self.report("refused", f"{reason}: {detail}", peer=peer, address=host)

    def report(
        self,
        kind: str,
        reason: str,
        *,
        identity: str | None = None,
        peer: int | None = None,
        address: str | None = None,
    ) -> None:
        if self.audit is not None:
            self.audit(AuditEvent(kind, "tracker", reason, identity, peer, address))

    def reload(self, *, at_most_every: float = 0.0) -> set[str]:
        """Adopt the revocation file if it changed (one ``stat``, skipped if the last was less
        than ``at_most_every`` seconds ago); returns the identities it newly revokes."""
        now = time.monotonic()
        if self.revocations_path is None or now - self._checked_at < at_most_every:
            return set()
        self._checked_at = now
        with contextlib.suppress(OSError):
            st = self.revocations_path.stat()
            if (st.st_mtime_ns, st.st_size) != self._stamp:
                self._stamp = (st.st_mtime_ns, st.st_size)
                try:
                    revoked = Revocations.from_bytes(self.revocations_path.read_bytes())
                    return self.verifier.update_revocations(revoked)
                except AuthError as exc:
                    log.error("tracker: revocation list %s ignored: %s", self.revocations_path, exc)
        return set()

    def revocations_text(self) -> str:
        return self.verifier.revocations.to_bytes().decode()
