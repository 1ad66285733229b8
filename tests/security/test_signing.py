"""Manifest signatures and the table of authors' keys."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fltorrent.security.keys import identity_of, public_bytes
from fltorrent.security.signing import AuthorKeys, Signer, verify_signature

BLOB = hashlib.sha256(b"an encoded manifest").digest()


@pytest.fixture
def author() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _keys(peer_id: int, key: Ed25519PrivateKey) -> AuthorKeys:
    keys = AuthorKeys()
    keys.set(peer_id, identity_of(key), public_bytes(key))
    return keys


def test_manifest_signed_by_its_author_is_accepted(author: Ed25519PrivateKey) -> None:
    keys = _keys(3, author)
    assert keys.check_manifest(3, BLOB, Signer(author).sign_manifest(BLOB)) is None
    assert keys.identity(3) == identity_of(author)
    assert keys.get(3) == public_bytes(author)


def test_signature_by_another_key_is_refused(author: Ed25519PrivateKey) -> None:
    keys = _keys(3, author)
    impostor = Signer(Ed25519PrivateKey.generate()).sign_manifest(BLOB)
    assert keys.check_manifest(3, BLOB, impostor) == "bad_signature"
    # The author's real signature, checked against a wrong key for the author, fails too.
    wrong = _keys(3, Ed25519PrivateKey.generate())
    assert wrong.check_manifest(3, BLOB, Signer(author).sign_manifest(BLOB)) == "bad_signature"


def test_unknown_author_is_refused(author: Ed25519PrivateKey) -> None:
    keys = _keys(3, author)
    signature = Signer(author).sign_manifest(BLOB)
    assert keys.check_manifest(4, BLOB, signature) == "unknown_author"
    keys.remove(3)
    assert keys.check_manifest(3, BLOB, signature) == "unknown_author"


def test_altered_blob_id_is_refused(author: Ed25519PrivateKey) -> None:
    keys = _keys(3, author)
    signature = Signer(author).sign_manifest(BLOB)
    altered = bytes([BLOB[0] ^ 1]) + BLOB[1:]
    assert keys.check_manifest(3, altered, signature) == "bad_signature"
    # Nor does it pass as the manifest of another author.
    other = Ed25519PrivateKey.generate()
    keys.set(5, identity_of(other), public_bytes(other))
    assert keys.check_manifest(5, BLOB, signature) == "bad_signature"


@pytest.mark.parametrize(
    "mangle",
    [
        lambda s: s[:-1],  # truncated
        lambda s: s + b"\0",  # too long
        lambda s: b"\0" * 64,  # zeros
        lambda s: bytes([s[0] ^ 0x80]) + s[1:],  # one bit flipped
    ],
)
def test_malformed_signatures_are_refused(
    author: Ed25519PrivateKey, mangle: Callable[[bytes], bytes]
) -> None:
    keys = _keys(3, author)
    signature = mangle(Signer(author).sign_manifest(BLOB))
    assert keys.check_manifest(3, BLOB, signature) == "bad_signature"


def test_signature_is_bound_to_the_manifest_context(author: Ed25519PrivateKey) -> None:
    # A signature the same key made over the bare blob id (another protocol's message) does not
    # pass as a manifest signature.
    keys = _keys(3, author)
    assert keys.check_manifest(3, BLOB, author.sign(BLOB)) == "bad_signature"
    assert verify_signature(public_bytes(author), BLOB, author.sign(BLOB))
    assert not verify_signature(b"short key", BLOB, author.sign(BLOB))


def test_a_signature_from_another_run_is_refused(author: Ed25519PrivateKey) -> None:
    # Same federation, same keys, a later run: an update signed before cannot be replayed.
    keys = AuthorKeys()
    keys.set(1, identity_of(author), public_bytes(author))
    run1, run2 = bytes(range(16)), bytes(range(1, 17))
    sig = Signer(author).sign_manifest(BLOB, run1)
    assert keys.check_manifest(1, BLOB, sig, run1) is None
    assert keys.check_manifest(1, BLOB, sig, run2) == "bad_signature"
    assert keys.check_manifest(1, BLOB, sig) == "bad_signature"
