"""Join tokens, the authority and the revocation list: what is admitted and what is refused."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from fltorrent.errors import AuthError, SecurityError
from fltorrent.security.keys import identity_of, public_bytes
from fltorrent.security.tokens import (
    ADMIN_KEY,
    FEDERATION_CERT,
    MAX_TOKEN,
    REVOKED,
    Authority,
    Revocations,
    TokenVerifier,
    certificate_der,
    certificate_pem,
)

UTC = dt.UTC


@pytest.fixture(scope="module")
def authority() -> Authority:
    return Authority.new("alpha")


def _verifier(authority: Authority, revocations: Revocations | None = None) -> TokenVerifier:
    return TokenVerifier(certificate_pem(authority.certificate), revocations)


def _refused(verifier: TokenVerifier, token: bytes, reason: str, **kw: dt.datetime) -> str:
    with pytest.raises(AuthError) as info:
        verifier.member(token, **kw)
    assert info.value.reason == reason, str(info.value)
    return str(info.value)


def _forge(
    signer: Ed25519PrivateKey,
    issuer: x509.Name,
    subject: dict[x509.ObjectIdentifier, str],
    public: Ed25519PrivateKey,
) -> bytes:
    """A certificate of our own making (what an attacker can build)."""
    now = dt.datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(oid, v) for oid, v in subject.items()]))
        .issuer_name(issuer)
        .public_key(public.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(signer, None)
    )
    return certificate_pem(cert)


def test_token_admits_its_member(authority: Authority) -> None:
    key = Ed25519PrivateKey.generate()
    verifier = _verifier(authority)
    member = verifier.member(authority.issue(key.public_key(), role="peer", peer_id=7))
    assert member.identity == identity_of(key)
    assert member.public_key == public_bytes(key)
    assert (member.role, member.peer_id) == ("peer", 7)
    assert member.not_after > dt.datetime.now(UTC) + dt.timedelta(days=29)
    tracker = verifier.member(authority.issue(key.public_key(), role="tracker"))
    assert (tracker.role, tracker.peer_id) == ("tracker", None)
    assert tracker.serial != member.serial
    # DER is accepted as well as PEM; the member carries the DER form.
    assert verifier.member(member.token) == member


def test_token_of_another_federation_is_refused(authority: Authority) -> None:
    other = Authority.new("alpha")  # same name, another admin key
    token = other.issue(Ed25519PrivateKey.generate().public_key(), peer_id=1)
    message = _refused(_verifier(authority), token, "bad_token")
    assert "not issued by this federation" in message


def test_expired_token_is_refused(authority: Authority) -> None:
    verifier = _verifier(authority)
    key = Ed25519PrivateKey.generate().public_key()
    stale = authority.issue(key, peer_id=1, valid_for=dt.timedelta(seconds=-1))
    _refused(verifier, stale, "expired_token")
    fresh = authority.issue(key, peer_id=1, valid_for=dt.timedelta(days=1))
    assert verifier.member(fresh).peer_id == 1
    later = dt.datetime.now(UTC) + dt.timedelta(days=1, minutes=1)
    _refused(verifier, fresh, "expired_token", now=later)
    earlier = dt.datetime.now(UTC) - dt.timedelta(hours=1)
    assert "not valid yet" in _refused(verifier, fresh, "bad_token", now=earlier)
    # What the token says can still be shown.
    assert verifier.examine(stale).peer_id == 1


def test_revoked_by_serial_refuses_that_token_only(authority: Authority) -> None:
    key = Ed25519PrivateKey.generate().public_key()
    first, second = authority.issue(key, peer_id=2), authority.issue(key, peer_id=2)
    verifier = _verifier(authority)
    serial = verifier.member(first).serial
    revocations = Revocations(authority.name)
    authority.revoke(revocations, serial=serial, identity=None, reason="leaked token")
    assert verifier.update_revocations(revocations) == set()  # no identity newly revoked
    _refused(verifier, first, "revoked")
    assert verifier.member(second).serial != serial
    assert not verifier.is_revoked(identity_of(key))


def test_revoked_by_identity_refuses_every_token_of_the_key(authority: Authority) -> None:
    key, bystander = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    tokens = [authority.issue(key.public_key(), peer_id=3) for _ in range(2)]
    kept = authority.issue(bystander.public_key(), peer_id=4)
    revocations = Revocations(authority.name)
    authority.revoke(revocations, serial=None, identity=identity_of(key), reason="left")
    verifier = _verifier(authority, revocations)  # given at construction this time
    for token in tokens:
        _refused(verifier, token, "revoked")
    assert verifier.member(kept).peer_id == 4
    assert verifier.is_revoked(identity_of(key))
    # A later list that adds the bystander reports it as newly revoked.
    authority.revoke(revocations, serial=None, identity=identity_of(bystander), reason="gone")
    assert verifier.update_revocations(revocations) == {identity_of(bystander)}
    _refused(verifier, kept, "revoked")


def test_revocation_list_round_trips_through_bytes(authority: Authority) -> None:
    revocations = Revocations(authority.name)
    authority.revoke(revocations, serial=12345, identity="ab" * 20, reason="test")
    again = Revocations.from_bytes(revocations.to_bytes())
    again.verify(authority.key.public_key())
    assert again.serials == {12345}
    assert again.identities == {"ab" * 20}


def test_revocation_list_altered_after_signing_is_refused(authority: Authority) -> None:
    revocations = Revocations(authority.name)
    victim = "cd" * 20
    authority.revoke(revocations, serial=None, identity=victim, reason="compromised")
    doc = json.loads(revocations.to_bytes())
    doc["revoked"] = []  # someone lifts the revocation and keeps the signature
    verifier = _verifier(authority)
    with pytest.raises(AuthError) as info:
        verifier.update_revocations(Revocations.from_bytes(json.dumps(doc).encode()))
    assert info.value.reason == "bad_signature"
    doc = json.loads(revocations.to_bytes())
    doc["revoked"][0]["identity"] = "ef" * 20  # or moves it onto someone else
    with pytest.raises(AuthError, match="not signed by the federation"):
        verifier.update_revocations(Revocations.from_bytes(json.dumps(doc).encode()))
    assert verifier.revocations.entries == []


def test_revocation_list_signed_by_another_admin_is_refused(authority: Authority) -> None:
    impostor = Authority.new(authority.name)
    revocations = Revocations(authority.name)
    impostor.revoke(revocations, serial=None, identity="12" * 20, reason="framed")
    with pytest.raises(AuthError) as info:
        _verifier(authority).update_revocations(revocations)
    assert info.value.reason == "bad_signature"
    # Signed by our admin but for another federation's name: refused too.
    foreign = Revocations("beta")
    foreign.sign(authority.key)
    with pytest.raises(AuthError) as info:
        _verifier(authority).update_revocations(foreign)
    assert info.value.reason == "bad_revocations"


def test_older_revocation_list_does_not_lift_revocations(authority: Authority) -> None:
    key = Ed25519PrivateKey.generate().public_key()
    token = authority.issue(key, peer_id=5)
    older = Revocations(authority.name)
    older.sign(authority.key)
    newer = Revocations.from_bytes(older.to_bytes())
    authority.revoke(newer, serial=None, identity=identity_of(key), reason="revoked")
    verifier = _verifier(authority, newer)
    with pytest.raises(AuthError, match="older than the one held") as info:
        verifier.update_revocations(older)  # validly signed, but replayed
    assert info.value.reason == "bad_revocations"
    _refused(verifier, token, "revoked")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"{",
        b"[]",
        b'{"federation": "alpha", "revoked": [1], "signature": ""}',
        b'{"federation": "alpha", "revoked": [{"serial": "x"}], "signature": ""}',
        b'{"federation": "alpha", "revoked": [], "signature": "zz"}',
        b"[" * 100_000,
    ],
)
def test_malformed_revocation_list_is_refused(data: bytes) -> None:
    with pytest.raises(AuthError) as info:
        Revocations.from_bytes(data)
    assert info.value.reason == "bad_revocations"


def test_edited_identity_breaks_the_signature(authority: Authority) -> None:
    verifier = _verifier(authority)
    victim, attacker = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    der = certificate_der(x509.load_pem_x509_certificate(authority.issue(attacker.public_key())))
    # Editing the CN inside a real token (same length, so the DER stays well formed).
    edited = der.replace(identity_of(attacker).encode(), identity_of(victim).encode())
    assert edited != der
    _refused(verifier, edited, "bad_token")
    # Building a token that names the victim: only the admin key can sign it.
    subject = {
        NameOID.COMMON_NAME: identity_of(victim),
        NameOID.ORGANIZATION_NAME: authority.name,
        NameOID.ORGANIZATIONAL_UNIT_NAME: "peer",
    }
    forged = _forge(attacker, authority.certificate.subject, subject, victim)
    assert "not issued by this federation" in _refused(verifier, forged, "bad_token")
    # Even the admin's signature does not make a CN that is not the key's identity valid.
    mislabeled = _forge(authority.key, authority.certificate.subject, subject, attacker)
    assert "another identity" in _refused(verifier, mislabeled, "bad_token")


@pytest.mark.parametrize("role", ["admin", ""])
def test_unknown_role_is_refused(authority: Authority, role: str) -> None:
    key = Ed25519PrivateKey.generate()
    subject = {NameOID.COMMON_NAME: identity_of(key), NameOID.ORGANIZATIONAL_UNIT_NAME: role}
    if not role:
        del subject[NameOID.ORGANIZATIONAL_UNIT_NAME]
    token = _forge(authority.key, authority.certificate.subject, subject, key)
    assert "role" in _refused(_verifier(authority), token, "bad_token")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00\x01garbage",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        b"\x30" * (MAX_TOKEN + 1),
        b"A" * (10 << 20),
    ],
)
def test_garbage_and_huge_blobs_are_refused(authority: Authority, data: bytes) -> None:
    message = _refused(_verifier(authority), data, "bad_token")
    if len(data) > MAX_TOKEN:
        assert f"limit {MAX_TOKEN}" in message


def test_authority_save_and_load_round_trip(tmp_path: Path) -> None:
    made = Authority.new("beta")
    directory = tmp_path / "fed"
    made.save(directory)
    assert (directory / ADMIN_KEY).stat().st_mode & 0o777 == 0o600
    loaded = Authority.load(directory)
    assert loaded.name == "beta"
    assert public_bytes(loaded.key) == public_bytes(made.key)
    assert loaded.certificate == made.certificate
    # A token the loaded authority issues verifies against the saved certificate.
    verifier = TokenVerifier((directory / FEDERATION_CERT).read_bytes())
    key = Ed25519PrivateKey.generate().public_key()
    assert verifier.member(loaded.issue(key, peer_id=9)).peer_id == 9
    # The saved revocation list is empty and signed by the admin.
    revocations = Revocations.from_bytes((directory / REVOKED).read_bytes())
    assert verifier.update_revocations(revocations) == set()
    assert revocations.entries == []


def test_saving_again_keeps_the_admins_revocations(tmp_path: Path) -> None:
    authority = Authority.new("beta")
    authority.save(tmp_path)
    revocations = Revocations.from_bytes((tmp_path / REVOKED).read_bytes())
    authority.revoke(revocations, serial=None, identity="34" * 20, reason="r")
    (tmp_path / REVOKED).write_bytes(revocations.to_bytes())
    authority.save(tmp_path)
    assert Revocations.from_bytes((tmp_path / REVOKED).read_bytes()).identities == {"34" * 20}
    # A list of another federation left in the directory is replaced by a fresh one of ours.
    Authority.new("gamma").save(tmp_path / "other")
    shutil.copy(tmp_path / "other" / REVOKED, tmp_path / REVOKED)
    authority.save(tmp_path)
    fresh = Revocations.from_bytes((tmp_path / REVOKED).read_bytes())
    fresh.verify(authority.key.public_key())
    assert (fresh.federation, fresh.entries) == ("beta", [])


def test_mismatched_admin_key_and_certificate_are_refused(tmp_path: Path) -> None:
    Authority.new("one").save(tmp_path / "one")
    Authority.new("two").save(tmp_path / "two")
    shutil.copy(tmp_path / "one" / ADMIN_KEY, tmp_path / "two" / ADMIN_KEY)
    with pytest.raises(SecurityError, match=r"admin\.key does not match federation\.crt"):
        Authority.load(tmp_path / "two")
    (tmp_path / "one" / FEDERATION_CERT).write_bytes(b"not a certificate")
    with pytest.raises(SecurityError, match="cannot read"):
        Authority.load(tmp_path / "one")
    with pytest.raises(SecurityError, match="cannot read key file"):
        Authority.load(tmp_path / "none")


@pytest.mark.parametrize("name", ["", "x" * 44, "line\nbreak"])
def test_bad_federation_names_are_refused(name: str) -> None:
    with pytest.raises(SecurityError, match="federation name"):
        Authority.new(name)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"role": "admin"}, "role must be one of"),
        ({"peer_id": 0}, "peer id must be between"),
        ({"peer_id": 1 << 32}, "peer id must be between"),
        ({"valid_for": dt.timedelta(days=-1)}, "ends before it begins"),
        ({"valid_for": dt.timedelta(days=4000)}, "outlast the federation certificate"),
        ({"valid_for": dt.timedelta(days=999_999_999)}, "out of range"),
    ],
)
def test_issue_refuses_tokens_that_could_not_be_used(
    authority: Authority, kwargs: dict[str, object], message: str
) -> None:
    key = Ed25519PrivateKey.generate().public_key()
    with pytest.raises(SecurityError, match=message):
        authority.issue(key, **kwargs)  # type: ignore[arg-type]
    assert authority.issue(key, peer_id=(1 << 32) - 1).count(b"BEGIN CERTIFICATE") == 1


def test_verifier_keeps_its_own_copy_of_the_list(authority: Authority) -> None:
    revocations = Revocations(authority.name)
    revocations.sign(authority.key)
    verifier = _verifier(authority, revocations)
    key = Ed25519PrivateKey.generate().public_key()
    token = authority.issue(key, peer_id=6)
    # An entry appended to the caller's object without the admin's signature is not adopted.
    revocations.entries.append({"identity": identity_of(key), "reason": "unsigned"})
    assert verifier.member(token).peer_id == 6
    with pytest.raises(AuthError, match="not signed by the federation"):
        verifier.update_revocations(revocations)
    assert verifier.member(token).peer_id == 6


def test_token_ends_with_the_federation_certificate() -> None:
    short = Authority.new("short", valid_for=dt.timedelta(days=10))
    key = Ed25519PrivateKey.generate().public_key()
    # Asked for as long as the federation lives (issued a moment later): ends with it.
    member = _verifier(short).member(short.issue(key, valid_for=dt.timedelta(days=10)))
    assert member.not_after == short.certificate.not_valid_after_utc
    with pytest.raises(SecurityError, match="outlast the federation certificate"):
        short.issue(key, valid_for=dt.timedelta(days=11))
