"""Shared fixtures: headless rendering, a private outputs folder, normalization constants, the
browser of the browser tests."""

import os

import pytest

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")


@pytest.fixture(autouse=True)
def _private_outputs(tmp_path, monkeypatch):
    """Every test writes its outputs under its own temporary folder, never in outputs/."""
    monkeypatch.setenv("DQN_COURSE_OUTPUT_DIR", str(tmp_path / "outputs"))
    monkeypatch.delenv("DQN_COURSE_MODE", raising=False)


@pytest.fixture(scope="session")
def obs_norm():
    from helpers.normalization import compute_norm_constants

    return compute_norm_constants(num_iter=100, seed=0)


@pytest.fixture(scope="module")
def playwright_api():
    """Playwright's sync API; a failure when it or Chromium is missing (only under CI here)."""
    from chromium import missing, skip_without_browser, sync_playwright

    if missing():
        pytest.fail(f"{skip_without_browser()} (CI is set: not skipped)", pytrace=False)
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def browser(playwright_api):
    """Headless Chromium, closed after the module's tests."""
    from chromium import CHROMIUM, CHROMIUM_ARGS

    browser = playwright_api.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    try:
        yield browser
    finally:
        browser.close()
