"""Course modes and hyperparameters."""

import dataclasses
import inspect
import sys

import pytest
import torch

from helpers.config import (
    MODES,
    SYSTEM_FIELDS,
    Config,
    config_for_mode,
    get_device,
    get_mode,
    setup_banner,
)


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
    assert (full.buffer_size, full.init_random_frames) == (100_000, 1_000)
    tutorial = config_for_mode("full", preset="tutorial")
    assert (tutorial.num_workers, tutorial.num_collectors, tutorial.pipeline) == (8, 4, "tutorial")
    assert tutorial.replace(**{k: getattr(full, k) for k in SYSTEM_FIELDS}) == full


def test_the_tutorial_preset_changes_only_the_pipeline_and_layout():
    for mode in MODES:
        course, tutorial = config_for_mode(mode), config_for_mode(mode, preset="tutorial")
        changed = {k for k, v in course.to_dict().items() if tutorial.to_dict()[k] != v}
        assert changed <= set(SYSTEM_FIELDS) and "pipeline" in changed
    with pytest.raises(ValueError, match="course, tutorial"):
        config_for_mode("smoke", preset="fast")


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
