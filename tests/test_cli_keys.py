"""``fltorrent keys``: a federation created, tokens issued, shown and revoked, end to end."""

from __future__ import annotations

import datetime as dt
import json
import re
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner, Result

from fltorrent.cli import app
from fltorrent.errors import AuthError
from fltorrent.security.keys import identity_of, load_key
from fltorrent.security.tokens import Authority, Revocations, TokenVerifier

runner = CliRunner()


def _run(*args: str | Path) -> Result:
    return runner.invoke(app, ["keys", *map(str, args)])


def _ok(*args: str | Path) -> str:
    result = _run(*args)
    assert result.exit_code == 0, result.output
    return result.stdout


def _error(code: int, *args: str | Path) -> str:
    """The one-line error of a command that must fail with ``code``."""
    result = _run(*args)
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit)  # not an uncaught exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    return lines[0]


def _field(output: str, name: str) -> str:
    match = re.search(rf"^{name}: (.*)$", output, re.MULTILINE)
    assert match, output
    return match.group(1)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def fed(tmp_path: Path) -> Path:
    directory = tmp_path / "fed"
    out = _ok("create", directory, "--name", "demo")
    assert "federation 'demo' created" in out
    return directory


def test_create_writes_the_federation(fed: Path) -> None:
    assert _mode(fed / "admin.key") == 0o600
    assert _mode(fed) == 0o700
    authority = Authority.load(fed)
    assert authority.name == "demo"
    revoked = Revocations.from_bytes((fed / "revoked.json").read_bytes())
    revoked.verify(authority.key.public_key())
    assert revoked.entries == []
    before = (fed / "admin.key").read_bytes()
    message = _error(2, "create", fed, "--name", "again")
    assert "already holds admin.key" in message
    assert (fed / "admin.key").read_bytes() == before


def test_member_key_token_show_revoke(fed: Path, tmp_path: Path) -> None:
    key = tmp_path / "member" / "peer.key"
    out = _ok("new-key", key)
    ident = _field(out, "identity")
    assert ident == identity_of(load_key(key))
    assert _mode(key) == 0o600
    public = key.with_name("peer.key.pub")
    assert public.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert _ok("identity", key).strip() == ident
    assert _ok("identity", public).strip() == ident
    assert "already exists" in _error(2, "new-key", key)
    assert identity_of(load_key(key)) == ident  # not replaced

    # The admin issues a token from the public key alone.
    token = tmp_path / "member" / "peer.token"
    out = _ok("issue", fed, "--key", public, "--role", "peer", "--id", "3", "--out", token)
    assert _field(out, "identity") == ident
    assert _field(out, "role") == "peer"
    assert _field(out, "id") == "3"
    serial = _field(out, "serial")
    expires = dt.datetime.strptime(_field(out, "expires"), "%Y-%m-%d %H:%M:%S UTC")
    expected = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(days=30)
    assert abs(expires - expected) < dt.timedelta(minutes=1)
    verifier = TokenVerifier((fed / "federation.crt").read_bytes())
    member = verifier.member(token.read_bytes())
    assert (member.identity, member.peer_id, str(member.serial)) == (ident, 3, serial)

    out = _ok("show", token, "--federation", fed / "federation.crt")
    assert _field(out, "status") == "valid"
    assert _field(out, "identity") == ident
    assert _field(out, "serial") == serial
    assert "0 entries" in _field(out, "revocation list")

    out = _ok("revoke", fed, "--token", token, "--reason", "laptop stolen")
    assert f"revoked identity {ident} (token serial {serial})" in out
    doc = json.loads((fed / "revoked.json").read_text())
    assert doc["revoked"] == [
        {
            "identity": ident,
            "serial": serial,
            "reason": "laptop stolen",
            "time": doc["revoked"][0]["time"],
        }
    ]
    revocations = Revocations.from_bytes((fed / "revoked.json").read_bytes())
    assert verifier.update_revocations(revocations) == {ident}
    with pytest.raises(AuthError) as info:
        verifier.member(token.read_bytes())
    assert info.value.reason == "revoked"

    result = _run("show", token, "--federation", fed / "federation.crt")
    assert result.exit_code == 1
    assert _field(result.stdout, "status") == "revoked"
    assert result.stderr.strip() == f"error: token of {ident} is revoked"

    before = (fed / "revoked.json").read_bytes()
    assert "already revoked" in _ok("revoke", fed, "--token", token)
    assert (fed / "revoked.json").read_bytes() == before


def test_issue_from_a_key_file_and_for_a_tracker(fed: Path, tmp_path: Path) -> None:
    key = tmp_path / "tracker.key"
    ident = _field(_ok("new-key", key), "identity")
    token = tmp_path / "tracker.token"
    out = _ok("issue", fed, "--key", key, "--role", "tracker", "--days", "2", "--out", token)
    assert _field(out, "role") == "tracker"
    assert _field(out, "id").startswith("none")
    member = TokenVerifier((fed / "federation.crt").read_bytes()).member(token.read_bytes())
    assert (member.identity, member.role, member.peer_id) == (ident, "tracker", None)
    assert member.not_after < dt.datetime.now(dt.UTC) + dt.timedelta(days=2, minutes=1)


def test_revoke_by_identity(fed: Path, tmp_path: Path) -> None:
    keep, drop = tmp_path / "keep.key", tmp_path / "drop.key"
    _ok("new-key", keep)
    dropped = _field(_ok("new-key", drop), "identity")
    tokens = {}
    for name, key in (("keep", keep), ("drop", drop)):
        tokens[name] = tmp_path / f"{name}.token"
        _ok("issue", fed, "--key", key, "--role", "peer", "--out", tokens[name])
    out = _ok("revoke", fed, "--identity", dropped.upper())  # hex digits in either case
    assert f"revoked identity {dropped};" in out
    entries = json.loads((fed / "revoked.json").read_text())["revoked"]
    assert [(e["identity"], "serial" in e) for e in entries] == [(dropped, False)]
    fed_cert = fed / "federation.crt"
    assert _field(_ok("show", tokens["keep"], "--federation", fed_cert), "status") == "valid"
    result = _run("show", tokens["drop"], "--federation", fed_cert)
    assert (result.exit_code, _field(result.stdout, "status")) == (1, "revoked")


def test_show_an_expired_token(fed: Path, tmp_path: Path) -> None:
    token = tmp_path / "old.token"
    authority = Authority.load(fed)
    key = Ed25519PrivateKey.generate().public_key()
    token.write_bytes(authority.issue(key, peer_id=4, valid_for=dt.timedelta(seconds=-1)))
    result = _run("show", token, "--federation", fed / "federation.crt")
    assert result.exit_code == 1
    assert _field(result.stdout, "status") == "expired"
    assert _field(result.stdout, "id") == "4"
    assert result.stderr.strip().endswith("expired")


def test_tampered_revocation_list_is_neither_used_nor_signed_again(
    fed: Path, tmp_path: Path
) -> None:
    key, token = tmp_path / "m.key", tmp_path / "m.token"
    _ok("new-key", key)
    _ok("issue", fed, "--key", key, "--role", "peer", "--out", token)
    _ok("revoke", fed, "--token", token)
    path = fed / "revoked.json"
    doc = json.loads(path.read_text())
    doc["revoked"] = []  # someone lifts the revocation
    path.write_text(json.dumps(doc))
    tampered = path.read_bytes()
    assert "not signed by the federation" in _error(
        1, "show", token, "--federation", fed / "federation.crt"
    )
    assert "refusing to sign it again" in _error(1, "revoke", fed, "--identity", "ab" * 20)
    assert path.read_bytes() == tampered


def test_token_of_another_federation(fed: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    _ok("create", other, "--name", "other")
    key, token = tmp_path / "m.key", tmp_path / "m.token"
    _ok("new-key", key)
    _ok("issue", other, "--key", key, "--role", "peer", "--out", token)
    assert "not issued by this federation" in _error(
        1, "show", token, "--federation", fed / "federation.crt"
    )
    assert "not issued by this federation" in _error(2, "revoke", fed, "--token", token)


@pytest.mark.parametrize(
    ("code", "args", "message"),
    [
        (2, ["issue", "{fed}", "--key", "{key}", "--role", "admin", "--out", "{t}"], "--role"),
        (
            2,
            ["issue", "{fed}", "--key", "{key}", "--role", "peer", "--id", "0", "--out", "{t}"],
            "--id must be between",
        ),
        (
            2,
            ["issue", "{fed}", "--key", "{key}", "--role", "peer", "--days", "0", "--out", "{t}"],
            "--days must be at least 1",
        ),
        (
            2,
            [
                "issue",
                "{fed}",
                "--key",
                "{key}",
                "--role",
                "peer",
                "--days",
                "99999",
                "--out",
                "{t}",
            ],
            "outlast the federation certificate",
        ),
        (
            2,
            ["issue", "{fed}", "--key", "{tmp}/none.key", "--role", "peer", "--out", "{t}"],
            "cannot read key file",
        ),
        (
            2,
            ["issue", "{fed}", "--key", "{fed}/federation.crt", "--role", "peer", "--out", "{t}"],
            "neither an Ed25519 key file nor a PEM public key",
        ),
        (
            2,
            ["issue", "{tmp}", "--key", "{key}", "--role", "peer", "--out", "{t}"],
            "cannot read key file",
        ),
        (
            1,
            ["issue", "{fed}", "--key", "{key}", "--role", "peer", "--out", "{tmp}/no/dir/t"],
            "No such file or directory",
        ),
        (2, ["revoke", "{fed}"], "exactly one of --token and --identity"),
        (2, ["revoke", "{fed}", "--identity", "ab" * 20, "--token", "{t}"], "exactly one of"),
        (2, ["revoke", "{fed}", "--identity", "xyz"], "--identity must be 40 hex digits"),
        (2, ["revoke", "{fed}", "--token", "{tmp}/none.token"], "cannot read token"),
        (2, ["identity", "{fed}/federation.crt"], "neither an Ed25519 key file"),
        (2, ["create", "{tmp}/long", "--name", "x" * 44], "federation name must be"),
        (1, ["show", "{key}", "--federation", "{fed}/federation.crt"], "not a token"),
        (2, ["show", "{key}", "--federation", "{tmp}/none.crt"], "cannot read federation"),
    ],
)
def test_errors_are_one_line(
    fed: Path, tmp_path: Path, code: int, args: list[str], message: str
) -> None:
    key = tmp_path / "m.key"
    _ok("new-key", key)
    names = {"fed": str(fed), "key": str(key), "t": str(tmp_path / "m.token"), "tmp": str(tmp_path)}
    line = _error(code, *(a.format(**names) for a in args))
    assert message in line
    assert not (tmp_path / "m.token").exists()


def test_key_readable_by_others_is_refused(fed: Path, tmp_path: Path) -> None:
    key = tmp_path / "m.key"
    _ok("new-key", key)
    key.chmod(0o644)
    assert "chmod 600" in _error(2, "identity", key)
    out = tmp_path / "m.token"
    assert "chmod 600" in _error(2, "issue", fed, "--key", key, "--role", "peer", "--out", out)
    (fed / "admin.key").chmod(0o640)
    assert "chmod 600" in _error(2, "revoke", fed, "--identity", "ab" * 20)
