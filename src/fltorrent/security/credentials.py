"""What one participant holds, and a whole federation created for a local run.

A participant needs its key, its token and the federation's certificate (plus, for the
tracker, the revocation list it distributes). ``fltorrent keys`` writes these files for
multi-host federations; a run that brings none (``make run``, ``--processes``, simulation)
gets a fresh federation of its own from :func:`create_local_federation`, so that the default
run is authenticated with no step for the user.
"""

from __future__ import annotations

import datetime as dt
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fltorrent.errors import AuthError, SecurityError
from fltorrent.security.keys import identity_of, load_key, save_key
from fltorrent.security.signing import Signer
from fltorrent.security.tls import contexts
from fltorrent.security.tokens import (
    FEDERATION_CERT,
    Authority,
    Member,
    Revocations,
    TokenVerifier,
    certificate_pem,
    load_certificate,
)


@dataclass
class Credentials:
    """One participant's key and token, and the federation it belongs to."""

    key: Ed25519PrivateKey
    token: bytes  # PEM
    federation: bytes  # PEM of the federation certificate
    revocations: Revocations | None = None
    _verifier: TokenVerifier | None = field(default=None, repr=False)

    @property
    def verifier(self) -> TokenVerifier:
        if self._verifier is None:
            self._verifier = TokenVerifier(self.federation, self.revocations)
        return self._verifier

    @property
    def identity(self) -> str:
        return identity_of(self.key)

    @property
    def signer(self) -> Signer:
        return Signer(self.key)

    def member(self) -> Member:
        """What our own token says (checked: a token for another key is refused here)."""
        try:
            member = self.verifier.member(self.token)
        except AuthError as exc:
            raise SecurityError(f"our own token is not valid: {exc}") from None
        if member.identity != self.identity:
            raise SecurityError("our token was issued for another key")
        return member

    def tls_contexts(self) -> tuple[ssl.SSLContext, ssl.SSLContext]:
        """(server, client) TLS contexts presenting our token."""
        try:
            return contexts(self.key, self.token, self.federation)
        except (ssl.SSLError, ValueError, OSError) as exc:
            raise SecurityError(f"cannot set up TLS with this key and token: {exc}") from None

    def save(self, directory: Path, name: str) -> None:
        """``name.key`` (owner-only) and ``name.token`` in ``directory``."""
        save_key(self.key, directory / f"{name}.key")
        (directory / f"{name}.token").write_bytes(self.token)

    @classmethod
    def load(
        cls, key: Path, token: Path, federation: Path, revoked: Path | None = None
    ) -> Credentials:
        """From files; :class:`SecurityError` names the file that is missing or wrong."""
        secret = load_key(key)
        try:
            tok, fed = token.read_bytes(), federation.read_bytes()
        except OSError as exc:
            raise SecurityError(f"cannot read {exc.filename}: {exc.strerror}") from None
        tok, fed = _pem(tok, token, "token"), _pem(fed, federation, "federation certificate")
        revocations = None
        if revoked is not None and revoked.exists():
            try:
                revocations = Revocations.from_bytes(revoked.read_bytes())
            except AuthError as exc:
                raise SecurityError(f"{revoked}: {exc}") from None
        creds = cls(secret, tok, fed, revocations)
        try:
            creds.verifier  # noqa: B018  (checks the federation certificate and revocations)
        except AuthError as exc:
            raise SecurityError(f"{revoked}: {exc}") from None
        creds.member()
        return creds


def _pem(data: bytes, path: Path, what: str) -> bytes:
    """A certificate file's bytes (PEM or DER) as PEM, which TLS contexts load."""
    try:
        return certificate_pem(load_certificate(data))
    except AuthError as exc:
        raise SecurityError(f"{path} is not a {what}: {exc}") from None


PEER_FILES = "peer-{}"  # peer N's key and token: peer-N.key, peer-N.token


@dataclass
class LocalFederation:
    """A federation made for one run: its authority, the tracker's and each peer's credentials."""

    authority: Authority
    tracker: Credentials
    peers: dict[int, Credentials]

    def save(self, directory: Path, *, with_admin_key: bool = True) -> None:
        """The authority's files plus ``tracker.*`` and ``peer-N.*`` (keys owner-only); without
        the admin key (an existing federation's stays where its admin keeps it), only
        ``federation.crt``."""
        if with_admin_key:
            self.authority.save(directory)
        else:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            (directory / FEDERATION_CERT).write_bytes(certificate_pem(self.authority.certificate))
        self.tracker.save(directory, "tracker")
        for pid, creds in self.peers.items():
            creds.save(directory, PEER_FILES.format(pid))


def create_local_federation(
    name: str,
    peers: int,
    *,
    valid_for: dt.timedelta = dt.timedelta(days=1),
    authority: Authority | None = None,
    revocations: Revocations | None = None,
) -> LocalFederation:
    """Fresh keys and tokens for a tracker and peers 1..``peers`` (display ids bound), issued by
    ``authority`` (an existing federation's) or by a new one."""
    if authority is None:
        authority = Authority.new(name)
        revocations = Revocations(name)
        revocations.sign(authority.key)
    fed = certificate_pem(authority.certificate)

    def holder(role: str, peer_id: int | None) -> Credentials:
        key = Ed25519PrivateKey.generate()
        token = authority.issue(key.public_key(), role=role, peer_id=peer_id, valid_for=valid_for)
        return Credentials(key, token, fed, revocations)

    return LocalFederation(
        authority, holder("tracker", None), {i: holder("peer", i) for i in range(1, peers + 1)}
    )
