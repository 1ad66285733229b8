"""The federation's authority, join tokens, revocations, and their verification.

A federation is its **authority**: an Ed25519 admin key and a self-signed CA certificate
(``federation.crt``) that every participant holds. A **join token** is an X.509 certificate
the authority issues for one member's key: subject ``CN`` = the member's identity, ``OU`` = its
role (``peer`` or ``tracker``), ``UID`` = its display id (optional: the tracker assigns one when
absent), ``O`` = the federation; its validity period is the token's expiry. Being a
certificate, the token is also what the member presents in TLS (:mod:`.tls`), so the TLS
handshake proves that the other side holds the key its token names.

The **revocation list** is a JSON document the admin signs (serials and identities, with a
reason and time). The tracker loads it, refuses revoked members and distributes it; peers
check its signature before using it.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import NameOID

from fltorrent.errors import AuthError, SecurityError
from fltorrent.security.keys import identity_of, load_key, public_bytes, save_key

ROLES = ("peer", "tracker")
ADMIN_KEY = "admin.key"
FEDERATION_CERT = "federation.crt"
REVOKED = "revoked.json"
MAX_TOKEN = 8192  # bytes: an Ed25519 certificate is about 400
MAX_NAME = 43  # the CA's CN is "fltorrent federation NAME", and X.509 allows 64 characters
MAX_PEER_ID = (1 << 32) - 1
_SKEW = dt.timedelta(minutes=5)  # clocks of different hosts disagree a little


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _name(**attrs: str) -> x509.Name:
    oids = {"cn": NameOID.COMMON_NAME, "o": NameOID.ORGANIZATION_NAME}
    oids |= {"ou": NameOID.ORGANIZATIONAL_UNIT_NAME, "uid": NameOID.USER_ID}
    return x509.Name([x509.NameAttribute(oids[k], v) for k, v in attrs.items()])


def _attr(name: x509.Name, oid: x509.ObjectIdentifier) -> str | None:
    found = name.get_attributes_for_oid(oid)
    if len(found) != 1:
        return None
    value = found[0].value
    return value if isinstance(value, str) else None


def load_certificate(data: bytes) -> x509.Certificate:
    """A certificate from PEM or DER bytes; :class:`AuthError` if it is not one."""
    if len(data) > MAX_TOKEN:
        raise AuthError(f"token of {len(data)} bytes (limit {MAX_TOKEN})", reason="bad_token")
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except Exception as exc:
        raise AuthError(f"not a token: {exc}", reason="bad_token") from None


def certificate_der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def certificate_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class Member:
    """What a valid token says about its holder."""

    identity: str
    public_key: bytes  # raw Ed25519, 32 bytes
    role: str
    peer_id: int | None
    serial: int
    not_after: dt.datetime
    token: bytes  # DER


@dataclass
class Revocations:
    """The admin-signed list of revoked tokens (by serial) and identities."""

    federation: str
    entries: list[dict[str, str]] = field(default_factory=list)
    signature: bytes = b""

    def _body(self) -> bytes:
        doc = {"federation": self.federation, "revoked": self.entries}
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    def sign(self, admin: Ed25519PrivateKey) -> None:
        self.signature = admin.sign(b"fltorrent revocations v1\0" + self._body())

    def verify(self, authority: Ed25519PublicKey) -> None:
        """:class:`AuthError` unless the authority signed exactly these entries."""
        try:
            authority.verify(self.signature, b"fltorrent revocations v1\0" + self._body())
        except InvalidSignature:
            raise AuthError(
                "revocation list not signed by the federation", reason="bad_signature"
            ) from None

    @property
    def serials(self) -> set[int]:
        return {int(e["serial"]) for e in self.entries if e.get("serial")}

    @property
    def identities(self) -> set[str]:
        return {e["identity"] for e in self.entries if e.get("identity")}

    def copy(self) -> Revocations:
        return Revocations(self.federation, [dict(e) for e in self.entries], self.signature)

    def to_bytes(self) -> bytes:
        doc: dict[str, Any] = {"federation": self.federation, "revoked": self.entries}
        doc["signature"] = self.signature.hex()
        return json.dumps(doc, indent=1, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Revocations:
        try:
            doc = json.loads(data)
            entries = [{str(k): str(v) for k, v in e.items()} for e in doc["revoked"]]
            for e in entries:
                int(e.get("serial") or 0)
            return cls(str(doc["federation"]), entries, bytes.fromhex(doc["signature"]))
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            raise AuthError(f"malformed revocation list: {exc}", reason="bad_revocations") from None


class Authority:
    """The federation admin: issues tokens and signs revocations. Only its holder needs it."""

    def __init__(self, key: Ed25519PrivateKey, certificate: x509.Certificate, name: str) -> None:
        self.key = key
        self.certificate = certificate
        self.name = name

    @classmethod
    def new(cls, name: str, *, valid_for: dt.timedelta = dt.timedelta(days=3650)) -> Authority:
        if not 0 < len(name) <= MAX_NAME or not name.isprintable():
            raise SecurityError(
                f"federation name must be 1 to {MAX_NAME} printable characters, got {name!r}"
            )
        key = Ed25519PrivateKey.generate()
        subject = _name(cn=f"fltorrent federation {name}", o=name)
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _SKEW)
            .not_valid_after(now + valid_for)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, None)
        )
        return cls(key, cert, name)

    def save(self, directory: Path) -> None:
        """``admin.key`` (owner-only), ``federation.crt`` and an empty signed ``revoked.json``
        (a list this authority signed is kept; one of another federation is replaced)."""
        save_key(self.key, directory / ADMIN_KEY)
        (directory / FEDERATION_CERT).write_bytes(certificate_pem(self.certificate))
        if not self._signed_list(directory / REVOKED):
            revoked = Revocations(self.name)
            revoked.sign(self.key)
            (directory / REVOKED).write_bytes(revoked.to_bytes())

    def _signed_list(self, path: Path) -> bool:
        try:
            revoked = Revocations.from_bytes(path.read_bytes())
            revoked.verify(self.key.public_key())
        except (OSError, AuthError):
            return False
        return revoked.federation == self.name

    @classmethod
    def load(cls, directory: Path) -> Authority:
        key = load_key(directory / ADMIN_KEY)
        try:
            cert = load_certificate((directory / FEDERATION_CERT).read_bytes())
        except (OSError, AuthError) as exc:
            raise SecurityError(f"cannot read {directory / FEDERATION_CERT}: {exc}") from None
        if public_bytes(key) != public_bytes(_ed25519(cert)):
            raise SecurityError(f"{directory}: admin.key does not match federation.crt")
        return cls(key, cert, _attr(cert.subject, NameOID.ORGANIZATION_NAME) or "")

    def issue(
        self,
        public_key: Ed25519PublicKey,
        *,
        role: str = "peer",
        peer_id: int | None = None,
        valid_for: dt.timedelta = dt.timedelta(days=30),
    ) -> bytes:
        """A token (PEM certificate) for the holder of ``public_key``."""
        if role not in ROLES:
            raise SecurityError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        if peer_id is not None and not 0 < peer_id <= MAX_PEER_ID:
            raise SecurityError(f"peer id must be between 1 and {MAX_PEER_ID}, got {peer_id}")
        attrs = {"cn": identity_of(public_key), "o": self.name, "ou": role}
        if peer_id is not None:
            attrs["uid"] = str(peer_id)
        now = _now()
        try:
            not_after = now + valid_for
        except OverflowError:
            raise SecurityError(f"token validity of {valid_for} is out of range") from None
        if not_after <= now - _SKEW:
            raise SecurityError(f"token validity of {valid_for} ends before it begins")
        # A token cannot outlive the certificate that vouches for it (TLS would refuse it);
        # one asked for just as long (a run's tokens, a fresh federation) ends with it.
        limit = self.certificate.not_valid_after_utc
        if not_after > limit + _SKEW:
            raise SecurityError(
                "token would outlast the federation certificate "
                f"(valid until {limit:%Y-%m-%d %H:%M} UTC)"
            )
        not_after = min(not_after, limit)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(**attrs))
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _SKEW)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self.key, None)
        )
        return certificate_pem(cert)

    def revoke(
        self, revocations: Revocations, *, serial: int | None, identity: str | None, reason: str
    ) -> None:
        """Add an entry and sign the list again."""
        entry = {"reason": reason, "time": _now().isoformat(timespec="seconds")}
        if serial is not None:
            entry["serial"] = str(serial)
        if identity is not None:
            entry["identity"] = identity
        revocations.entries.append(entry)
        revocations.sign(self.key)


def _ed25519(cert: x509.Certificate) -> Ed25519PublicKey:
    key = cert.public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise AuthError("token key is not Ed25519", reason="bad_token")
    return key


@functools.lru_cache(maxsize=16384)
def _checked(authority_der: bytes, token: bytes) -> tuple[Member, dt.datetime]:
    """Signature, names and key of ``token`` against the authority (pure, so cached: peers of
    one process check the same tokens). Whatever the parser raises on remote bytes (it parses
    some fields lazily) is an :class:`AuthError`."""
    try:
        return _check(authority_der, token)
    except AuthError:
        raise
    except Exception as exc:
        raise AuthError(f"malformed token: {exc}", reason="bad_token") from None


def _check(authority_der: bytes, token: bytes) -> tuple[Member, dt.datetime]:
    ca = x509.load_der_x509_certificate(authority_der)
    cert = load_certificate(token)
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise AuthError("token not issued by this federation", reason="bad_token") from None
    key = _ed25519(cert)
    identity = identity_of(key)
    if _attr(cert.subject, NameOID.COMMON_NAME) != identity:
        raise AuthError("token names another identity than its key", reason="bad_token")
    role = _attr(cert.subject, NameOID.ORGANIZATIONAL_UNIT_NAME)
    if role not in ROLES:
        raise AuthError(f"token role {role!r} is unknown", reason="bad_token")
    uid = _attr(cert.subject, NameOID.USER_ID)
    if uid is not None and not (uid.isdigit() and 0 < int(uid) < 1 << 32):
        raise AuthError(f"token display id {uid!r} is not a peer id", reason="bad_token")
    member = Member(
        identity=identity,
        public_key=public_bytes(key),
        role=role,
        peer_id=int(uid) if uid is not None else None,
        serial=cert.serial_number,
        not_after=cert.not_valid_after_utc,
        token=certificate_der(cert),
    )
    return member, cert.not_valid_before_utc


class TokenVerifier:
    """Checks tokens against one federation's certificate and its revocation list."""

    def __init__(self, federation_cert: bytes, revocations: Revocations | None = None) -> None:
        try:
            self.certificate = load_certificate(federation_cert)
        except AuthError as exc:
            raise SecurityError(f"federation certificate: {exc}") from None
        self.authority_key = _ed25519(self.certificate)
        self.name = _attr(self.certificate.subject, NameOID.ORGANIZATION_NAME) or ""
        self._der = certificate_der(self.certificate)
        self.revocations = Revocations(self.name)
        self._serials: set[int] = set()  # of the adopted list (checked per token: kept as sets)
        self._identities: set[str] = set()
        if revocations is not None:
            self.update_revocations(revocations)

    def update_revocations(self, revocations: Revocations) -> set[str]:
        """Adopt a newer signed list; returns the identities it newly revokes.

        The admin only ever adds entries, so a list that lacks one of the current list's is an
        older one replayed (it would lift revocations): :class:`AuthError`, and the current
        list stays."""
        revocations.verify(self.authority_key)
        if revocations.federation != self.name:
            raise AuthError("revocation list of another federation", reason="bad_revocations")
        offered = {tuple(sorted(e.items())) for e in revocations.entries}
        if any(tuple(sorted(e.items())) not in offered for e in self.revocations.entries):
            raise AuthError(
                "revocation list older than the one held (it lacks revoked entries)",
                reason="bad_revocations",
            )
        before = self.revocations.identities
        # A copy: the caller (the admin's code, a shared Credentials) may go on appending to
        # its object, which must neither bypass the signature check nor hide what is new.
        self.revocations = revocations.copy()
        self._serials, self._identities = self.revocations.serials, self.revocations.identities
        return self._identities - before

    def examine(self, token: bytes) -> Member:
        """What ``token`` says once its signature, names and key are checked, whatever its
        validity period and the revocation list (to show a token); :class:`AuthError` if it
        is not a token of this federation."""
        return _checked(self._der, bytes(token))[0]

    def member(self, token: bytes, *, now: dt.datetime | None = None) -> Member:
        """The member ``token`` admits; :class:`AuthError` (with an audit reason) if none."""
        member, not_before = _checked(self._der, bytes(token))
        now = now or _now()
        if now > member.not_after:
            raise AuthError(f"token of {member.identity} expired", reason="expired_token")
        if now + _SKEW < not_before:
            raise AuthError(f"token of {member.identity} not valid yet", reason="bad_token")
        if member.serial in self._serials or member.identity in self._identities:
            raise AuthError(f"token of {member.identity} is revoked", reason="revoked")
        return member

    def is_revoked(self, identity: str) -> bool:
        return identity in self._identities
