"""No notebook (run tooling). How long each notebook takes, in one place: `results/notebook-times.json`, measured by
`make course` (which writes `outputs/notebook-times-MODE.json`) on the reference machine.

The README's table of notebooks shows these numbers (a test compares them) and every
notebook's first cell prints its own (`setup_banner`), so that no copy of them can go stale.
"""

from __future__ import annotations

import json
from pathlib import Path

TIMES_FILE = Path(__file__).resolve().parents[2] / "results" / "notebook-times.json"


def load_times(path: str | Path = TIMES_FILE) -> dict:
    """{"machine": ..., "seconds": {mode: {notebook: seconds}}}; empty when not measured."""
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else {}


def format_seconds(seconds: float) -> str:
    """42 -> "42 s"; 258 -> "4 min 18 s"."""
    seconds = round(seconds)
    return f"{seconds} s" if seconds < 60 else f"{seconds // 60} min {seconds % 60} s"


def notebook_time(notebook: str, mode: str, times: dict | None = None) -> str | None:
    """How long `notebook` (e.g. "04_td0") took in `mode`, formatted; None if not measured."""
    times = load_times() if times is None else times
    seconds = times.get("seconds", {}).get(mode, {}).get(notebook)
    return None if seconds is None else format_seconds(seconds)


def time_line(notebook: str, mode: str) -> str:
    """The line a notebook's first cell prints about its own duration."""
    times = load_times()
    measured = {m: notebook_time(notebook, m, times) for m in times.get("seconds", {})}
    shown = ", ".join(f"{m} {t}" for m, t in measured.items() if t)
    if not shown:
        return f"this notebook ({notebook}): not timed yet"
    return f"this notebook takes about: {shown} (on {times['machine']}; you run {mode})"
