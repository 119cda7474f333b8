"""environment.yml and pyproject.toml name the same packages at the same versions."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] + project["optional-dependencies"]["dev"]
    return dict(spec.split("==") for spec in specs)


def conda_pins() -> dict[str, str]:
    text = (ROOT / "environment.yml").read_text()
    pins = re.findall(r"^\s+- ([A-Za-z0-9_.\-\[\]]+)==([^\s#]+)", text, flags=re.M)
    return dict(pins)


def test_every_dependency_is_pinned_exactly():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for spec in project["dependencies"] + project["optional-dependencies"]["dev"]:
        assert "==" in spec, spec


def test_environment_yml_matches_pyproject():
    assert conda_pins() == pyproject_pins()


def test_environment_yml_installs_the_project_and_python_311():
    text = (ROOT / "environment.yml").read_text()
    assert "- python=3.11" in text
    assert "- -e ." in text
    assert "conda-forge" in text


def test_the_stack_of_the_course():
    pins = pyproject_pins()
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"
    assert pins["torchrl"] == "0.14.1" and pins["tensordict"] == "0.14.3"
    assert pins["gymnasium[classic-control]"] == "1.4.0"


def test_every_module_says_which_notebook_teaches_it():
    for module in sorted((ROOT / "helpers").rglob("*.py")):
        if module == ROOT / "helpers" / "__init__.py":  # (its docstring is the map of them all)
            continue
        first = module.read_text().split("\n", 1)[0].removeprefix('"""')
        name = str(module.relative_to(ROOT))
        assert first.startswith(("Notebook", "Every notebook", "No notebook")), name
        if module.parent.name in ("run", "commands"):  # the tooling's subpackages
            assert first.startswith("No notebook"), name
