"""``fltorrent new DIR``: a small runnable project for the user to edit (``templates/``): a
model module, a data module and ``fltorrent.yaml`` naming them by import string."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fltorrent.errors import ConfigError

FILES = ("model.py", "data.py", "fltorrent.yaml")


def write_project(directory: Path) -> list[Path]:
    """Write the template into ``directory`` (created; refused if it holds anything)."""
    try:
        if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
            raise ConfigError(f"{directory} exists and is not an empty directory")
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        for name in FILES:
            text = (resources.files("fltorrent") / "templates" / name).read_text()
            (directory / name).write_text(text)
            written.append(directory / name)
    except OSError as exc:
        raise ConfigError(
            f"cannot write the project in {directory}: {exc.strerror or exc}"
        ) from None
    return written
