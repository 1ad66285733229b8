"""Signatures over manifests, and the keys of the federation's authors.

An author signs ``"fltorrent manifest v1" NUL || run || blob id``: the blob id is the SHA-256 of
the encoded manifest, which holds author, round, topic and every piece hash, so one signature
covers the whole update (pieces are checked by hash against the signed manifest, and whoever
relays them cannot alter them); ``run`` is the 16 random bytes the tracker drew for this run
(sent in the welcome), so that an update signed in an earlier run of the same federation, with
the same keys, cannot be passed off in this one. Verification is a pure function of (key,
message, signature), cached so that peers of one process do not check the same signature
again.
"""

from __future__ import annotations

import functools
from collections.abc import Collection

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

MANIFEST_CONTEXT = b"fltorrent manifest v1\0"
SIGNATURE_SIZE = 64


@functools.lru_cache(maxsize=1 << 16)
def manifest_message(run: bytes, blob_id: bytes) -> bytes:
    """What an author signs for blob ``blob_id`` in run ``run``."""
    return MANIFEST_CONTEXT + run + blob_id


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is the Ed25519 signature of ``message`` by ``public_key``."""
    if len(signature) != SIGNATURE_SIZE or len(public_key) != 32:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


class Signer:
    """Signs this participant's manifests."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key

    def sign_manifest(self, blob_id: bytes, run: bytes = b"") -> bytes:
        return self._key.sign(manifest_message(run, blob_id))


class AuthorKeys:
    """Display id -> (identity, public key) of each member, from tokens this peer verified."""

    def __init__(self) -> None:
        self._keys: dict[int, bytes] = {}
        self._ids: dict[int, str] = {}

    def set(self, peer_id: int, identity: str, public_key: bytes) -> None:
        self._keys[peer_id] = public_key
        self._ids[peer_id] = identity

    def remove(self, peer_id: int) -> None:
        self._keys.pop(peer_id, None)
        self._ids.pop(peer_id, None)

    def get(self, peer_id: int) -> bytes | None:
        return self._keys.get(peer_id)

    def identity(self, peer_id: int) -> str | None:
        return self._ids.get(peer_id)

    def peers_of(self, identities: Collection[str]) -> list[int]:
        """The display ids bound to any of ``identities``."""
        return sorted(p for p, i in self._ids.items() if i in identities)

    def check_manifest(
        self, author: int, blob_id: bytes, signature: bytes, run: bytes = b""
    ) -> str | None:
        """``None`` if ``author`` signed ``blob_id`` in ``run``; else the refusal reason."""
        key = self._keys.get(author)
        if key is None:
            return "unknown_author"
        if not verify_signature(key, manifest_message(run, blob_id), bytes(signature)):
            return "bad_signature"
        return None
