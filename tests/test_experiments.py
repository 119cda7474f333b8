"""Notebook 07: the ablations, their table and bands, a room's runs pooled, and the find-the-bug
check, against hand-made run folders and the committed reference runs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import runfolders

from helpers.config import SYSTEM_FIELDS, config_for_mode
from helpers.diagnosis import (
    BROKEN_DIR,
    CASES,
    HEALTHY_RUN,
    SETTINGS,
    SIGNATURES,
    SUSPECTS,
    case_facts,
    case_log,
    check_diagnosis,
)
from helpers.experiments import (
    ABLATIONS,
    ABLATIONS_DIR,
    RECIPE_RUNS_DIR,
    ablation_config,
    ablation_of,
    ablation_table,
    changes_from_recipe,
    pool_runs,
)
from helpers.run.logs import read_log

ROOT = Path(__file__).resolve().parent.parent
HEALTHY = HEALTHY_RUN / "log.csv"
README = ROOT / "README.md"


def changed(config, mode="workshop") -> dict:
    recipe = config_for_mode(mode).to_dict()
    return {k: v for k, v in config.to_dict().items() if v != recipe[k]}


def test_every_ablation_is_one_setting_of_the_recipe():
    for name, ablation in ABLATIONS.items():
        key = ablation.setting.partition("=")[0]
        assert list(changed(ablation_config(name, "workshop"))) == [key], name
    with pytest.raises(ValueError, match="Unknown ablation 'huber'"):
        ablation_config("huber")


def test_ablation_of_names_a_runs_ablation_whatever_its_mode_or_layout():
    for mode in ("smoke", "workshop"):
        for name in ABLATIONS:
            config = ablation_config(name, mode).replace(num_workers=4)  # layout: not counted
            assert ablation_of({"mode": mode, "config": config.to_dict()}) == name
    recipe = config_for_mode("workshop")
    assert ablation_of({"mode": "workshop", "config": recipe.to_dict()}) is None
    two = recipe.replace(double_dqn=False, tau=1.0).to_dict()
    assert ablation_of({"mode": "workshop", "config": two}) is None
    assert "num_workers" in SYSTEM_FIELDS


def write_run(folder: Path, config: dict, seed: int, evals: list[float], final: list[int]):
    """A workshop TD(lambda) run folder, evaluated every 5,000 frames."""
    run = {"target": "td-lambda", "mode": "workshop", "seed": seed, "config": config}
    rows = [
        {"batch": i, "frames": 5_000 * i + 32, "eval_mean": mean, "seconds": 60.0 * i}
        for i, mean in enumerate(evals)
    ]
    runfolders.write_run(folder, run, rows, final, 540 + 60 * seed)


def test_ablation_table_reads_the_runs_by_hand(tmp_path):
    config = ablation_config("one-frame", "workshop").to_dict()
    write_run(tmp_path / "one-frame" / "a", config, 4, [10, 30], [20, 40])  # mean 30
    write_run(tmp_path / "one-frame" / "b", config, 3, [10, 50], [50, 50])  # mean 50
    recipe = config_for_mode("workshop").to_dict()
    write_run(tmp_path / "recipe" / "r", recipe, 3, [10, 500], [500])
    from helpers.results import load_runs

    rows = ablation_table(tmp_path, load_runs(tmp_path / "recipe")).splitlines()
    assert rows[2] == "| the recipe (none) | `—` | 3 | 500.0 | 500.0 | 12.0–12.0 |"
    one = next(r for r in rows if "frames_seen=1" in r)
    assert one.endswith("| `frames_seen=1` | 3, 4 | 30.0, 50.0 | 40.0 | 12.0–13.0 |")
    assert sum("not run yet" in r for r in rows) == len(ABLATIONS) - 1


def test_pool_draws_each_run_over_its_ablations_band(tmp_path):
    room = tmp_path / "room"
    for name, learner in (("no-double-dqn", "ana"), ("no-double-dqn", "bo"), ("one-frame", "cy")):
        config = ablation_config(name, "workshop").to_dict()
        write_run(room / learner / f"ablation-{name}", config, 0, [10, 200], [300])
    recipe = config_for_mode("workshop")
    write_run(room / "dee" / "td-lambda", recipe.to_dict(), 0, [10, 400], [450])
    two = recipe.replace(double_dqn=False, tau=1.0).to_dict()  # two changes: no band of its own
    write_run(room / "eve" / "mine", two, 0, [10, 100], [90])
    fig = pool_runs(room, tmp_path / "room.png")
    titles = sorted(ax.get_title() for ax in fig.axes)
    assert titles == [
        "one frame instead of a stack of four: 1 run(s)",
        "other changes (no reference band): 1 run(s)",
        "plain DQN's max instead of double DQN: 2 run(s)",
        "the recipe: 1 run(s)",
    ]
    recipe_panel = next(ax for ax in fig.axes if ax.get_title().startswith("the recipe"))
    assert "dee/td-lambda" in [line.get_label() for line in recipe_panel.lines]
    assert (tmp_path / "room.png").stat().st_size > 10_000
    with pytest.raises(ValueError, match=r"No TD\(lambda\) run folders"):
        pool_runs(tmp_path / "room" / "ana" / "nothing-here")


def test_pool_from_the_command_line(tmp_path):
    config = ablation_config("lambda-0", "workshop").to_dict()
    write_run(tmp_path / "room" / "ana", config, 0, [10, 200], [300])
    figure = tmp_path / "room.png"
    args = ["results", "--pool", str(tmp_path / "room"), "--figure", str(figure)]
    done = subprocess.run(
        [sys.executable, "-m", "helpers", *args], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert figure.is_file() and "| ablation | setting |" in done.stdout
    missing = [sys.executable, "-m", "helpers", "results", "--pool", str(tmp_path / "none")]
    done = subprocess.run(missing, capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2 and "no such folder" in done.stderr


def test_the_readme_shows_the_ablation_table_as_the_runs_give_it():
    assert ablation_table() in README.read_text()


def test_committed_ablation_runs_are_the_setting_they_are_filed_under():
    folders = [p for p in ABLATIONS_DIR.iterdir() if p.is_dir()]
    assert RECIPE_RUNS_DIR in folders and len(folders) > 1, "no ablation runs committed"
    for folder in folders:
        runs = sorted(folder.glob("*/run.json"))
        assert len(runs) >= 3, f"{folder.name}: {len(runs)} runs, a band needs 3 seeds"
        for run_file in runs:
            run = json.loads(run_file.read_text())
            if folder == RECIPE_RUNS_DIR:  # the recipe itself, nothing changed
                assert changes_from_recipe(run) == {}, run_file
            else:
                assert ablation_of(run) == folder.name, run_file


def test_diagnosis_answers_explain_the_signature():
    for letter, fault in CASES.items():
        assert fault in SUSPECTS and fault in SIGNATURES and fault in SETTINGS
        right = check_diagnosis(letter, fault)
        signature = SIGNATURES[fault].format(**case_facts(case_log(letter), read_log(HEALTHY)))
        assert right.startswith(f"Case {letter}: yes") and right.endswith(signature)
        wrong = next(s for s in SUSPECTS if s != fault)
        assert check_diagnosis(letter, wrong).startswith(f"Case {letter}: not {wrong}")
        assert "write your answer" in check_diagnosis(letter, None)
    with pytest.raises(ValueError, match="Unknown suspect 'gamma'"):
        check_diagnosis("A", "gamma")
    with pytest.raises(ValueError, match="Unknown case 'D'"):
        check_diagnosis("D", "next-action")


def test_each_broken_run_was_trained_with_its_planted_fault():
    for letter, fault in CASES.items():
        (command_file,) = (BROKEN_DIR / fault).glob("*/command.json")
        command = json.loads(command_file.read_text())
        assert command["rc"] == 0
        assert f"--set {SETTINGS[fault].split()[0]}" in command["command"]
        assert "--mode workshop" in command["command"]
        assert case_log(letter)[-1]["frames"] == config_for_mode("workshop").total_frames


def test_measured_answer_pairs_each_seed_with_the_recipes(tmp_path):
    config = ablation_config("squared-error", "workshop").to_dict()
    write_run(tmp_path / "squared-error" / "a", config, 4, [10, 50], [50])
    write_run(tmp_path / "squared-error" / "b", config, 3, [10, 500], [500, 490])
    from helpers.experiments import measured_answer

    # the recipe's committed runs: seed 3 scored 496.2, seed 4 500.0, the lowest of 8 490.1
    assert measured_answer("squared-error", tmp_path) == (
        "Measured with loss_function=l2, over 1/2 test episodes: seed 3: 495.0 (recipe 496.2); "
        "seed 4: 50.0 (recipe 500.0). 1 of 2 below the lowest of the recipe's 8 runs (490.1)."
    )
    assert "no reference runs of squared-error yet" in measured_answer("squared-error", ROOT)


def test_the_overview_draws_one_panel_per_measured_ablation(tmp_path):
    from helpers.experiments import plot_all_ablations

    for name in ("one-frame", "no-double-dqn"):
        config = ablation_config(name, "workshop").to_dict()
        write_run(tmp_path / name / "a", config, 3, [10, 50], [50])
    fig = plot_all_ablations(tmp_path)
    titles = [ax.get_title() for ax in fig.axes if ax.axison]
    assert titles == [ABLATIONS["no-double-dqn"].title, ABLATIONS["one-frame"].title]
    with pytest.raises(ValueError, match="No ablation has reference runs"):
        plot_all_ablations(tmp_path / "empty")


def test_case_facts_by_hand(tmp_path):
    nan = float("nan")
    rows = [
        {"value": 2.0, "eval_mean": 20.0, "train_episode_length": 10.0},
        {"value": 12.0, "eval_mean": nan, "train_episode_length": nan},
        {"value": 8.0, "eval_mean": 35.0, "train_episode_length": 30.0},
    ]
    healthy = [{"value": 9.0, "eval_mean": 500.0, "train_episode_length": 400.0}]
    facts = case_facts(rows, healthy)
    assert facts == pytest.approx(
        {
            "ceiling": 10.0,  # 0.1 / (1 - 0.99)
            "max_value": 12.0,
            "last_value": 22 / 3,
            "best_eval": 35.0,
            "last_eval": 35.0,
            "last_length": 20.0,
            "healthy_best": 500.0,
            "healthy_length": 400.0,
        }
    )
