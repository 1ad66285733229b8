"""A run's credentials: the federation, the tracker's and each peer's token, the audit log,
and the transports that present them.

A run that names no federation (``security.federation_dir: null``, the default) gets one of
its own, so that ``make run`` is authenticated and encrypted with no step for the user: an
authority, a tracker token and one token per peer (display id bound), written to
``<output>/keys`` (keys owner-only) when peers run in other processes, kept in memory
otherwise. With ``federation_dir`` the run's tokens come from that federation's admin key and
its revocation list is enforced.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fltorrent.admission import Admission
from fltorrent.config import Config
from fltorrent.errors import ConfigError, SecurityError
from fltorrent.net.base import Transport
from fltorrent.net.tcp import TcpTransport
from fltorrent.security.audit import AuditLog, JsonlAudit, MemoryAudit
from fltorrent.security.credentials import Credentials, LocalFederation, create_local_federation
from fltorrent.security.tokens import (
    ADMIN_KEY,
    FEDERATION_CERT,
    REVOKED,
    Authority,
    Revocations,
    certificate_pem,
)

AUDIT_FILE = "security.jsonl"
KEY_DIR = "keys"


@dataclass
class RunSecurity:
    """What the launchers need to run a federation's participants with their credentials."""

    tracker: Credentials
    peers: dict[int, Credentials]
    tls: bool
    handshake_timeout: float
    audit: AuditLog
    revocations_path: Path | None = None
    max_refusals_per_address: int = 64
    key_dir: Path | None = None  # where peer files were written (process launcher)

    def transport(self, credentials: Credentials) -> Transport:
        """Real TCP presenting ``credentials`` (TLS), or plain TCP."""
        return peer_transport(credentials, tls=self.tls, handshake_timeout=self.handshake_timeout)

    def admission(self, *, require_tls: bool) -> Admission:
        return Admission(
            self.tracker.verifier,
            require_tls=require_tls,
            revocations_path=self.revocations_path,
            audit=self.audit,
            max_refusals_per_address=self.max_refusals_per_address,
        )


def run_security(config: Config, output_dir: Path | None, *, write_keys: bool) -> RunSecurity:
    """The credentials of a run (see the module docstring)."""
    sec = config.security
    n = config.federate.client_num
    valid = dt.timedelta(days=sec.token_days)
    revocations_path = None
    if sec.federation_dir is None:
        fed = create_local_federation(config.federate.federation_id, n, valid_for=valid)
    else:
        try:
            authority = Authority.load(sec.federation_dir)
        except SecurityError as exc:
            raise ConfigError(str(exc), path="security.federation_dir") from None
        fed = _issue(authority, n, valid, sec.federation_dir / REVOKED)
        revocations_path = sec.federation_dir / REVOKED
    key_dir = None
    if write_keys:
        if output_dir is None:
            raise SecurityError("peers in other processes need an output directory for keys")
        key_dir = output_dir / KEY_DIR
        fed.save(key_dir, with_admin_key=sec.federation_dir is None)
        if revocations_path is None:
            revocations_path = key_dir / REVOKED
    return _security(config, output_dir, fed.tracker, fed.peers, revocations_path, key_dir=key_dir)


def _security(
    config: Config,
    output_dir: Path | None,
    tracker: Credentials,
    peers: dict[int, Credentials],
    revocations_path: Path | None,
    *,
    key_dir: Path | None = None,
) -> RunSecurity:
    """The rest follows from the ``security`` section: transport, timeouts, limits, audit."""
    sec = config.security
    audit: AuditLog = MemoryAudit()
    if sec.audit and output_dir is not None:
        audit = JsonlAudit(output_dir / AUDIT_FILE)
    return RunSecurity(
        tracker=tracker,
        peers=peers,
        tls=sec.transport == "tls",
        handshake_timeout=sec.handshake_timeout,
        audit=audit,
        revocations_path=revocations_path,
        max_refusals_per_address=sec.max_refusals_per_address,
        key_dir=key_dir,
    )


def _issue(authority: Authority, n: int, valid: dt.timedelta, revoked: Path) -> LocalFederation:
    """Fresh keys and tokens for this run's tracker and peers, from an existing authority."""
    revocations = None
    if revoked.exists():
        try:
            revocations = Revocations.from_bytes(revoked.read_bytes())
        except SecurityError as exc:
            raise ConfigError(f"{revoked}: {exc}", path="security.federation_dir") from None
    return create_local_federation(
        authority.name, n, valid_for=valid, authority=authority, revocations=revocations
    )


def _federation_cert(path: Path) -> Path:
    return path / FEDERATION_CERT if path.is_dir() else path


def peer_credentials(federation: Path, key: Path, token: Path) -> Credentials:
    """A peer's credentials from its files (``fltorrent peer``)."""
    return Credentials.load(key, token, _federation_cert(federation))


def peer_transport(
    credentials: Credentials, *, tls: bool, handshake_timeout: float = 10.0
) -> TcpTransport:
    """TCP for one participant: TLS presenting its token, or plaintext."""
    if not tls:
        return TcpTransport()
    return TcpTransport(credentials.tls_contexts(), handshake_timeout=handshake_timeout)


def tracker_security(config: Config, federation: Path, output_dir: Path | None) -> RunSecurity:
    """The tracker's credentials (``fltorrent tracker --federation DIR``): ``tracker.key`` and
    ``tracker.token`` in DIR, or a token it issues itself when DIR holds the admin key."""
    sec = config.security
    cert, revoked = federation / FEDERATION_CERT, federation / REVOKED
    if (federation / "tracker.key").exists():
        creds = Credentials.load(
            federation / "tracker.key", federation / "tracker.token", cert, revoked
        )
    elif (federation / ADMIN_KEY).exists():
        authority = Authority.load(federation)
        key = Ed25519PrivateKey.generate()
        valid = dt.timedelta(days=sec.token_days)
        token = authority.issue(key.public_key(), role="tracker", valid_for=valid)
        creds = Credentials(key, token, certificate_pem(authority.certificate))
        if revoked.exists():
            creds.revocations = Revocations.from_bytes(revoked.read_bytes())
    else:
        raise SecurityError(f"{federation} holds neither tracker.key nor admin.key")
    if creds.member().role != "tracker":
        raise SecurityError(f"the token in {federation} is not a tracker token")
    return _security(config, output_dir, creds, {}, revoked if revoked.exists() else None)
