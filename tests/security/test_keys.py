"""Key files: created owner-only, refused when others can read them, identities."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fltorrent.errors import SecurityError
from fltorrent.security.keys import (
    identity_of,
    key_pem,
    load_key,
    load_or_create_key,
    load_public_key,
    public_bytes,
    public_key_pem,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_key_is_created_owner_only_in_a_private_directory(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "peer.key"
    load_or_create_key(path)
    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o700
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")


def test_identity_is_40_hex_digits_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "peer.key"
    key = load_or_create_key(path)
    ident = identity_of(key)
    assert re.fullmatch(r"[0-9a-f]{40}", ident)
    # The same file gives the same key; the identity is that of the public key alone.
    assert identity_of(load_or_create_key(path)) == ident
    assert identity_of(load_key(path)) == ident
    assert identity_of(key.public_key()) == ident
    assert identity_of(public_bytes(key)) == ident
    assert identity_of(Ed25519PrivateKey.generate()) != ident


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o620])
def test_key_others_can_access_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "peer.key"
    load_or_create_key(path)
    path.chmod(mode)
    with pytest.raises(SecurityError, match=f"chmod 600 {re.escape(str(path))}"):
        load_key(path)
    with pytest.raises(SecurityError, match="chmod 600"):
        load_or_create_key(path)  # an existing key is never replaced, nor used


def test_file_that_is_not_a_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.key"
    path.write_bytes(b"just some text\n")
    path.chmod(0o600)
    with pytest.raises(SecurityError, match="is not a PEM private key"):
        load_key(path)
    with pytest.raises(SecurityError, match="cannot read key file"):
        load_key(tmp_path / "missing.key")


def test_key_of_another_algorithm_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ec.key"
    other = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(
        other.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    with pytest.raises(SecurityError, match="not an Ed25519 key"):
        load_key(path)
    with pytest.raises(SecurityError, match="not an Ed25519 key"):
        load_public_key(path)


def test_public_key_from_a_key_file_or_a_public_pem(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    private, public = tmp_path / "peer.key", tmp_path / "peer.pub"
    private.write_bytes(key_pem(key))
    private.chmod(0o600)
    public.write_bytes(public_key_pem(key))
    assert public_bytes(load_public_key(private)) == public_bytes(key)
    assert public_bytes(load_public_key(public)) == public_bytes(key)
    # A private key file is checked as any key file is, even when only its public half is used.
    private.chmod(0o644)
    with pytest.raises(SecurityError, match="chmod 600"):
        load_public_key(private)
    garbage = tmp_path / "garbage.pub"
    garbage.write_bytes(b"-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n")
    with pytest.raises(SecurityError, match="neither an Ed25519 key file nor a PEM public key"):
        load_public_key(garbage)
    with pytest.raises(SecurityError, match="cannot read key file"):
        load_public_key(tmp_path / "missing.pub")
