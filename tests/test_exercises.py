"""The exercises: `make exercises` blanks every solution, and each check fails on the blank with
its message and passes on the solution (the committed notebooks run their checks under nbval).
The copies are made by nbgrader's ClearSolutions, as `make exercises` makes them."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from clitools import in_ci
from tensordict import TensorDict

from helpers import exercises
from helpers.config import config_for_mode
from helpers.envs import make_env
from helpers.models import make_model

ROOT = Path(__file__).resolve().parent.parent
NBGRADER = ROOT / ".venv" / "nbgrader"  # where `make exercises` installs nbgrader
EXERCISE_NOTEBOOKS = ("02_normalization", "03_model", "04_td0", "05_td_lambda")
CHECK_CALL = re.compile(r"^check_\w+\((\w+)", re.M)
TIME = re.compile(r"\*\*Exercise (\d) · [^*]+\*\* \(about (\d+) minutes\)")

if not (NBGRADER / "nbgrader").is_dir() and not in_ci():
    pytest.skip("exercise copies need nbgrader: run `make exercises` once", allow_module_level=True)


def cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def source(cell: dict) -> str:
    return "".join(cell["source"])


@pytest.fixture(scope="module")
def copies(tmp_path_factory) -> Path:
    """The exercise copies, made with the command `make exercises` runs."""
    out = tmp_path_factory.mktemp("exercises")
    notebooks = [str(ROOT / "notebooks" / f"{n}.ipynb") for n in EXERCISE_NOTEBOOKS]
    subprocess.run(
        [sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--output-dir", str(out)]
        + ["--Exporter.preprocessors=['nbgrader.preprocessors.ClearSolutions']", *notebooks],
        env={**os.environ, "PYTHONPATH": str(NBGRADER)},
        check=True,
        capture_output=True,
    )
    return out


def exercise_cells(path: Path) -> dict[str, tuple[str, str]]:
    """Each exercise's function name -> (the cell that defines it, the cell that checks it)."""
    found = {}
    all_cells = cells(path)
    for i, cell in enumerate(all_cells):
        for function in CHECK_CALL.findall(source(cell)):
            definition = next(source(c) for c in all_cells[:i] if f"def {function}(" in source(c))
            found[function] = (definition, source(cell))
    return found


def test_every_exercise_has_a_time_a_hint_and_a_check():
    numbers = []
    for name in EXERCISE_NOTEBOOKS:
        text = "\n".join(source(c) for c in cells(ROOT / "notebooks" / f"{name}.ipynb"))
        found = TIME.findall(text)
        assert found, f"{name} has no exercise"
        assert text.count("<summary>Hint</summary>") == len(found)
        assert len(exercise_cells(ROOT / "notebooks" / f"{name}.ipynb")) == len(found)
        numbers += [int(n) for n, _ in found]
    assert numbers == list(range(1, len(numbers) + 1))


def test_the_copies_keep_no_solution(copies):
    for name in EXERCISE_NOTEBOOKS:
        original = cells(ROOT / "notebooks" / f"{name}.ipynb")
        copy = cells(copies / f"{name}.ipynb")
        assert len(copy) == len(original)
        for before, after in zip(original, copy):
            if "### BEGIN SOLUTION" in source(before):
                assert "BEGIN SOLUTION" not in source(after)
                assert "raise NotImplementedError()" in source(after)
            else:
                assert source(after) == source(before)


def run_check(definition: str, check: str, context: dict) -> None:
    """Define the function as the notebook's cell does, then run the notebook's check cell."""
    namespace = {"torch": torch, **context}
    exec(definition, namespace)
    exec(check, namespace)


@pytest.fixture(scope="module")
def context() -> dict:
    """What notebook 04's checks read from the notebook: its model, config, a sampled batch
    (here a random one, shaped as the replay buffer returns it), a collected batch and the
    normalization constants."""
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


@pytest.mark.parametrize("name", EXERCISE_NOTEBOOKS)
def test_each_check_fails_on_the_blank_and_passes_on_the_solution(name, copies, context, capsys):
    solved = exercise_cells(ROOT / "notebooks" / f"{name}.ipynb")
    blank = exercise_cells(copies / f"{name}.ipynb")
    assert solved.keys() == blank.keys()
    for function, (definition, check) in blank.items():
        with pytest.raises(exercises.CheckFailed, match="not written yet") as failure:
            run_check(definition, check, context)
        assert str(failure.value).startswith("✗ ") and function in str(failure.value)
        run_check(*solved[function], context)
        assert capsys.readouterr().out.strip().endswith(": correct.")


@pytest.mark.parametrize(
    "got,message",
    [
        ([1.0, 2.0], "x is a list, expected a torch.Tensor"),
        (torch.zeros(2, 1), r"x has shape \(2, 1\), expected \(2,\)"),
        (torch.tensor([1, 2]), "x has dtype torch.int64, expected torch.float32"),
        (torch.tensor([1.0, 2.5]), r"x\[1\] is 2.5, expected 2 \(1 of 2 values differ\)"),
    ],
)
def test_a_wrong_answer_is_told_what_differs(got, message):
    with pytest.raises(exercises.CheckFailed, match=message):
        exercises.compare("exercise", got, torch.tensor([1.0, 2.0]), "x")
    exercises.compare("exercise", torch.tensor([1.0, 2.0 + 1e-7]), torch.tensor([1.0, 2.0]), "x")


def test_the_dueling_check_names_a_wrong_mean():
    wrong = lambda value, advantage: value + advantage - advantage.mean()  # noqa: E731
    with pytest.raises(exercises.CheckFailed, match=r"Q\[0, 0\] is .*, expected"):
        exercises.check_dueling(wrong)


def test_the_storing_check_says_to_flatten_and_to_leave_out_the_pixels(context):
    batch, obs_norm = context["batch"], context["obs_norm"]
    rows = lambda buffer, b: buffer.extend(b.exclude("pixels", ("next", "pixels")))  # noqa: E731
    with pytest.raises(exercises.CheckFailed, match=r"holds 2 items, expected 32 transitions"):
        exercises.check_store_transitions(rows, batch, obs_norm)
    floats = lambda buffer, b: buffer.extend(b.reshape(-1))  # noqa: E731
    with pytest.raises(exercises.CheckFailed, match=r"stores the float32 'pixels'"):
        exercises.check_store_transitions(floats, batch, obs_norm)
    frames = ("frames", ("next", "frames"))
    keys = lambda buffer, b: buffer.extend(b.reshape(-1).select(*frames))  # noqa: E731
    with pytest.raises(exercises.CheckFailed, match=r"the buffer has no 'action'"):
        exercises.check_store_transitions(keys, batch, obs_norm)


def test_a_gradient_step_that_does_not_clip_is_caught(context):
    def no_clip(loss_module, optim, target_updater, sample, max_grad_norm):
        loss = loss_module(sample)["loss"]
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(loss_module.parameters(), float("inf"))
        optim.step()
        optim.zero_grad()
        target_updater.step()
        return loss.item(), norm.item()

    with pytest.raises(
        exercises.CheckFailed, match=r"with SGD and max_grad_norm=0.001, step 2.s \(loss"
    ):
        exercises.check_gradient_step(
            no_clip, context["model"].actor, context["config"], context["sample"]
        )


def test_an_error_of_torch_is_shown_as_it_is_not_as_a_blank():
    def one_minus_bool(reward, next_q, next_q_target, terminated, gamma):
        return reward + gamma * (1 - terminated) * next_q_target.max(-1).values

    with pytest.raises(NotImplementedError, match="Subtraction") as error:
        exercises.check_td0_target(one_minus_bool)
    assert not isinstance(error.value, exercises.CheckFailed)
