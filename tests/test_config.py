"""Course modes and hyperparameters."""

import dataclasses
import inspect
import json
import re
import sys
from pathlib import Path

import pytest
import torch

from helpers.config import (
    MODES,
    TARGETS,
    TUTORIAL_RECIPE,
    Config,
    config_for_mode,
    get_mode,
)
from helpers.machine import NOTEBOOK_SETTINGS, get_device, output_dir, setup_banner
from helpers.results import preset_of

ROOT = Path(__file__).resolve().parent.parent


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


def test_the_shipped_reference_runs_were_trained_with_each_modes_recipe():
    """results/runs/ holds the course's reference runs: each was trained with the settings its
    mode gives now, so a change of the recipe that forgets to re-run them fails here."""
    runs = sorted((ROOT / "results" / "runs").glob("*/run.json"))
    checked = set()
    for path in runs:
        run = json.loads(path.read_text())
        saved = run["config"]
        if saved["preset"] != "course":
            continue
        now = dataclasses.asdict(config_for_mode(run["mode"]))
        assert set(saved) == set(now), f"{path.parent.name}: settings {set(saved) ^ set(now)}"
        differ = {k: (v, now[k]) for k, v in saved.items() if _json(now[k]) != v}
        assert not differ, f"{path.parent.name} (saved, now): {differ}"
        checked.add((run["mode"], run["target"]))
    assert checked == {(m, t) for m in ("workshop", "full") for t in TARGETS}, checked


def _json(value):
    """A setting as JSON gives it back (tuples come back as lists)."""
    return list(value) if isinstance(value, tuple) else value


def test_the_tutorial_preset_keeps_the_tutorials_values():
    tutorial = config_for_mode("full", preset="tutorial")
    # The tutorial's "proper" values, network, loss, exploration and layout.
    assert (tutorial.total_frames, tutorial.frames_per_batch, tutorial.batch_size) == (
        500_000,
        128,
        256,
    )
    assert (tutorial.buffer_size, tutorial.init_random_frames, tutorial.n_optim) == (
        100_000,
        1_000,
        8,
    )
    assert (tutorial.network, tutorial.loss_function, tutorial.double_dqn) == (
        "three-conv",
        "l2",
        False,
    )
    assert (tutorial.eps_init, tutorial.eps_end, tutorial.annealing_frames) == (
        0.1,
        0.005,
        500_000,
    )
    assert (tutorial.lr, tutorial.tau, tutorial.max_grad_norm) == (2e-3, 0.005, 1.0)
    assert (tutorial.num_workers, tutorial.num_collectors, tutorial.pipeline) == (8, 4, "float32")


def test_the_tutorial_preset_changes_the_recipe_and_the_layout():
    for mode in MODES:
        course, tutorial = config_for_mode(mode), config_for_mode(mode, preset="tutorial")
        for name, value in TUTORIAL_RECIPE.items():
            if name not in (
                "eps_frames",
                "eval_episodes",
                "batch_size",
                "n_optim",
                "init_random_frames",
            ):
                assert getattr(tutorial, name) == value, (mode, name)
        assert tutorial.pipeline == "float32" and course.pipeline == "uint8"
        assert tutorial.network == "three-conv" and course.network == "two-conv"
        assert (course.preset, tutorial.preset) == ("course", "tutorial")
    with pytest.raises(ValueError, match="course, tutorial"):
        config_for_mode("smoke", preset="fast")


def test_a_run_reports_the_preset_it_started_from_not_a_guess_from_its_network():
    """A course run with the tutorial's network is still a course run (run.json's config)."""
    changed = config_for_mode("smoke").replace(network="three-conv").to_dict()
    assert preset_of(changed) == "course"
    assert preset_of(config_for_mode("smoke", preset="tutorial").to_dict()) == "tutorial"
    older = {k: v for k, v in changed.items() if k != "preset"}  # a run.json from before
    assert preset_of(older) == "tutorial"  # the only clue such a file has


def test_a_run_saved_with_the_older_value_names_reads_in_todays():
    """Runs saved before network and pipeline had names of their own called both "course" or
    "tutorial"; they load, resume and report as the same settings under today's names."""
    saved = dict(config_for_mode("smoke", preset="tutorial").to_dict(), betas=[0.9, 0.999])
    saved.update(network="tutorial", pipeline="tutorial")
    del saved["preset"]
    assert Config.from_dict(saved) == config_for_mode("smoke", preset="tutorial")
    course = dict(config_for_mode("smoke").to_dict(), network="course", pipeline="course")
    assert Config.from_dict(course) == config_for_mode("smoke")
    assert preset_of({"network": "course"}) == "course"
    with pytest.raises(ValueError, match="preset = 'fast' is not one of course, tutorial"):
        Config(preset="fast")


def test_epsilon_anneals_over_eps_frames_or_the_whole_run():
    assert Config(total_frames=1_000, eps_frames=300).annealing_frames == 300
    assert Config(total_frames=1_000, eps_frames=0).annealing_frames == 1_000


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
    for needle in ("mode: smoke", "torchrl 0.14.1", "device:", "total_frames=512", "preset=course"):
        assert needle in text


def test_each_notebook_banner_shows_the_settings_its_cells_use():
    """NOTEBOOK_SETTINGS lists exactly the `config.NAME` a notebook reads (the training
    notebooks, whose `train` reads every setting, show all)."""
    root = Path(__file__).resolve().parent.parent / "notebooks"
    assert sorted(NOTEBOOK_SETTINGS) == sorted(p.stem for p in root.glob("0*.ipynb"))
    for notebook, names in NOTEBOOK_SETTINGS.items():
        used = set(re.findall(r"config\.([a-z_]+)", (root / f"{notebook}.ipynb").read_text()))
        used.discard("replace")
        banner = setup_banner("smoke", notebook=notebook)
        if names == ("all",):
            assert all(f" {f.name}=" in banner for f in dataclasses.fields(Config)), notebook
        else:
            assert set(names) == used, notebook
            shown = re.findall(r" ([a-z_]+)=", banner.split("settings this notebook uses")[1])
            assert shown == list(names), notebook


def test_config_round_trips_through_json():
    import json

    config = config_for_mode("full")
    assert Config.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_settings_from_the_command_line_take_their_fields_types():
    config = Config().with_settings(
        ["n_optim=3", "lr=5e-4", "double_dqn=false", "eps_frames=1_000"]
    )
    assert (config.n_optim, config.lr, config.double_dqn, config.eps_frames) == (
        3,
        5e-4,
        False,
        1000,
    )
    assert Config().with_settings([]) == Config()
    for bad, message in [
        ("gamma", "NAME=VALUE"),
        ("learning_rate=1", "NAME=VALUE"),
        ("n_optim=1.5", "of type int"),
        ("double_dqn=yes", "of type bool"),
    ]:
        with pytest.raises(ValueError, match=message):
            Config().with_settings([bad])


def test_output_dir_makes_the_outputs_folder_but_not_a_run_folder(tmp_path, monkeypatch):
    """A run refused before it starts must leave no empty folder in outputs/: output_dir names
    the run's folder and train makes it."""
    monkeypatch.setenv("DQN_COURSE_OUTPUT_DIR", str(tmp_path / "outputs"))
    run = output_dir("td0")
    assert run == tmp_path / "outputs" / "td0"
    assert (tmp_path / "outputs").is_dir() and not run.exists()
