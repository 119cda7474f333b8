"""The course as a website (`make book`), built offline with Jupyter Book 1 into build/site/.
No notebook teaches this module: it is run tooling.

The site shows the notebooks executed in one mode. `make course` records, beside the executed
copies in outputs/, which notebook source and which mode each came from (`record`); `make book`
uses those copies when every one of them is current, and otherwise executes the notebooks
itself into build/book/ (never into outputs/, which holds the learner's own runs).

    python book/site_builder.py record NOTEBOOK MODE     # make course, after each notebook
    python book/site_builder.py build --mode MODE        # make book
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

from helpers.config import MODES  # (the installed course package; it imports no torch)

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("0*.ipynb"))
OUTPUTS = ROOT / "outputs"  # where `make course` writes (its --output-dir)
WORK = ROOT / "build" / "book"  # the book's own executions and its Sphinx sources
SITE = ROOT / "build" / "site"
EXECUTED_FILE = "executed.json"  # which source and mode each executed notebook came from
LANDING_END = "<!-- site: end of the landing page -->"  # in README.md
GLOSSARY = "docs/glossary.md"  # the site's page of words and references
NBGRADER = ROOT / ".venv" / "nbgrader"  # nbgrader's ClearSolutions, as `make exercises` uses it


def source_hash(notebook: Path) -> str:
    """The sha256 of a notebook's source file."""
    return hashlib.sha256(notebook.read_bytes()).hexdigest()


def machine() -> str:
    """One line about this machine: CPU model, cores, memory, GPU if any."""
    model = platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.M)
        model = found.group(1).strip() if found else model
    import psutil

    memory = psutil.virtual_memory().total / 2**30
    gpu = "no GPU"
    if shutil.which("nvidia-smi"):
        names = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        gpu = names.replace("\n", ", ") or gpu
    return f"{model}, {os.cpu_count()} cores, {memory:.0f} GiB, {gpu}"


def record(notebook: Path, mode: str, folder: Path = OUTPUTS) -> None:
    """Note in `folder`/executed.json that `notebook` was executed there in `mode`, now."""
    path = folder / EXECUTED_FILE
    stamp = json.loads(path.read_text()) if path.exists() else {}
    if stamp.get("mode") != mode:  # another mode's copies are replaced one by one
        stamp = {"mode": mode, "notebooks": {}}
    stamp["machine"] = machine()
    stamp["date"] = datetime.date.today().isoformat()
    stamp["notebooks"][notebook.stem] = source_hash(notebook)
    path.write_text(json.dumps(stamp, indent=1) + "\n")


def current(folder: Path, mode: str) -> dict | None:
    """`folder`'s executed.json if every notebook there is executed from today's source in
    `mode`; else None."""
    path = folder / EXECUTED_FILE
    if not path.exists():
        return None
    stamp = json.loads(path.read_text())
    fresh = stamp.get("mode") == mode and all(
        stamp["notebooks"].get(nb.stem) == source_hash(nb) and (folder / nb.name).exists()
        for nb in NOTEBOOKS
    )
    return stamp if fresh else None


def execute(mode: str) -> Path:
    """Execute every notebook in order in `mode` into build/book/executed-MODE/ (their runs
    into its outputs/), as `make course` does; return that folder."""
    folder = WORK / f"executed-{mode}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    env = dict(os.environ, DQN_COURSE_MODE=mode, DQN_COURSE_OUTPUT_DIR=str(folder / "outputs"))
    jupyter = Path(sys.executable).with_name("jupyter")
    for nb in NOTEBOOKS:
        print(f"== executing {nb.name} ({mode} mode) for the site", flush=True)
        subprocess.run(
            [jupyter, "nbconvert", "--to", "notebook", "--execute", "--output-dir", folder, nb],
            env=env,
            check=True,  # (a failing notebook's traceback is on stderr, above)
        )
        record(nb, mode, folder)
    return folder


def exercise_copies(dest: Path) -> None:
    """The learners' copies (solutions blank), as `make exercises` makes them, into `dest`."""
    jupyter = Path(sys.executable).with_name("jupyter")
    env = dict(os.environ, PYTHONPATH=str(NBGRADER))
    subprocess.run(
        [jupyter, "nbconvert", "--to", "notebook", "--output-dir", dest]
        + ["--Exporter.preprocessors=['nbgrader.preprocessors.ClearSolutions']", *NOTEBOOKS],
        env=env,
        check=True,
        capture_output=True,
    )


def site_links(markdown: str, pages: set[str]) -> str:
    """`markdown` with each relative link to a file the site does not hold reduced to its text
    (a link to the repository's README or results would be broken on the site)."""

    def fix(match: re.Match) -> str:
        text, target = match.group(1), match.group(2)
        if target == GLOSSARY:  # a page of docs/ the site holds at its top
            return f"[{text}](glossary.md)"
        if re.match(r"[a-z]+:", target) or target.startswith("#") or target in pages:
            return match.group(0)
        return text

    return re.sub(r"(?<!!)\[([^\]]+)\]\(([^)\s]+)\)", fix, markdown)


def landing_page(stamp: dict, pages: set[str]) -> str:
    """The README's learner-facing part (up to LANDING_END), and what run the site shows."""
    readme = (ROOT / "README.md").read_text()
    if LANDING_END not in readme:
        raise SystemExit(
            f"README.md has no {LANDING_END!r} line: put it where the site's page ends."
        )
    title, _, body = readme.partition(LANDING_END)[0].partition("\n")
    about = (
        f"```{{note}}\nThis site shows the notebooks as executed in **{stamp['mode']} mode** on "
        f"{stamp['machine']}, on {stamp['date']}. Your own run's numbers will differ a little.\n```\n"
    )
    return f"{title}\n\n{about}\n{site_links(body, pages)}"


def exercises_page(notebooks: list[Path]) -> str:
    """Every exercise's statement and its two folded hints, each linked to its notebook's page."""
    lines = [
        "# Exercises\n",
        "Eight pieces of the agent are yours to write. Each statement is below with its two "
        "folded hints (the idea, then the API); each refers to what its notebook has just shown, "
        "so read it there first. The exercise copy of a notebook (solutions left blank) is the "
        "one to download and fill in.\n",
    ]
    for nb in notebooks:
        cells = json.loads(nb.read_text())["cells"]
        title = "".join(cells[0]["source"]).splitlines()[0].lstrip("# ")
        for cell in cells:
            text = "".join(cell["source"])
            found = re.search(r"\*\*(Exercise \d+ · [^*]+)\*\*", text)
            if cell["cell_type"] == "markdown" and found:
                lines.append(f"## {found.group(1)}\n")
                lines.append(
                    f"In [{title}]({nb.name}); its exercise copy: "
                    f"{{download}}`{nb.name} <downloads/{nb.name}>`.\n"
                )
                body = text[found.end() :].strip()
                body = re.sub(
                    r"^\((about \d+ minutes)\)\.", lambda m: f"*{m[1].capitalize()}.*", body
                )
                lines.append(body + "\n")
    return "\n".join(lines)


def notebook_page(executed: Path, dest: Path) -> None:
    """The executed notebook for the site: solution cells folded, a download line on top."""
    nb = json.loads(executed.read_text())
    for cell in nb["cells"]:
        if cell.get("metadata", {}).get("nbgrader", {}).get("solution"):
            tags = cell["metadata"].setdefault("tags", [])
            tags.append("hide-input")  # the statement and hints show; the solution is folded
    note = {
        "cell_type": "markdown",
        "id": "site-download",
        "metadata": {},
        "source": f"Download this notebook to run it yourself: {{download}}`{executed.name} "
        f"<downloads/{executed.name}>` (the exercises left blank).",
    }
    nb["cells"].insert(1, note)
    (dest / executed.name).write_text(json.dumps(nb, indent=1))


def build(mode: str) -> Path:
    """Build the site of `mode` into build/site/ and return its index page."""
    stamp = current(OUTPUTS, mode)
    executed = OUTPUTS if stamp else execute(mode)
    stamp = stamp or current(executed, mode)
    print(f"The site shows the notebooks executed in {mode} mode in {executed.relative_to(ROOT)}/")
    src = WORK / "src"
    shutil.rmtree(src, ignore_errors=True)
    shutil.copytree(BOOK, src, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    exercise_copies(src / "downloads")
    pages = {nb.name for nb in NOTEBOOKS} | {"INSTRUCTORS.md", GLOSSARY}
    for nb in NOTEBOOKS:
        notebook_page(executed / nb.name, src)
    (src / "index.md").write_text(landing_page(stamp, pages))
    (src / "exercises.md").write_text(exercises_page(NOTEBOOKS))
    for page, dest in (("INSTRUCTORS.md", "INSTRUCTORS.md"), (GLOSSARY, "glossary.md")):
        (src / dest).write_text(site_links((ROOT / page).read_text(), pages))
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    subprocess.run([jupyter_book, "build", "--quiet", "--keep-going", src], check=True)
    shutil.rmtree(SITE, ignore_errors=True)
    shutil.copytree(src / "_build" / "html", SITE)
    print(f"The site is in {SITE.relative_to(ROOT)}/: open {SITE.relative_to(ROOT)}/index.html")
    return SITE / "index.html"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    rec = commands.add_parser("record", help="note an executed notebook (make course)")
    rec.add_argument("notebook", type=Path)
    rec.add_argument("mode")
    bld = commands.add_parser("build", help="build the site into build/site/")
    bld.add_argument("--mode", choices=MODES, default=os.environ.get("DQN_COURSE_MODE", "workshop"))
    args = parser.parse_args(argv)
    if args.command == "record":
        record(args.notebook.resolve(), args.mode)
    else:
        build(args.mode)


if __name__ == "__main__":
    main()
