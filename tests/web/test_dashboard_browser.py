"""The dashboard in a real headless browser (Debian's chromium driven by playwright), following
a real run of ``fltorrent run --dashboard`` live.

In CI (``CI=true``) a missing chromium or playwright fails this test (``.ci/run`` installs
chromium); elsewhere it is skipped with the reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Three peers, ten rounds of about 0.4 s each here: long enough to watch the rounds go by.
RUN = [
    *("--peers", "3", "--rounds", "10", "--progress", "none"),
    *("--set", "data.num_samples=6000", "--set", "train.local_epochs=2"),
    *("--set", "output.save_model=false", "--set", "bittorrent.seed_grace=1"),
]


def _need(what: str, present: bool) -> None:
    if present:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must have {what} for the dashboard's browser test (.ci/run installs it)")
    pytest.skip(f"{what} is missing (apt-get install chromium; pip install playwright)")


@pytest.mark.slow
def test_the_dashboard_follows_a_run_live(tmp_path: Path) -> None:
    _need(str(CHROMIUM), CHROMIUM.exists())
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need("the playwright package", False)
        raise
    out = tmp_path / "run"
    log = tmp_path / "stderr.txt"
    with log.open("w") as stderr:
        run = subprocess.Popen(
            [sys.executable, "-m", "fltorrent", "run", *RUN, "--dashboard", "-o", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                url = _dashboard_url(run, out / "dashboard.url", log)
                page = browser.new_page()
                page.goto(url)
                page.wait_for_selector('#peers tr[data-peer="3"]', timeout=20_000)
                rounds: list[int] = []
                connections: set[str] = set()
                deadline = time.monotonic() + 40
                while time.monotonic() < deadline:
                    rounds.append(int(page.inner_text("#round")))
                    connections.add(page.evaluate("document.body.dataset.conn || ''"))
                    if page.inner_text("#state") == "finished" or run.poll() is not None:
                        break
                    page.wait_for_timeout(100)
                assert rounds == sorted(rounds), rounds
                assert len(set(rounds)) >= 2, f"the round shown never advanced: {rounds}"
                assert "live" in connections  # updated by server-sent events
                assert page.locator("#peers tbody tr").count() == 3
                assert page.locator("#topology g[data-peer]").count() == 3
                assert page.locator("#topology line").count() == 3  # three peers, all linked
                assert page.locator("#acc-mean-line").count() == 1
                page.screenshot(path=str(tmp_path / "dashboard.png"))
            finally:
                browser.close()
        assert run.wait(60) == 0, log.read_text()
    finally:
        if run.poll() is None:
            run.kill()
            run.wait(10)
    assert f"dashboard: {url}" in log.read_text()


def _dashboard_url(run: subprocess.Popen[bytes], path: Path, log: Path) -> str:
    """The URL the run wrote to ``dashboard.url`` (within 30 s of its start)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if path.is_file() and (text := path.read_text().strip()):
            return text
        assert run.poll() is None, f"the run ended before serving its dashboard: {log.read_text()}"
        time.sleep(0.05)
    raise AssertionError("no dashboard.url after 30 s")
