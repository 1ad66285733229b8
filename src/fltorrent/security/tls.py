"""TLS 1.3 contexts in which both sides present their token as their certificate.

Each context trusts exactly the federation's certificate, requires the other side's
certificate (mutual authentication), and refuses anything older than TLS 1.3. A token is a
certificate for the member's own Ed25519 key, so completing the handshake proves that the other
side holds the key its token names; the transport hands that certificate on
(``Connection.peer_certificate``) to the layers that check the claimed display id, role and
revocation (:mod:`.tokens`). Host names are not checked: peers are named by identity, not by
DNS.
"""

from __future__ import annotations

import ssl
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fltorrent.security.keys import key_pem, write_private


def _context(
    purpose: int, key: Ed25519PrivateKey, token: bytes, federation: bytes
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(purpose)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=federation.decode("ascii"))
    # load_cert_chain reads files only: a private directory that lives for this call.
    with tempfile.TemporaryDirectory(prefix="fltorrent-tls-") as tmp:
        key_file, cert_file = Path(tmp) / "key.pem", Path(tmp) / "token.pem"
        write_private(key_file, key_pem(key))
        write_private(cert_file, token)
        ctx.load_cert_chain(cert_file, key_file)
    return ctx


def contexts(
    key: Ed25519PrivateKey, token: bytes, federation: bytes
) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) contexts for one participant; ``token`` and ``federation`` are PEM."""
    return (
        _context(ssl.PROTOCOL_TLS_SERVER, key, token, federation),
        _context(ssl.PROTOCOL_TLS_CLIENT, key, token, federation),
    )
