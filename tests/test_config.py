"""Course modes and hyperparameters."""

import dataclasses
import inspect
import sys

import pytest
import torch

from helpers.config import MODES, Config, config_for_mode, get_device, get_mode, setup_banner


def test_default_mode_is_workshop():
    assert get_mode() == "workshop"


def test_mode_from_environment(monkeypatch):
    monkeypatch.setenv("DQN_COURSE_MODE", "smoke")
    assert get_mode() == "smoke"
    assert config_for_mode().total_frames == config_for_mode("smoke").total_frames


def test_unknown_mode_lists_the_valid_ones(monkeypatch):
    monkeypatch.setenv("DQN_COURSE_MODE", "turbo")
    with pytest.raises(ValueError) as err:
        get_mode()
    assert "turbo" in str(err.value)
    for mode in MODES:
        assert mode in str(err.value)


def test_full_mode_has_the_tutorials_proper_values():
    full = config_for_mode("full")
    assert (full.total_frames, full.frames_per_batch, full.batch_size) == (500_000, 128, 256)
    assert (full.num_workers, full.num_collectors, full.buffer_size) == (8, 4, 100_000)
    assert full.init_random_frames == 1_000


def test_modes_grow_from_smoke_to_full():
    frames = [config_for_mode(m).total_frames for m in MODES]
    assert frames == sorted(frames) and len(set(frames)) == 3


def test_every_field_has_a_comment():
    source = inspect.getsource(sys.modules[Config.__module__])
    for field in dataclasses.fields(Config):
        line = next(
            line for line in source.splitlines() if line.strip().startswith(field.name + ":")
        )
        assert "#" in line, f"{field.name} has no comment"


def test_replace_rejects_unknown_fields():
    with pytest.raises(TypeError):
        Config().replace(learning_rate=1.0)


def test_device_override():
    assert get_device("cpu") == torch.device("cpu")


def test_banner_names_mode_versions_and_settings():
    text = setup_banner("smoke")
    for needle in ("mode: smoke", "torchrl 0.14.1", "device:", "total_frames", "512"):
        assert needle in text


def test_config_round_trips_through_json():
    import json

    config = config_for_mode("full")
    assert Config.from_dict(json.loads(json.dumps(config.to_dict()))) == config
