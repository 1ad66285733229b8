"""``fltorrent keys``: create a federation, issue join tokens, revoke members.

The admin runs ``keys create DIR`` once; ``DIR`` then holds the admin key (owner-only), the
federation certificate every member needs, and the signed revocation list trackers load. A
member runs ``keys new-key KEY`` and hands the admin ``KEY.pub`` (the private key never leaves
its host); the admin answers with ``keys issue``. ``keys revoke`` adds an entry to the list and
signs it again; ``keys show`` says what a token holds and whether it is valid.

Errors are one line ``error: ...`` on stderr: exit code 2 for bad arguments and for input files
that are missing or wrong, 1 when the operation itself fails (a token that is not valid, a file
that cannot be written).
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from fltorrent.cli_common import fail
from fltorrent.errors import AuthError, FltorrentError
from fltorrent.security.keys import (
    identity_of,
    load_or_create_key,
    load_public_key,
    public_key_pem,
)
from fltorrent.security.tokens import (
    ADMIN_KEY,
    FEDERATION_CERT,
    MAX_PEER_ID,
    REVOKED,
    ROLES,
    Authority,
    Member,
    Revocations,
    TokenVerifier,
    certificate_pem,
)

keys_app = typer.Typer(
    help="Create a federation, issue join tokens, revoke members.", no_args_is_help=True
)

_T = TypeVar("_T")
_IDENTITY = re.compile(r"[0-9a-f]{40}")
_STATUS = {"expired_token": "expired", "revoked": "revoked"}

DirArg = Annotated[
    Path, typer.Argument(metavar="DIR", help="Federation directory (admin.key, federation.crt).")
]


def _guard(fn: Callable[[], _T], code: int = 1) -> _T:
    """``fn()``; our errors exit with ``code``, and a file that cannot be read or written with
    1, each as one line."""
    try:
        return fn()
    except FltorrentError as exc:
        raise fail(code, str(exc)) from None
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        raise fail(1, f"{where}{exc.strerror or exc}") from None


def _read(path: Path, what: str) -> bytes:
    """The bytes of an input file; exit 2 naming it if it cannot be read."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise fail(2, f"cannot read {what} {path}: {exc.strerror or exc}") from None


def _write_replacing(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` in one step (readers see the old or the new file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _when(moment: dt.datetime) -> str:
    return f"{moment.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC"


def _entries(n: int) -> str:
    return f"{n} entry" if n == 1 else f"{n} entries"


def _describe(member: Member) -> None:
    typer.echo(f"identity: {member.identity}")
    typer.echo(f"role: {member.role}")
    shown_id = member.peer_id if member.peer_id is not None else "none (the tracker assigns one)"
    typer.echo(f"id: {shown_id}")
    typer.echo(f"expires: {_when(member.not_after)}")
    typer.echo(f"serial: {member.serial}")


def _own_revocations(authority: Authority, path: Path) -> Revocations:
    """The revocation list in ``path``, checked to be this authority's before it is signed again
    (signing a list someone altered would make their edit the admin's)."""
    if not path.exists():
        typer.echo(f"note: {path} was missing; starting a new revocation list", err=True)
        return Revocations(authority.name)
    try:
        revocations = Revocations.from_bytes(_read(path, "revocation list"))
        revocations.verify(authority.key.public_key())
    except AuthError as exc:
        raise fail(1, f"{path}: {exc}; refusing to sign it again") from None
    if revocations.federation != authority.name:
        raise fail(1, f"{path} is the list of federation {revocations.federation!r}")
    return revocations


@keys_app.command("create")
def create(
    directory: DirArg,
    *,
    name: Annotated[str, typer.Option("--name", help="Federation name (1-43 characters).")],
) -> None:
    """Create a federation: admin.key (owner-only), federation.crt and revoked.json in DIR."""
    if (directory / ADMIN_KEY).exists():
        raise fail(2, f"{directory} already holds {ADMIN_KEY}; refusing to replace a federation")
    present = [f for f in (FEDERATION_CERT, REVOKED) if (directory / f).exists()]
    if present:
        raise fail(2, f"{directory} already holds {', '.join(present)}; use an empty directory")
    authority = _guard(lambda: Authority.new(name), 2)
    _guard(lambda: authority.save(directory))
    typer.echo(f"federation {name!r} created in {directory}")
    typer.echo(f"  {ADMIN_KEY}: the admin key; keep it on this host, owner-only")
    typer.echo(f"  {FEDERATION_CERT}: give it to every member")
    typer.echo(f"  {REVOKED}: the signed revocation list; give it to the tracker")


@keys_app.command("new-key")
def new_key(
    path: Annotated[Path, typer.Argument(metavar="PATH", help="Key file to create.")],
) -> None:
    """Create a member's key file (owner-only) and PATH.pub, the public key for the admin."""
    if path.exists() or path.is_symlink():
        raise fail(2, f"{path} already exists; refusing to replace a key")
    key = _guard(lambda: load_or_create_key(path))
    public = path.with_name(f"{path.name}.pub")
    _guard(lambda: public.write_bytes(public_key_pem(key)))
    typer.echo(f"identity: {identity_of(key)}")
    typer.echo(f"public key: {public} (give it to the federation admin)")


@keys_app.command("identity")
def identity(
    path: Annotated[Path, typer.Argument(metavar="PATH", help="Key file or public key PEM.")],
) -> None:
    """Print the identity (40 hex digits) of a key file or of a public key."""
    typer.echo(identity_of(_guard(lambda: load_public_key(path), 2)))


@keys_app.command("issue")
def issue(
    directory: DirArg,
    *,
    key: Annotated[
        Path, typer.Option("--key", help="The member's public key PEM, or its key file.")
    ],
    role: Annotated[str, typer.Option("--role", help="peer or tracker.")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the token.")],
    peer_id: Annotated[
        int | None, typer.Option("--id", help="Display peer id bound to the token.")
    ] = None,
    days: Annotated[int, typer.Option("--days", help="Days the token is valid.")] = 30,
) -> None:
    """Issue a join token for the holder of a key (the admin runs this)."""
    if role not in ROLES:
        raise fail(2, f"--role must be one of {', '.join(ROLES)}, got {role!r}")
    if peer_id is not None and not 1 <= peer_id <= MAX_PEER_ID:
        raise fail(2, f"--id must be between 1 and {MAX_PEER_ID}, got {peer_id}")
    if days < 1:
        raise fail(2, f"--days must be at least 1, got {days}")
    if days > 1_000_000:  # a datetime cannot hold such a date (and no token outlives this)
        raise fail(2, f"--days must be at most 1000000, got {days}")
    authority = _guard(lambda: Authority.load(directory), 2)
    public = _guard(lambda: load_public_key(key), 2)
    token = _guard(
        lambda: authority.issue(
            public, role=role, peer_id=peer_id, valid_for=dt.timedelta(days=days)
        ),
        2,
    )
    _guard(lambda: out.write_bytes(token))
    member = TokenVerifier(certificate_pem(authority.certificate)).examine(token)
    typer.echo(f"token written to {out}")
    _describe(member)


@keys_app.command("revoke")
def revoke(
    directory: DirArg,
    *,
    token: Annotated[
        Path | None, typer.Option("--token", help="Revoke this token and its holder.")
    ] = None,
    member_identity: Annotated[
        str | None, typer.Option("--identity", help="Revoke every token of this identity.")
    ] = None,
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the list).")] = "",
) -> None:
    """Revoke a member: add it to DIR/revoked.json and sign the list again."""
    if (token is None) == (member_identity is None):
        raise fail(2, "give exactly one of --token and --identity")
    authority = _guard(lambda: Authority.load(directory), 2)
    serial: int | None = None
    if token is not None:
        data = _read(token, "token")
        verifier = TokenVerifier(certificate_pem(authority.certificate))
        try:
            member = verifier.examine(data)
        except AuthError as exc:
            raise fail(2, f"{token}: {exc}") from None
        serial, ident = member.serial, member.identity
    else:
        assert member_identity is not None
        ident = member_identity.strip().lower()
        if not _IDENTITY.fullmatch(ident):
            raise fail(2, f"--identity must be 40 hex digits, got {member_identity!r}")
    path = directory / REVOKED
    revocations = _own_revocations(authority, path)
    if ident in revocations.identities:
        typer.echo(f"{ident} is already revoked; {path} unchanged")
        return
    authority.revoke(revocations, serial=serial, identity=ident, reason=reason)
    _guard(lambda: _write_replacing(path, revocations.to_bytes()))
    what = f"identity {ident}" + (f" (token serial {serial})" if serial is not None else "")
    typer.echo(f"revoked {what}; {path} now lists {_entries(len(revocations.entries))}")


@keys_app.command("show")
def show(
    token: Annotated[Path, typer.Argument(metavar="TOKEN", help="Token file.")],
    *,
    federation: Annotated[
        Path, typer.Option("--federation", help="The federation certificate (federation.crt).")
    ],
) -> None:
    """Verify a token: its identity, role, id, expiry, and whether it is valid now.

    The revocation list is revoked.json next to the federation certificate, when present;
    the exit code is 1 when the token is expired, revoked or not of this federation."""
    data = _read(token, "token")
    verifier = _guard(lambda: TokenVerifier(_read(federation, "federation certificate")), 2)
    revoked_path = federation.parent / REVOKED
    if revoked_path.exists():
        listed = _read(revoked_path, "revocation list")
        try:
            verifier.update_revocations(Revocations.from_bytes(listed))
        except AuthError as exc:
            raise fail(1, f"{revoked_path}: {exc}") from None
    try:
        member = verifier.examine(data)
    except AuthError as exc:
        raise fail(1, f"{token}: {exc}") from None
    _describe(member)
    if revoked_path.exists():
        entries = _entries(len(verifier.revocations.entries))
        typer.echo(f"revocation list: {revoked_path} ({entries})")
    else:
        typer.echo(f"revocation list: none ({revoked_path} not found)")
    try:
        verifier.member(data)
    except AuthError as exc:
        typer.echo(f"status: {_STATUS.get(exc.reason, 'not valid')}")
        raise fail(1, str(exc)) from None
    typer.echo("status: valid")
