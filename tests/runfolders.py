"""Run folders written by hand, as `train` and the sweep leave them, for the tests that read
results (tables, bands, ablations, pooling)."""

import json
from pathlib import Path

from helpers.run.logs import CsvLog


def write_run(
    folder: Path, run: dict, rows: list[dict], final: list[int], wall_seconds: float
) -> None:
    """`run.json` from `run`, a log of `rows`, the final evaluation of the episode lengths
    `final`, and a `command.json` that took `wall_seconds`."""
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps(run))
    log = CsvLog(folder / "log.csv")
    for row in rows:
        log.write(row)
    n = len(final)
    mean = sum(final) / n
    std = (sum((x - mean) ** 2 for x in final) / n) ** 0.5
    stats = {"episodes": n, "mean": mean, "std": std, "min": min(final), "max": max(final)}
    (folder / "evaluation.json").write_text(json.dumps({**stats, "lengths": final}))
    command = {"command": f"train --seed {run['seed']}", "rc": 0, "wall_seconds": wall_seconds}
    (folder / "command.json").write_text(json.dumps(command))
