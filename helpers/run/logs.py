"""No notebook (run tooling; notebooks 04 and 05 read the log). Training logs: one CSV row per collected batch, written as it comes so an interrupted run keeps it."""

from __future__ import annotations

import csv
import math
from pathlib import Path

LOG_COLUMNS = (
    "batch",  # index of the collected batch
    "frames",  # environment frames collected so far
    "trajectories",  # training episodes finished so far
    "epsilon",  # exploration rate used for the next batch
    "loss",  # TD loss (Huber or squared error) of the batch's last gradient step
    "value",  # mean greedy Q-value of the states collected in this batch
    "grad_norm",  # gradient norm before clipping
    "train_episode_length",  # mean length of the training episodes that ended in this batch
    "eval_mean",  # mean steps of the evaluation's greedy episodes (empty between evaluations)
    "eval_std",  # their standard deviation
    # episodes it played: eval_episodes, more to confirm a perfect one, fewer once it could
    # no longer beat the run's best (helpers.evaluation.evaluation_lengths)
    "eval_played",
    "seconds",  # wall time since the run started
)


class CsvLog:
    """Append rows to `path`, creating it with a header; each row is flushed to disk at once.

    `keep=N` goes on from the first N rows of an existing log (a resumed run keeps the rows
    its checkpoint saw and drops any written after it, with empty cells in columns that it
    lacks, from before they were logged); the default starts a new log.
    """

    def __init__(self, path: str | Path, keep: int = 0) -> None:
        self.path = Path(path)
        kept = read_log(self.path, limit=keep) if keep else []
        self.rows = [{key: row.get(key, math.nan) for key in LOG_COLUMNS} for row in kept]
        self._rewrite()

    def update(self, frames: float, **values: float) -> None:
        """Fill in columns of the row at `frames` (an evaluation that came back after its
        batch): the file is rewritten whole, then moved into place, so it is never half
        written."""
        row = next(r for r in reversed(self.rows) if r["frames"] == frames)
        row.update(values)
        self._rewrite()

    def _rewrite(self) -> None:
        """Write the file again from the rows kept in memory, then move it into place (where
        that fails, on a full disk, the file is left as it was and no temporary file stays)."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            with tmp.open("w", newline="") as f:
                csv.writer(f).writerow(LOG_COLUMNS)
                for row in self.rows:
                    csv.writer(f).writerow([_fmt(row[key]) for key in LOG_COLUMNS])
            tmp.replace(self.path)
        finally:
            tmp.unlink(missing_ok=True)

    def settle(self) -> None:
        """Make the file and the rows in memory agree, however the run stopped: write the file
        again from memory (an interrupt can fall between a row kept and its line on disk), or,
        where that fails (a full disk), forget the rows whose whole line the file lacks."""
        try:
            self._rewrite()
        except OSError:
            whole_lines = self.path.read_bytes().count(b"\n") - 1  # after the header
            del self.rows[max(whole_lines, 0) :]

    def write(self, row: dict) -> None:
        unknown = set(row) - set(LOG_COLUMNS)
        if unknown:
            raise KeyError(f"Unknown log columns: {sorted(unknown)}")
        self.rows.append({key: row.get(key, math.nan) for key in LOG_COLUMNS})
        with self.path.open("a", newline="") as f:
            csv.writer(f).writerow([_fmt(row.get(key)) for key in LOG_COLUMNS])


def _fmt(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))  # counters read back from a log as floats
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def read_log(path: str | Path, limit: int | None = None) -> list[dict]:
    """Read a log written by CsvLog: a list of rows, empty cells as NaN (the first `limit` rows
    only, when given: what comes after them is not read)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No training log at {path}: run the training first.")
    rows = []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"batch", "frames"} <= set(reader.fieldnames):
            raise ValueError(f"{path} is not a training log (no header of log columns).")
        for row in reader:
            if limit is not None and len(rows) == limit:
                break
            try:
                if None in row or None in row.values():
                    raise ValueError("a row of the wrong length")
                rows.append({k: float(v) if v != "" else math.nan for k, v in row.items()})
            except ValueError:
                raise ValueError(
                    f"{path}, line {reader.line_num}, is not a log row (cut short or edited): "
                    "restore the log, or start the run again with --overwrite."
                ) from None
    return rows


def column(rows: list[dict], name: str, where: str | None = None) -> list[float]:
    """The values of column `name`, keeping only rows where column `where` is not empty."""
    return [r[name] for r in rows if where is None or not math.isnan(r[where])]
