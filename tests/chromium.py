"""Debian's Chromium driven by Playwright: what the browser tests (JupyterLab, the site) share."""

import os
from pathlib import Path

import pytest
from clitools import in_ci

CHROMIUM = Path("/usr/bin/chromium")
# Headless, and no background connections: the machine's network is closed, and the tests
# check that a page asks for nothing off localhost.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
INSTALL_HINT = "apt-get install chromium && pip install -e '.[dev]'"

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:
    expect = sync_playwright = None


def missing() -> list[str]:
    """What a browser test lacks: the playwright package, Chromium."""
    return [
        what
        for what, present in [
            ("the playwright package", sync_playwright is not None),
            (f"Chromium at {CHROMIUM}", CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)),
        ]
        if not present
    ]


def skip_without_browser() -> str:
    """Skip the calling test module when the browser is missing, except under CI; return the
    message a test fails with there."""
    message = f"browser test needs {' and '.join(missing())}: {INSTALL_HINT}"
    if missing() and not in_ci():  # one line in `make test` (pytest -rs); CI must run it
        pytest.skip(message, allow_module_level=True)
    return message
