"""book/site_builder.py: when `make book` reuses the executed notebooks of outputs/, and how it
turns the README into the site's landing page."""

import json
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "book"))
import site_builder  # noqa: E402


@pytest.fixture
def executed(tmp_path, monkeypatch):
    """A course of two notebooks, both recorded as executed in workshop mode in `tmp_path`/out."""
    sources = tmp_path / "notebooks"
    sources.mkdir()
    notebooks = []
    for name in ("01_a.ipynb", "02_b.ipynb"):
        (sources / name).write_text(json.dumps({"cells": [], "name": name}))
        notebooks.append(sources / name)
    monkeypatch.setattr(site_builder, "NOTEBOOKS", notebooks)
    out = tmp_path / "out"
    out.mkdir()
    for nb in notebooks:
        shutil.copy(nb, out / nb.name)
        site_builder.record(nb, "workshop", out)
    return out, notebooks


def test_executed_copies_are_reused_only_when_current(executed):
    out, notebooks = executed
    stamp = site_builder.current(out, "workshop")
    assert stamp is not None and set(stamp["notebooks"]) == {"01_a", "02_b"}
    assert stamp["date"] and "cores" in stamp["machine"]
    assert site_builder.current(out, "smoke") is None  # another mode


def test_an_edited_notebook_makes_the_copies_stale(executed):
    out, notebooks = executed
    notebooks[1].write_text(notebooks[1].read_text() + "\n")
    assert site_builder.current(out, "workshop") is None


def test_a_missing_copy_makes_them_stale(executed):
    out, _ = executed
    (out / "02_b.ipynb").unlink()
    assert site_builder.current(out, "workshop") is None


def test_recording_another_mode_starts_over(executed):
    out, notebooks = executed
    site_builder.record(notebooks[0], "smoke", out)
    stamp = json.loads((out / site_builder.EXECUTED_FILE).read_text())
    assert stamp["mode"] == "smoke" and list(stamp["notebooks"]) == ["01_a"]
    assert site_builder.current(out, "smoke") is None  # 02_b was not run in smoke mode


def test_links_to_files_the_site_lacks_keep_only_their_text():
    text = (
        "See [the guide](INSTRUCTORS.md), [the levers](results/levers/README.md), "
        "[TorchRL](https://github.com/pytorch/rl), [below](#modes), ![a plot](x.png) and "
        "[the words](docs/glossary.md)."
    )
    assert site_builder.site_links(text, {"INSTRUCTORS.md"}) == (
        "See [the guide](INSTRUCTORS.md), the levers, [TorchRL](https://github.com/pytorch/rl), "
        "[below](#modes), ![a plot](x.png) and [the words](glossary.md)."
    )


def test_the_landing_page_is_the_readme_up_to_its_marker():
    stamp = {"mode": "smoke", "machine": "a CPU", "date": "2026-12-02"}
    page = site_builder.landing_page(stamp, {"INSTRUCTORS.md"})
    readme = (ROOT / "README.md").read_text()
    assert page.startswith(readme.splitlines()[0])
    assert "**smoke mode** on a CPU, on 2026-12-02" in page
    after = readme.split(site_builder.LANDING_END)[1]
    assert after.strip().splitlines()[0] not in page  # the first heading past the marker
    assert "## Two commands" in page


TIERS = ((1, "idea"), (2, "API"))


def test_the_exercises_page_has_each_statement_and_its_two_folded_hints():
    page = site_builder.exercises_page(site_builder.NOTEBOOKS)
    sections = page.split("\n## ")[1:]
    assert [s.split(" ·")[0] for s in sections] == [f"Exercise {n}" for n in range(1, 9)]
    for section in sections:
        assert "downloads/" in section, section[:60]
        idea, api = (section.index(f"<summary>Hint {n} · the {w}</summary>") for n, w in TIERS)
        assert idea < api and section.count("<details>") == 2, section[:60]
        assert "### BEGIN SOLUTION" not in section
    assert "*About 5 minutes.* Write `channel_stats(frames)`" in sections[0]
