"""A participant's Ed25519 key and the identity derived from it.

The identity is the first 20 bytes of the SHA-256 of the raw public key, in hex: it names the
key, not the person, so whoever holds the private key is that identity and nobody else can be.
Numeric peer ids stay as display names; a token binds one to an identity.

Key files are PKCS#8 PEM, written owner-only (0600, in a directory created 0700). A key file
that others can read is refused, as ssh refuses one: a leaked key is a stolen identity.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fltorrent.errors import SecurityError

IDENTITY_BYTES = 20


def public_bytes(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    """The raw 32-byte public key."""
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def identity_of(key: Ed25519PrivateKey | Ed25519PublicKey | bytes) -> str:
    """The identity (40 hex digits) of a key or of its raw public bytes."""
    raw = key if isinstance(key, bytes) else public_bytes(key)
    return hashlib.sha256(raw).digest()[:IDENTITY_BYTES].hex()


def key_pem(key: Ed25519PrivateKey) -> bytes:
    """The private key as unencrypted PKCS#8 PEM (for key files and TLS contexts)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_key_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    """The public key as SubjectPublicKeyInfo PEM (what a member hands the admin)."""
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` readable by the owner only (the directory is created 0700)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)


def save_key(key: Ed25519PrivateKey, path: Path) -> None:
    """Store ``key`` in an owner-only file."""
    try:
        write_private(path, key_pem(key))
    except OSError as exc:
        raise SecurityError(f"cannot write key file {path}: {exc.strerror or exc}") from None


def load_key(path: Path) -> Ed25519PrivateKey:
    """Read an Ed25519 key file; :class:`SecurityError` names what is wrong with it."""
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        raise SecurityError(f"cannot read key file {path}: {exc.strerror or exc}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecurityError(
            f"key file {path} is accessible by others (mode {stat.S_IMODE(mode):o}); "
            f"run: chmod 600 {path}"
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise SecurityError(f"key file {path} is not a PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SecurityError(f"key file {path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """The key in ``path``, created (owner-only) on first use."""
    if path.exists():
        return load_key(path)
    key = Ed25519PrivateKey.generate()
    save_key(key, path)
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """The public key in ``path``: a private key file (checked as :func:`load_key` does) or a
    public key PEM (as :func:`public_key_pem` writes it, or ``openssl pkey -pubout``)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SecurityError(f"cannot read key file {path}: {exc.strerror or exc}") from None
    if b"PRIVATE KEY-----" in data:
        return load_key(path).public_key()
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise SecurityError(f"{path} is neither an Ed25519 key file nor a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SecurityError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key
