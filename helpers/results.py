"""Notebooks 04 and 05 (the course's runs and bands). Results of the course's recipe runs: the tables the README, docs/recipe-and-results.md and notebook 05 show, and reference bands.

Each run of `python -m helpers train` that the course reports lives in `results/runs/NAME/`
with its `run.json`, `log.csv`, `curves.png`, `evaluation.json` (the final evaluation) and
`command.json` (the exact command, its exit code and wall time). Nothing here is typed in by
hand: the table is read from those files.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from helpers.config import Config, upgrade_settings
from helpers.plots import eval_axes
from helpers.run.folder import COMMAND_FILE, EVALUATION_FILE, LOG_FILE, RUN_FILE, read_json
from helpers.run.logs import column, read_log

RESULTS_DIR = Path(__file__).resolve().parent.parent / "results" / "runs"
LEVERS_FILE = RESULTS_DIR.parent / "levers" / "README.md"  # each lever of the recipe, measured
THRESHOLDS = (195, 490)  # evaluation means whose first crossing the table reports
BAND_PERCENTILE = 10  # bands run from this percentile of the course's runs to 100 minus it


def preset_of(config: dict) -> str:
    """The preset a run's settings come from: as run.json records it, or, for a run older than
    that record, the one its network tells (`upgrade_settings`)."""
    return upgrade_settings(config).get("preset", "course")


def load_run(folder: str | Path) -> dict:
    """One run's facts: settings, final evaluation, wall time and when it first crossed THRESHOLDS."""
    folder = Path(folder)
    run = read_json(folder / RUN_FILE)
    rows = read_log(folder / LOG_FILE)
    evaluation = read_json(folder / EVALUATION_FILE)
    command = read_json(folder / COMMAND_FILE)
    frames, means = column(rows, "frames", "eval_mean"), column(rows, "eval_mean", "eval_mean")
    seconds = column(rows, "seconds", "eval_mean")
    result = {
        "name": folder.name,
        "target": run["target"],
        "mode": run["mode"],
        "preset": preset_of(run["config"]),
        "seed": run["seed"],
        "frames": int(rows[-1]["frames"]),
        "minutes": command["wall_seconds"] / 60,
        "command": command["command"],
        "final": evaluation,
        "eval_frames": frames,
        "eval_means": means,
        "eval_every": run["config"].get("eval_every", Config.eval_every),
        "eval_max_steps": run["config"].get("eval_max_steps", Config.eval_max_steps),
    }
    for threshold in THRESHOLDS:
        first = next((i for i, m in enumerate(means) if m >= threshold), None)
        result[f"frames_to_{threshold}"] = None if first is None else int(frames[first])
        result[f"minutes_to_{threshold}"] = None if first is None else seconds[first] / 60
    return result


def load_runs(root: str | Path = RESULTS_DIR) -> list[dict]:
    """Every finished run under `root` (a folder without its final evaluation is skipped)."""
    folders = sorted(p.parent for p in Path(root).glob("*/evaluation.json"))
    return [load_run(f) for f in folders if (f / COMMAND_FILE).exists()]


def lever_table(path: str | Path = LEVERS_FILE) -> str:
    """The table of every lever measured for the recipe, what it measured and whether the course
    kept it: the first markdown table of `path`'s section "Every lever, in one table"."""
    section = Path(path).read_text().split("## Every lever, in one table")[1]
    lines = section.split("\n|", 1)[1].split("\n\n")[0]
    return "|" + lines


def _fmt(value: float | None, digits: int = 0) -> str:
    return "not reached" if value is None else f"{value:,.{digits}f}"


def results_table(runs: list[dict]) -> str:
    """A markdown table, a row per run: settings, frames, minutes, final evaluation, crossings."""
    lines = [
        "| preset | mode | target | seed | frames | minutes | final mean ± std (min–max), episodes "
        "| frames (minutes) to 195 | frames (minutes) to 490 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(runs, key=lambda r: (r["preset"], r["mode"], r["target"], r["seed"])):
        f = r["final"]
        crossings = [
            f"{_fmt(r[f'frames_to_{t}'])} ({_fmt(r[f'minutes_to_{t}'], 1)})"
            if r[f"frames_to_{t}"] is not None
            else "not reached"
            for t in THRESHOLDS
        ]
        lines.append(
            f"| {r['preset']} | {r['mode']} | {r['target']} | {r['seed']} | {r['frames']:,} "
            f"| {r['minutes']:.1f} | {f['mean']:.1f} ± {f['std']:.1f} ({f['min']}–{f['max']}), "
            f"{f['episodes']} | {crossings[0]} | {crossings[1]} |"
        )
    return "\n".join(lines)


def _span(values: list[float], digits: int = 0) -> str:
    """From the lowest to the highest of `values`, as a–b, or the one value when they agree."""
    low, high = _fmt(min(values), digits), _fmt(max(values), digits)
    return low if low == high else f"{low}–{high}"


def _crossings(group: list[dict], threshold: int) -> str:
    """How many of `group` first averaged `threshold` in an evaluation, and when: frames
    (minutes) from the earliest to the latest of them."""
    reached = [r for r in group if r[f"frames_to_{threshold}"] is not None]
    counted = f"{len(reached)} of {len(group)}"
    if not reached:
        return counted
    frames = _span([r[f"frames_to_{threshold}"] for r in reached])
    return f"{counted}: {frames} ({_span([r[f'minutes_to_{threshold}'] for r in reached], 1)})"


def summary_table(runs: list[dict], key: tuple[str, ...] = ("preset", "mode", "target")) -> str:
    """A markdown table, a row per group of runs that share `key`: the spread of their final
    means, their wall minutes, and how many first averaged each of THRESHOLDS, and when."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault(tuple(r[k] for k in key), []).append(r)
    reached = " | ".join(f"to {t}: runs, frames (minutes)" for t in THRESHOLDS)
    lines = [
        f"| {' | '.join(key)} | seeds | final means | mean ± std | lowest | minutes | {reached} |",
        "|" + "---|" * (len(key) + 5 + len(THRESHOLDS)),
    ]
    for values, group in sorted(groups.items()):
        group = sorted(group, key=lambda g: g["seed"])
        means = [g["final"]["mean"] for g in group]
        spread = statistics.pstdev(means) if len(means) > 1 else 0.0
        crossings = " | ".join(_crossings(group, t) for t in THRESHOLDS)
        lines.append(
            f"| {' | '.join(map(str, values))} | {len(group)} | "
            f"{', '.join(f'{m:.1f}' for m in means)} | {statistics.fmean(means):.1f} ± {spread:.1f} "
            f"| {min(means):.1f} | {_span([g['minutes'] for g in group], 1)} | {crossings} |"
        )
    return "\n".join(lines)


def eval_slots(run: dict) -> dict[int, float]:
    """A run's evaluation means by slot: slot k is the snapshot taken when the frames crossed
    k * eval_every (slot 0, the first batch). After a perfect evaluation (every episode at
    eval_max_steps) a run evaluates no more, so each later slot, up to its last frames, holds
    that perfect mean: it is the agent the run keeps."""
    every = run["eval_every"]
    slots = {round(f / every): m for f, m in zip(run["eval_frames"], run["eval_means"])}
    perfect = [k for k, m in slots.items() if m >= run["eval_max_steps"]]
    if perfect:
        first = min(perfect)
        for k in range(first + 1, run["frames"] // every + 1):
            slots.setdefault(k, slots[first])
    return slots


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile of `values`, interpolated linearly between the sorted values (numpy's
    default): 0 is the lowest, 50 the median, 100 the highest."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    below = int(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def band(
    runs: list[dict], q: float = BAND_PERCENTILE
) -> tuple[list[float], list[float], list[float], list[float]]:
    """Frames, and the q-th, 50th and (100 - q)-th percentiles of the evaluation means across
    runs, slot by slot.

    Runs evaluate a snapshot every `eval_every` frames (to a batch); the evaluations are
    matched by those frame counts (`eval_slots`), not by their order, since a run skips a
    snapshot that a newer one replaced while it waited. A slot that some run lacks is left out.
    """
    slots = [eval_slots(r) for r in runs]
    shared = sorted(set.intersection(*(set(s) for s in slots)))
    at = {}  # slot -> the frame counts at which runs evaluated it
    for r in runs:
        for f in r["eval_frames"]:
            at.setdefault(round(f / r["eval_every"]), []).append(f)
    every = statistics.fmean(r["eval_every"] for r in runs)
    frames = [statistics.fmean(at[k]) if k in at else k * every for k in shared]
    values = [[s[k] for s in slots] for k in shared]
    return (
        frames,
        [percentile(v, q) for v in values],
        [percentile(v, 50) for v in values],
        [percentile(v, 100 - q) for v in values],
    )


def plot_band(ax: Axes, runs: list[dict], label: str, color: str | None = None) -> None:
    """Draw the runs' median evaluation curve, shaded between the BAND_PERCENTILE-th percentile
    and 100 minus it."""
    frames, low, median, high = band(runs)
    (line,) = ax.plot(frames, median, color=color, label=f"{label}: median of {len(runs)} seeds")
    q = BAND_PERCENTILE
    ax.fill_between(
        frames,
        low,
        high,
        color=line.get_color(),
        alpha=0.2,
        label=f"{label}: {q}th–{100 - q}th percentile",
    )


def reference_runs(
    mode: str, target: str, preset: str = "course", runs: list[dict] | None = None
) -> list[dict]:
    """The shipped runs (or those of `runs`) of one mode, target and preset; maybe none."""
    runs = load_runs() if runs is None else runs
    return [r for r in runs if (r["mode"], r["target"], r["preset"]) == (mode, target, preset)]


def finish_figure(fig, ax: Axes, title: str):
    """The axes, limits and legend shared by the course's evaluation-curve figures."""
    ax.set_ylim(0, 520)
    eval_axes(ax, title=title)
    fig.tight_layout()
    return fig


def plot_reference(rows: list[dict] | None, mode: str, target: str, title: str = ""):
    """A learner's evaluation curve (`rows` of a log) over the course's reference band."""
    fig, ax = plt.subplots(figsize=(8, 4))
    reference = reference_runs(mode, target)
    if reference:
        plot_band(ax, reference, "course's runs")
    if rows:
        frames, means = column(rows, "frames", "eval_mean"), column(rows, "eval_mean", "eval_mean")
        ax.plot(frames, means, "k.-", label="your run")
    return finish_figure(fig, ax, title)


def your_place(
    final: dict | None,
    mode: str,
    target: str,
    runs: list[dict] | None = None,
    label: str | None = None,
) -> str:
    """Where a learner's final evaluation (`evaluation.json`'s dict) lands among the final means
    of the course's runs of the same mode and target (or of `runs`, called `label`): their
    BAND_PERCENTILE-th to (100 minus it)-th percentile and median, and how many of them the
    learner's agent beats."""
    if final is None:
        return "Your run has no final evaluation (it was interrupted): resume it to get one."
    reference = reference_runs(mode, target, runs=runs)
    yours = f"Your agent: {final['mean']:.1f} steps over {final['episodes']} test episodes."
    label = label or f"{target} runs in {mode} mode"
    if not reference:
        return f"{yours} The course ships no {label} to compare with."
    means = [r["final"]["mean"] for r in reference]
    q = BAND_PERCENTILE
    beaten = sum(m < final["mean"] for m in means)
    tied = sum(m == final["mean"] for m in means)
    return (
        f"{yours} The course's {len(means)} {label}: {q}th–{100 - q}th "
        f"percentile {percentile(means, q):.1f}–{percentile(means, 100 - q):.1f}, median "
        f"{percentile(means, 50):.1f}; yours is above {beaten} of them"
        + (f" and level with {tied}." if tied else ".")
    )


def plot_targets(mode: str, title: str = ""):
    """The course's TD(0) and TD(lambda) runs of one mode, each as a band over its seeds."""
    fig, ax = plt.subplots(figsize=(8, 4))
    shipped = load_runs()
    for target, label in (("td-lambda", "TD(λ)"), ("td0", "TD(0)")):
        runs = reference_runs(mode, target, runs=shipped)
        if runs:
            plot_band(ax, runs, label)
    return finish_figure(fig, ax, title)
