"""``fltorrent new``: a project the user edits runs as it is, from its own directory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fltorrent.errors import ConfigError
from fltorrent.project import FILES, write_project

SCRIPT = Path(sys.executable).with_name("fltorrent")  # the installed console script


def _fltorrent(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # The console script, as a user runs it: unlike "python -m", it does not put the current
    # directory on sys.path, and the project's import strings must resolve anyway.
    return subprocess.run(
        [str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=cwd,
    )


@pytest.mark.slow
@pytest.mark.parametrize("processes", [False, True])
def test_a_new_project_runs_from_its_directory(tmp_path: Path, processes: bool) -> None:
    made = _fltorrent("new", "proj", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    proj = tmp_path / "proj"
    assert sorted(p.name for p in proj.iterdir()) == sorted(FILES)
    args = ["run", "-c", "fltorrent.yaml", "--rounds", "3", "--progress", "none", "-o", "out"]
    run = _fltorrent(*args, *(["--processes"] if processes else []), cwd=proj)
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads((proj / "out" / "summary.json").read_text())
    assert summary["finished_peers"] == [1, 2, 3, 4]
    assert summary["final_accuracy_mean"] > 0.3  # ten classes: well above chance


def test_new_refuses_a_directory_that_holds_something(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not an empty directory"):
        write_project(tmp_path)
    assert (tmp_path / "mine.txt").read_text() == "keep me"
    refused = _fltorrent("new", str(tmp_path), cwd=tmp_path)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        f"error: {tmp_path} exists and is not an empty directory"
    ]
