"""A headless browser for the tests that look at the report as a user would (tests/downstream/report/test_browser.py,
tests/workflow/test_workflow_e2e.py): Chromium's DOM dump after the page's scripts ran.

Where none is installed the test skips with the reason; ``SEAS_REQUIRE_BROWSER=1`` (set by .ci/run when it installed
Debian's chromium) makes that a failure instead.
"""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def browser() -> str:
    exe = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if exe is None:
        reason = f"no headless browser ({', '.join(BROWSERS)}) on PATH; .ci/run installs Debian's chromium as root"
        if os.environ.get("SEAS_REQUIRE_BROWSER") == "1":
            pytest.fail(f"SEAS_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    return exe


def dump_dom(exe: str, url: str, tmp_path, budget_ms: int = 5000) -> str:
    """The DOM of ``url`` once loaded (scripts given ``budget_ms`` of virtual time to render)."""
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
           f"--user-data-dir={tmp_path / 'profile'}", f"--virtual-time-budget={budget_ms}", "--dump-dom", url]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout
