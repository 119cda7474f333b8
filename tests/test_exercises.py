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

from helpers import exercises, learning_checks

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


def test_every_exercise_has_a_time_two_hints_and_a_check():
    """Each statement has, in its cell, two folded hints: the idea, then the API."""
    numbers = []
    for name in EXERCISE_NOTEBOOKS:
        all_cells = cells(ROOT / "notebooks" / f"{name}.ipynb")
        text = "\n".join(source(c) for c in all_cells)
        found = TIME.findall(text)
        assert found, f"{name} has no exercise"
        for statement in (source(c) for c in all_cells if TIME.search(source(c))):
            assert statement.count("<details>") == 2, statement[:60]
            idea = statement.index("<details><summary>Hint 1 · the idea</summary>")
            assert idea < statement.index("<details><summary>Hint 2 · the API</summary>")
        assert text.count("<summary>Hint") == 2 * len(found)
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


@pytest.mark.parametrize("name", EXERCISE_NOTEBOOKS)
def test_each_check_fails_on_the_blank_and_passes_on_the_solution(
    name, copies, exercise_inputs, capsys
):
    solved = exercise_cells(ROOT / "notebooks" / f"{name}.ipynb")
    blank = exercise_cells(copies / f"{name}.ipynb")
    assert solved.keys() == blank.keys()
    for function, (definition, check) in blank.items():
        with pytest.raises(exercises.CheckFailed, match="not written yet") as failure:
            run_check(definition, check, exercise_inputs)
        assert str(failure.value).startswith("✗ ") and function in str(failure.value)
        run_check(*solved[function], exercise_inputs)
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


def test_an_error_of_torch_is_shown_as_it_is_not_as_a_blank():
    def one_minus_bool(reward, next_q, next_q_target, terminated, gamma):
        return reward + gamma * (1 - terminated) * next_q_target.max(-1).values

    with pytest.raises(NotImplementedError, match="Subtraction") as error:
        learning_checks.check_td0_target(one_minus_bool)
    assert not isinstance(error.value, exercises.CheckFailed)
