"""The recipe's results tables and reference bands, against hand-computed values, the README and
docs/ (recipe-and-results.md, command-line.md)."""

import json
from pathlib import Path

import pytest
import runfolders

from helpers.commands.timings import format_seconds, load_times, notebook_time
from helpers.experiments import RECIPE_RUNS_DIR
from helpers.machine import setup_banner
from helpers.results import (
    RESULTS_DIR,
    band,
    lever_table,
    load_run,
    load_runs,
    percentile,
    results_table,
    summary_table,
    your_place,
)
from helpers.run.logs import read_log

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
RECIPE_AND_RESULTS = ROOT / "docs" / "recipe-and-results.md"
COMMAND_LINE = ROOT / "docs" / "command-line.md"
EARLIER = ROOT / "results" / "earlier-recipe"  # runs that were once the reference runs


def write_run(
    folder: Path, seed: int, evals: list[tuple[int, float]], final: list[int], last: int = 0
) -> None:
    """A full-mode TD(lambda) run folder with the given evaluations (its last row at `last`
    frames, if later than the last evaluation)."""
    config = {"network": "two-conv", "eval_every": 10_000, "eval_max_steps": 500}
    run = {"target": "td-lambda", "mode": "full", "seed": seed, "config": config}
    rows = [
        {"batch": i, "frames": frames, "eval_mean": mean, "seconds": 60.0 * (i + 1)}
        for i, (frames, mean) in enumerate(evals)
    ]
    if last > evals[-1][0]:
        rows.append({"batch": len(evals), "frames": last, "seconds": 60.0 * (len(evals) + 1)})
    runfolders.write_run(folder, run, rows, final, 600 + 60 * seed)


def test_band_and_tables_by_hand(tmp_path):
    write_run(tmp_path / "a", 0, [(32, 10.0), (10_016, 200.0), (20_000, 480.0)], [500, 480])
    write_run(tmp_path / "b", 1, [(32, 12.0), (10_000, 100.0), (20_032, 500.0)], [500, 500])
    runs = load_runs(tmp_path)
    frames, low, median, high = band(runs)
    assert frames == [32, 10_008, 20_016]
    # 10th, 50th and 90th percentiles of two values: a tenth, half and nine tenths of the way.
    assert low == pytest.approx([10.2, 110, 482])
    assert median == pytest.approx([11, 150, 490])
    assert high == pytest.approx([11.8, 190, 498])
    rows = results_table(runs).splitlines()
    # Run a: 200 >= 195 at its second evaluation (10,016 frames, 2 minutes), never 490.
    assert (
        "| course | full | td-lambda | 0 | 20,000 | 10.0 | 490.0 ± 10.0 (480–500), 2 |" in rows[2]
    )
    assert rows[2].endswith("| 10,016 (2.0) | not reached |")
    assert rows[3].endswith("| 20,032 (3.0) | 20,032 (3.0) |")
    summary = summary_table(runs).splitlines()
    # Both reached 195 (at 10,016 and 20,032 frames), only b 490; 10 and 11 minutes in all.
    assert summary[2] == (
        "| course | full | td-lambda | 2 | 490.0, 500.0 | 495.0 ± 5.0 | 490.0 | 10.0–11.0 "
        "| 2 of 2: 10,016–20,032 (2.0–3.0) | 1 of 2: 20,032 (3.0) |"
    )


def test_your_place_among_the_course_runs_by_hand(tmp_path):
    for seed, lengths in enumerate(([100, 100], [200, 300], [250, 250], [500, 400])):
        write_run(tmp_path / f"r{seed}", seed, [(32, 10.0)], lengths)
    runs = load_runs(tmp_path)  # final means 100, 250, 250, 450
    text = your_place({"mean": 250.0, "episodes": 100}, "full", "td-lambda", runs)
    assert text == (
        "Your agent: 250.0 steps over 100 test episodes. The course's 4 td-lambda runs in full "
        "mode: 10th–90th percentile 145.0–390.0, median 250.0; yours is above 1 of them and "
        "level with 2."
    )
    assert your_place({"mean": 460.0, "episodes": 20}, "full", "td-lambda", runs).endswith(
        "yours is above 4 of them."
    )
    assert "ships no td0 runs in smoke mode" in your_place(
        {"mean": 9.0, "episodes": 3}, "smoke", "td0", runs
    )
    assert "interrupted" in your_place(None, "full", "td-lambda", runs)


def test_band_matches_evaluations_by_frames_not_by_order(tmp_path):
    # Run a skipped its 10,000-frame snapshot (replaced while it waited); run b was perfect at
    # 20,000 frames and evaluated no more up to its last frames, 40,000.
    write_run(tmp_path / "a", 0, [(32, 10.0), (20_000, 300.0), (30_016, 400.0)], [500], 40_000)
    write_run(tmp_path / "b", 1, [(32, 20.0), (10_000, 100.0), (20_032, 500.0)], [500], 40_000)
    frames, low, median, high = band(load_runs(tmp_path))
    assert frames == [32, 20_016, 30_016]  # slot 1 left out; slot 3 is b's kept perfect agent
    assert low == pytest.approx([11, 320, 410])
    assert median == pytest.approx([15, 400, 450])
    assert high == pytest.approx([19, 480, 490])


def test_percentiles_by_hand():
    assert percentile([5, 1, 4, 2, 3], 10) == pytest.approx(1.4)  # 0.4 of the way from 1 to 2
    assert [percentile([5, 1, 4, 2, 3], q) for q in (0, 50, 100)] == [1, 3, 5]
    assert percentile([7.0], 90) == 7.0


def test_the_readme_and_the_results_page_show_the_shipped_results():
    runs = load_runs(RESULTS_DIR)
    if not runs:
        pytest.fail(f"no finished runs in {RESULTS_DIR}")
    summary, table = summary_table(runs), results_table(runs)
    assert summary in README.read_text(), "README's summary table differs: paste `helpers results`"
    assert table in RECIPE_AND_RESULTS.read_text(), (
        "docs/recipe-and-results.md's run table differs: paste `helpers results`"
    )


def test_the_lever_table_is_the_one_of_its_section(tmp_path):
    levers = tmp_path / "README.md"
    levers.write_text(
        "# Levers\n\n| a | b |\n|---|---|\n| not | this |\n\n"
        "## Every lever, in one table\n\nWhat each measured.\n\n"
        "| lever | kept |\n|---|---|\n| x | yes |\n| y | no |\n\nAfter it.\n\n| z | no |\n"
    )
    assert lever_table(levers) == "| lever | kept |\n|---|---|\n| x | yes |\n| y | no |"


def test_the_readme_shows_the_lever_table():
    assert lever_table() in README.read_text(), "README's lever table differs from results/levers"


def test_the_command_line_page_shows_the_workshop_sweep():
    summary = (RESULTS_DIR.parent / "sweeps" / "workshop" / "summary.md").read_text()
    table = summary.split("\n\n")[1].strip()
    assert table.startswith("| setting |") and table in COMMAND_LINE.read_text()


def test_notebook_times_are_formatted_by_hand():
    assert [format_seconds(s) for s in (9.4, 42, 60, 258)] == [
        "9 s",
        "42 s",
        "1 min 0 s",
        "4 min 18 s",
    ]
    times = {"machine": "m", "seconds": {"smoke": {"04_td0": 26}, "workshop": {"04_td0": 258}}}
    assert notebook_time("04_td0", "workshop", times) == "4 min 18 s"
    assert notebook_time("07_more", "smoke", times) is None


def test_the_readme_and_the_notebooks_show_the_measured_times():
    times = load_times()
    rows = [line for line in README.read_text().splitlines() if line.startswith("| `0")]
    notebooks = sorted(p.stem for p in (ROOT / "notebooks").glob("0*.ipynb"))
    assert [row.split("`")[1] for row in rows] == notebooks
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        notebook = row.split("`")[1]
        assert cells[-2:] == [notebook_time(notebook, m, times) for m in ("smoke", "workshop")], row
        source = (ROOT / "notebooks" / f"{notebook}.ipynb").read_text()
        assert f'notebook=\\"{notebook}\\"' in source, f"{notebook}'s first cell names another"
    assert "this notebook takes about: smoke " in setup_banner("smoke", notebook="04_td0")


def test_the_lever_tables_say_what_their_runs_measured():
    """results/levers/README.md: each run's final mean, episodes, minimum and wall minutes are
    the ones in its folder, and so are the candidate's frames to 195 and 490."""
    levers = ROOT / "results" / "levers"
    readme = (levers / "README.md").read_text()
    for header, rows in (("| run | seed |", 7), ("| candidate run | seed |", 6)):
        table = _table_rows(readme, header)
        assert len(table) == rows
        for cells in table:
            name = cells[0].split()[0]
            folder = next(d / name for d in (levers, RECIPE_RUNS_DIR) if (d / name).is_dir())
            final = json.loads((folder / "evaluation.json").read_text())
            wall = json.loads((folder / "command.json").read_text())["wall_seconds"]
            score = f"{final['mean']:.1f} ({final['episodes']}), {final['min']}"
            assert score in cells, name
            assert cells[-1] == f"{wall / 60:.1f}", name
            if header.startswith("| candidate"):
                run = load_run(folder)
                assert cells[3:5] == [f"{run['frames_to_195']:,}", f"{run['frames_to_490']:,}"]


def _table_rows(readme: str, header: str) -> list[list[str]]:
    """The cells of each row of the markdown table that starts with `header`."""
    lines = readme.split(header)[1].split("\n\n")[0].splitlines()[2:]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines]


def _crossing_cell(run: dict, threshold: int) -> str:
    """A table's cell for when a run's evaluations first reached `threshold`: frames (minutes)."""
    frames, minutes = run[f"frames_to_{threshold}"], run[f"minutes_to_{threshold}"]
    return "not reached" if frames is None else f"{frames:,} ({minutes:.1f})"


@pytest.mark.parametrize(
    ("header", "runs", "count"),
    [
        (
            "| run | seed | started (UTC) | final mean (min), 100 test episodes |",
            "lottery-screen",
            14,
        ),
        ("| run | seed | started (UTC) | final mean (min) |", "side-by-side", 4),
    ],
)
def test_the_screen_tables_say_what_their_runs_measured(header, runs, count):
    """results/levers/README.md's screen of changes against slow learners, and its runs of
    evaluations side by side and one by one: each run's seed, final mean and minimum, first
    evaluations at 195 and 490, frames, wall minutes and (where the table has them) loop
    seconds and peak memory are the ones in its folder."""
    levers = ROOT / "results" / "levers"
    rows = _table_rows((levers / "README.md").read_text(), header)
    assert len(rows) == count
    for cells in rows:
        folder = levers / runs / cells[0]
        run = load_run(folder)
        final, first = run["final"], [run["frames_to_195"], run["frames_to_490"]]
        assert final["episodes"] == 100 and cells[1] == str(run["seed"])
        assert cells[3] == f"{final['mean']:.1f} ({final['min']})", cells[0]
        assert cells[4] == " / ".join("not reached" if f is None else f"{f:,}" for f in first)
        assert cells[5] == f"{run['frames']:,}" and cells[7] == f"{run['minutes']:.1f}"
        if len(cells) > 8:  # (the side-by-side runs: loop seconds and memory)
            loop = read_log(folder / "log.csv")[-1]["seconds"]
            assert cells[6] == f"{loop:.0f} ({run['frames'] / loop:.0f})", cells[0]
            command = json.loads((folder / "command.json").read_text())
            assert cells[8] == f"{command['peak_pss_mb']:,}", cells[0]


def test_the_seeds_11_to_15_and_screening_tables_say_what_their_runs_measured():
    """results/levers/README.md's tables of the recipe on seeds 11-15 (before and after the
    faster loop) and of the one-seed screening: final means, ranges, frames, crossings, best
    evaluations and wall minutes are the ones in the runs' folders."""
    levers = ROOT / "results" / "levers"
    readme = (levers / "README.md").read_text()
    tables = {  # the first cells of each table's header -> its runs' folder
        "| seed | final mean over 100 test episodes (min–max) | evaluations": "early-stop",
        "| seed | final mean over 100 test episodes (min–max) | frames trained": "faster-loop",
    }
    for header, runs in tables.items():
        rows = _table_rows(readme, header)
        assert [r[0] for r in rows] == ["11", "12", "13", "14", "15"], runs
        for cells in rows:
            folder = levers / runs / f"recipe-s{cells[0]}"
            final = json.loads((folder / "evaluation.json").read_text())
            assert final["episodes"] == 100
            assert cells[1] == f"{final['mean']:.1f} ({final['min']}–{final['max']})"
            run = load_run(folder)
            if runs == "faster-loop":
                assert cells[2] == f"{run['frames']:,}", folder
            for cell, threshold in ((cells[3], 195), (cells[4], 490)):
                assert cell == _crossing_cell(run, threshold), (folder, threshold)
            assert cells[-1] == f"{run['minutes']:.1f}", folder
    rows = _table_rows(readme, "| run | change | best by 30,000 |")
    assert len(rows) == 5
    for cells in rows:
        folder = levers / "screening" / cells[0]
        evaluations = [
            (row["frames"], row["eval_mean"])
            for row in read_log(folder / "log.csv")
            if row["eval_mean"] is not None
        ]
        for cell, limit in ((cells[2], 30_000), (cells[3], 40_000)):
            best = max(mean for frames, mean in evaluations if frames <= limit + 100)
            assert cell == f"{best:.1f}", (cells[0], limit)
        first = next(frames for frames, mean in evaluations if mean >= 195)
        assert cells[4] == f"{int(first):,}", cells[0]


def test_the_confirmed_evaluations_table_says_what_its_runs_measured():
    """results/levers/README.md's table of the recipe with perfect evaluations confirmed: final
    means, the kept agent (the best evaluation, a tie going to the later), frames, crossing of
    490 and wall minutes are the ones in the runs' folders (since moved to results/runs/, then
    to results/earlier-recipe/slower-host/ when the same seeds were run again)."""
    levers = ROOT / "results" / "levers"
    readme = (levers / "README.md").read_text()
    rows = _table_rows(readme, "| seed | final mean over 100 test episodes (min–max) | kept agent")
    assert [r[0] for r in rows] == ["11", "12", "13", "14", "15"]
    for cells in rows:
        folder = EARLIER / "slower-host" / f"workshop-td-lambda-seed{cells[0]}"
        final = json.loads((folder / "evaluation.json").read_text())
        assert final["episodes"] == 100
        assert cells[1] == f"{final['mean']:.1f} ({final['min']}–{final['max']})"
        run = load_run(folder)
        best = max(run["eval_means"])
        kept = max(f for f, m in zip(run["eval_frames"], run["eval_means"]) if m == best)
        assert cells[2] == f"{int(kept):,} ({best:.1f})", folder
        assert cells[3] == f"{run['frames']:,}", folder
        assert cells[4] == _crossing_cell(run, 490), folder
        assert cells[-1] == f"{run['minutes']:.1f}", folder
