"""Shared fixtures: headless rendering, a private outputs folder, normalization constants, the
exercises' inputs, the browser of the browser tests."""

import os

import pytest
from clitools import stop_leftovers

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")


@pytest.fixture(autouse=True)
def _private_outputs(tmp_path, monkeypatch):
    """Every test writes its outputs under its own temporary folder, never in outputs/."""
    monkeypatch.setenv("DQN_COURSE_OUTPUT_DIR", str(tmp_path / "outputs"))
    monkeypatch.delenv("DQN_COURSE_MODE", raising=False)


@pytest.fixture(autouse=True)
def _no_command_left_running():
    """After each test, whatever commands it started and left running are killed."""
    yield
    stop_leftovers()


@pytest.fixture(scope="session")
def obs_norm():
    from helpers.normalization import compute_norm_constants

    return compute_norm_constants(num_iter=100, seed=0)


@pytest.fixture(scope="module")
def exercise_inputs() -> dict:
    """What notebook 04's checks read from the notebook: its model, config, a sampled batch
    (here a random one, shaped as the replay buffer returns it), a collected batch and the
    normalization constants."""
    import torch
    from tensordict import TensorDict

    from helpers.config import config_for_mode
    from helpers.envs import make_env
    from helpers.models import make_model

    config = config_for_mode("smoke")
    obs_norm = {"loc": torch.zeros(4, 1, 1), "scale": torch.ones(4, 1, 1)}
    env = make_env(obs_norm=obs_norm, seed=0)
    model = make_model(env, config)
    env.close()
    b = config.batch_size
    flags = {k: torch.zeros(b, 1, dtype=torch.bool) for k in ("done", "terminated", "truncated")}
    sample = TensorDict(
        {
            "pixels": torch.randn(b, 4, 64, 64),
            "action": torch.nn.functional.one_hot(torch.randint(0, 2, (b,)), 2),
            "next": {"pixels": torch.randn(b, 4, 64, 64), "reward": torch.rand(b, 1), **flags},
        },
        batch_size=[b],
    )
    envs = make_env(obs_norm=obs_norm, num_workers=2, seed=1)
    batch = envs.rollout(16, break_when_any_done=False)  # [workers, time], as collected
    envs.close()
    return {
        "model": model,
        "config": config,
        "sample": sample,
        "batch": batch,
        "obs_norm": obs_norm,
    }


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
