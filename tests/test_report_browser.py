"""report.html in a real browser: headless Chromium (Debian's /usr/bin/chromium) opens the page
of a tiny search offline, logs no console message, has every chart, and paints something.

Skipped without Chromium, unless AUTOTL_REQUIRE_BROWSER is set (`.ci/run` installs Chromium
and sets it, so a missing browser fails CI). Chromium is driven from its command line: with
``--enable-logging=stderr`` every console message (a script error, a Content-Security-Policy
violation such as a blocked remote file) is one ``INFO:CONSOLE`` line on stderr.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from test_html_report import CHARTS, SECTIONS, Page, tiny_search

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None and os.environ.get("AUTOTL_REQUIRE_BROWSER"):
    raise RuntimeError("AUTOTL_REQUIRE_BROWSER is set but no chromium is installed: apt-get install chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium (apt-get install chromium)")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
         "--host-resolver-rules=MAP * ~NOTFOUND",  # offline: no host name resolves
         "--enable-logging=stderr", "--v=0"]


def chromium(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def console_messages(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


@pytest.fixture(scope="module")
def report(tmp_path_factory, tiny_model_dir) -> Path:
    return tiny_search(tmp_path_factory.mktemp("browser-search"), tiny_model_dir) / "report.html"


def test_console_messages_are_seen(tmp_path):
    """The check below can fail: a page breaking the report's own policy is reported."""
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><head><meta http-equiv="Content-Security-Policy" '
                    "content=\"default-src 'none'\"></head><body><img src=\"https://example.com/x.png\">"
                    "<p>text</p></body></html>")
    messages = console_messages(chromium(page, tmp_path / "profile", "--dump-dom").stderr)
    assert any("Content Security Policy" in m for m in messages), messages


def test_the_page_loads_without_console_messages_with_every_chart(report, tmp_path):
    proc = chromium(report, tmp_path / "profile", "--dump-dom")
    assert console_messages(proc.stderr) == []
    dom = Page(proc.stdout)
    assert set(SECTIONS) <= dom.ids("section")
    assert {"chart-pareto", "chart-curves", "chart-confusion"} <= dom.ids("svg")
    # three trials: importances are a chart or the sentence saying why not
    assert CHARTS[2] in dom.ids("svg") or "cannot be computed" in "".join(dom.text)


def test_the_screenshot_is_not_blank(report, tmp_path):
    from matplotlib.image import imread

    shot = tmp_path / "report.png"
    proc = chromium(report, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1200,3000")
    assert console_messages(proc.stderr) == []
    pixels = imread(shot)[..., :3]  # floats in [0, 1]
    assert pixels.shape[:2] == (3000, 1200)
    inked = (pixels.mean(axis=2) < 0.9).mean()  # text, tables, chart lines
    colored = (pixels.std(axis=2) > 0.1).mean()  # chart markers, the heat map, the colored row edges
    assert pixels.std() > 0.05 and inked > 0.01 and colored > 0.001, (pixels.std(), inked, colored)
