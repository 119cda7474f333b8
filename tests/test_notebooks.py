"""The notebooks as committed: a lesson path that stays a lesson, and no outputs."""

import json
import statistics
from pathlib import Path

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("0*.ipynb"))


def markdown_words(path: Path) -> int:
    cells = json.loads(path.read_text())["cells"]
    return sum(len("".join(c["source"]).split()) for c in cells if c["cell_type"] == "markdown")


def test_notebook_04_reads_at_most_half_again_as_long_as_the_others():
    words = {p.stem: markdown_words(p) for p in NOTEBOOKS}
    others = statistics.median(w for name, w in words.items() if name != "04_td0")
    assert words["04_td0"] <= 1.5 * others, (words["04_td0"], others)


def test_notebooks_are_committed_without_outputs():
    for path in NOTEBOOKS:
        cells = json.loads(path.read_text())["cells"]
        assert not any(c.get("outputs") for c in cells if c["cell_type"] == "code"), path.name
