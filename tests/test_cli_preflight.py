"""Bad input to the command line is one line and exit code 2, with nothing half-written: files
that are not YAML, ports, hosts, output directories, models too large, setups that cannot
split their data. And the small things a new user meets: --version, flags in --help, typos."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fltorrent.cli import app

runner = CliRunner()

FAST = ["--peers", "2", "--rounds", "1", "--progress", "none"]


def _refused(args: list[str], match: str) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert match in lines[0], lines[0]
    return lines[0]


def test_files_that_are_not_yaml_text(tmp_path: Path) -> None:
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00federate: 1")
    _refused(["config", "validate", str(binary)], "is not UTF-8 text (byte 0xff at offset 0)")
    deep = tmp_path / "deep.yaml"
    deep.write_text("a: " + "[" * 5000 + "]" * 5000)
    _refused(["config", "validate", str(deep)], "deep.yaml is nested too deeply")
    deep.write_text("a: " + "{b: " * 3000 + "1" + "}" * 3000)
    _refused(["config", "validate", str(deep)], "is nested too deeply")
    _refused(["config", "validate", str(tmp_path)], "cannot read config file")


def test_a_typo_gets_a_suggestion() -> None:
    _refused(["config", "show", "--set", "bittorent.timeout=3"], "did you mean 'bittorrent'?")
    _refused(["config", "show", "--set", "bittorrent.timout=3"], "did you mean 'timeout'?")
    _refused(
        ["config", "show", "--set", "chunk.importance_config.snip.batch_sise=3"],
        "chunk.importance_config.snip.batch_sise: unknown key; did you mean 'batch_size'?",
    )
    line = _refused(["config", "show", "--set", "federate.zzz=3"], "federate.zzz: unknown key")
    assert "did you mean" not in line


def test_version_and_flags_in_help() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("fltorrent ")
    help_text = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "120"}).output
    line = next(x for x in help_text.splitlines() if "--processes" in x)
    assert "<bool>" not in line and "Run each peer" in line


def test_ports_out_of_range() -> None:
    result = runner.invoke(app, ["tracker", "--port", "70000", "--federation", "x"])
    assert result.exit_code == 2 and "65535" in result.output
    _refused(
        ["peer", "--tracker", "127.0.0.1:70000", "--federation", "f", "--key", "k", "--token", "t"],
        "--tracker must be HOST:PORT (port 0-65535)",
    )
    _refused(["run", "--set", "runtime.tracker_port=70000"], "runtime.tracker_port")


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda p: (p / "afile").write_text("x") and p / "afile", "is a file, not a directory"),
        (lambda p: (p / "afile").write_text("x") and p / "afile" / "out", "Not a directory"),
        (lambda p: Path("/proc/fltorrent-test/out"), "cannot create it"),
    ],
)
def test_output_directories_that_cannot_be(tmp_path: Path, make: object, match: str) -> None:
    out = make(tmp_path)  # type: ignore[operator]
    _refused(["run", *FAST, "-o", str(out)], match)


def test_an_empty_output_path() -> None:
    _refused(["run", *FAST, "-o", ""], "a path option is empty")
    _refused(["run", *FAST, "--set", "output.dir=''"], "output.dir")


def test_a_full_disk_is_refused_before_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    real = shutil.disk_usage

    def full(path: object) -> object:
        return real(path)._replace(free=4096)  # type: ignore[arg-type]

    monkeypatch.setattr(shutil, "disk_usage", full)
    _refused(["run", *FAST, "-o", str(tmp_path / "out")], "MB free, this run writes about")
    assert not (tmp_path / "out").exists()


def test_failures_known_before_the_run_write_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _refused(
        ["run", "--rounds", "1", "--set", "federate.client_num=20000", "-o", str(out)],
        "cannot split 8000 samples over 20000 clients",
    )
    _refused(["run", *FAST, "--set", "model.hidden=1000000", "-o", str(out)], "model.hidden:")
    _refused(["run", *FAST, "--set", "runtime.host=10.255.255.1", "-o", str(out)], "runtime.host")
    _refused(
        ["run", *FAST, "--set", "runtime.host=nohost.invalid", "-o", str(out)],
        "runtime.host: cannot resolve 'nohost.invalid'",
    )
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        _refused(
            ["run", *FAST, "--set", f"runtime.tracker_port={port}", "-o", str(out)],
            f"runtime.tracker_port: port {port} on 127.0.0.1 is in use",
        )
    assert not out.exists()


def test_fltorrent_keys_accepted_or_refused_with_a_reason() -> None:
    result = runner.invoke(
        app,
        [
            "config",
            "show",
            "--set",
            "topology.timeout=30",
            "--set",
            "topology.max_connection_attempts=5",
            "--set",
            "chunk.importance_config.snip.use_cached=true",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "max_connection_attempts: 5" in result.output and "use_cached: true" in result.output
    _refused(
        ["config", "show", "--set", "bittorrent.enable=false"],
        "bittorrent.enable: false is not supported",
    )


def test_dashboard_takes_an_optional_port() -> None:
    from fltorrent.cli import optional_port

    assert optional_port(["run", "--dashboard", "8080", "--peers", "3"]) == [
        "run",
        "--dashboard",
        "--dashboard-port",
        "8080",
        "--peers",
        "3",
    ]
    assert optional_port(["run", "--dashboard", "--peers", "3"]) == [
        "run",
        "--dashboard",
        "--peers",
        "3",
    ]
    assert optional_port(["run", "--peers", "8080"]) == ["run", "--peers", "8080"]
