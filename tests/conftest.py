"""Shared fixtures: headless rendering, a private outputs folder, normalization constants."""

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
