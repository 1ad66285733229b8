"""Identities, federation membership, signatures, TLS and the audit log.

* :mod:`.keys`: a peer's Ed25519 key (created on first use, owner-only file) and the identity
  derived from it.
* :mod:`.tokens`: the federation's authority (the admin key and its certificate), join tokens
  (X.509 certificates the authority issues: member key, role, display id, expiry), the signed
  revocation list, and :class:`~.tokens.TokenVerifier`, which every tracker and peer uses.
* :mod:`.signing`: signatures over manifests and the table of authors' keys.
* :mod:`.tls`: TLS 1.3 contexts in which each side presents its token as its certificate.
* :mod:`.audit`: security events and the ``security.jsonl`` sink.
* :mod:`.credentials`: what one participant holds (key, token, federation certificate), and a
  whole local federation created on the fly for a run that brought none.

This package imports only :mod:`fltorrent.errors` of ours; the wire and swarm layers receive
its objects through small callables (sign, verify, authenticate), so they stay bytes-only.
"""

from fltorrent.security.audit import AuditEvent, AuditLog, JsonlAudit
from fltorrent.security.credentials import Credentials, LocalFederation, create_local_federation
from fltorrent.security.keys import identity_of, load_or_create_key, public_bytes
from fltorrent.security.signing import AuthorKeys, Signer, verify_signature
from fltorrent.security.tokens import ROLES, Authority, Member, Revocations, TokenVerifier

__all__ = [
    "ROLES",
    "AuditEvent",
    "AuditLog",
    "AuthorKeys",
    "Authority",
    "Credentials",
    "JsonlAudit",
    "LocalFederation",
    "Member",
    "Revocations",
    "Signer",
    "TokenVerifier",
    "create_local_federation",
    "identity_of",
    "load_or_create_key",
    "public_bytes",
    "verify_signature",
]
