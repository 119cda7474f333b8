"""No notebook (run tooling). Multi-seed studies on Ray: `python -m helpers sweep` trains several runs and summarizes them.

Each run is `python -m helpers train` in a process of its own, writing its own folder under the
sweep's folder exactly as `train` does (plus `command.json`, which `helpers.results` reads, and
`output.txt`). Ray decides where and when each run goes: a local Ray on this machine by default,
a running cluster with `address`. A sweep started again skips the runs that finished and
resumes the others; interrupting it stops the runs in progress as Ctrl+C stops `train`.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt

from helpers import allow_ray
from helpers.config import config_for_mode, get_mode
from helpers.losses import check_target
from helpers.results import (
    BAND_PERCENTILE,
    COMMAND_FILE,
    band,
    finish_figure,
    load_run,
    plot_band,
    results_table,
    summary_table,
)
from helpers.run.checkpoints import CHECKPOINT_FILE
from helpers.run.folder import EVALUATION_FILE, check_seed, wait_until_free
from helpers.run.workers import interrupts_raise

SUMMARY_FILE, BANDS_CSV, BANDS_PNG = "summary.md", "bands.csv", "bands.png"
OUTPUT_FILE = "output.txt"  # what the run printed
STOP_FILE = ".stop"  # written by an interrupted sweep: its running tasks stop their runs
STOP_TIMEOUT = 120  # seconds a run has to save and exit once the sweep is interrupted


@dataclass(frozen=True)
class SweepRun:
    """One training run of a sweep: its target, seed and settings (NAME=VALUE)."""

    target: str
    seed: int
    settings: tuple[str, ...] = ()

    @property
    def setting(self) -> str:
        """The runs of one setting differ only by seed: the summary's groups."""
        return " ".join((self.target, *self.settings))

    @property
    def name(self) -> str:
        return "-".join((self.target, *self.settings, f"seed{self.seed}")).replace("/", "_")


def plan_sweep(targets: list[str], seeds: list[int], grid: list[str]) -> list[SweepRun]:
    """Every combination of target, grid setting ("lr=1e-3,5e-4": one run per value) and seed."""
    for target in targets:
        check_target(target)
    for seed in seeds:
        check_seed(seed, "--seeds")
    for name, values in (("--seeds", seeds), ("--targets", targets)):
        twice = sorted({str(v) for v in values if values.count(v) > 1})
        if twice:
            raise ValueError(f"{name} names {', '.join(twice)} more than once: list each once.")
    axes = []
    for entry in grid:
        name, sep, values = entry.partition("=")
        if not sep or not values:
            raise ValueError(f"Cannot read --set {entry!r}: write NAME=VALUE[,VALUE...].")
        axes.append([f"{name}={value}" for value in values.split(",")])
    combos = list(itertools.product(*axes))
    return [SweepRun(t, s, combo) for t in targets for combo in combos for s in seeds]


def train_command(run: SweepRun, mode: str, frames: int | None, folder: Path) -> list[str]:
    """The `python -m helpers train` arguments of `run` (without --resume)."""
    args = ["--target", run.target, "--mode", mode, "--seed", str(run.seed), "--out", str(folder)]
    if frames is not None:
        args += ["--frames", str(frames)]
    for setting in run.settings:
        args += ["--set", setting]
    return args


def run_status(folder: Path) -> str:
    """ "complete" (its final evaluation is written), "resume" (a checkpoint to go on from) or "new"."""
    if (folder / EVALUATION_FILE).is_file() and _command(folder).get("rc") == 0:
        return "complete"
    return "resume" if (folder / CHECKPOINT_FILE).is_file() else "new"


def _command(folder: Path) -> dict:
    path = folder / COMMAND_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def run_training(folder: str, args: list[str], threads: int, stop_file: str) -> dict:
    """Run `python -m helpers train ARGS` to its end (this is the Ray task); write command.json.

    When `stop_file` appears (the sweep was interrupted) or the task itself is interrupted,
    the run gets one SIGINT, as from Ctrl+C: it saves its checkpoint and exits. Wall times add
    up over resumed attempts.
    """
    folder_path = Path(folder)
    if Path(stop_file).exists():  # the sweep was interrupted before this run's turn came
        return {"folder": folder, "rc": None}
    folder_path.mkdir(parents=True, exist_ok=True)
    before = _command(folder_path).get("wall_seconds", 0.0)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    env.setdefault("TQDM_MININTERVAL", "30")  # output.txt: a progress line every 30 s
    command = [sys.executable, "-m", "helpers", "train", *args]
    start, started = time.monotonic(), time.strftime("%Y-%m-%dT%H:%M:%S%z")
    with open(folder_path / OUTPUT_FILE, "a") as output:
        proc = subprocess.Popen(
            command, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            while proc.poll() is None and not Path(stop_file).exists():
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
    record = {
        "command": shlex.join(["python", "-m", "helpers", "train", *args]),
        "rc": rc,
        "wall_seconds": round(before + time.monotonic() - start, 1),
        "started": _command(folder_path).get("started", started),
    }
    (folder_path / COMMAND_FILE).write_text(json.dumps(record, indent=1))
    return {"folder": folder, "rc": rc}


def sweep(
    targets: list[str],
    seeds: list[int],
    out: str | Path,
    *,
    mode: str | None = None,
    grid: list[str] | None = None,
    frames: int | None = None,
    address: str | None = None,
    cpus_per_run: int = 2,
    parallel: int | None = None,
) -> tuple[int, int, bool]:
    """Train every run of the sweep on Ray, then write its summary; return how many runs are
    complete, out of how many, and whether the sweep was interrupted."""
    mode = get_mode(mode)
    if cpus_per_run < 1 or (parallel is not None and parallel < 1):
        raise ValueError(
            f"--parallel and --cpus-per-run must be at least 1, got {parallel} and {cpus_per_run}."
        )
    plan = plan_sweep(targets, seeds, grid or [])
    for combo in {run.settings for run in plan}:  # bad settings: one line now, not N failed runs
        config_for_mode(mode).with_settings(list(combo))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stop_file = out / STOP_FILE
    stop_file.unlink(missing_ok=True)
    ray = _start_ray(address, None if parallel is None else parallel * cpus_per_run)
    task = ray.remote(num_cpus=cpus_per_run, max_retries=0)(run_training)
    pending = {}
    for run in plan:
        folder = out / run.name
        status = run_status(folder)
        print(f"{run.name}: {status}")
        if status != "complete":
            args = train_command(run, mode, frames, folder)
            pending[
                task.remote(
                    str(folder),
                    args + ["--resume"] * (status == "resume"),
                    cpus_per_run,
                    str(stop_file),
                )
            ] = run
    interrupted = False
    try:
        with interrupts_raise():
            _wait_all(ray, pending)
    except KeyboardInterrupt:
        interrupted = True
        print("Interrupted: the runs in progress save their checkpoints and stop...")
        stop_file.touch()  # what the tasks watch for (those still waiting return at once)
        try:
            deadline = time.monotonic() + STOP_TIMEOUT
            while ray.wait(list(pending), num_returns=len(pending), timeout=0.5)[1]:
                if time.monotonic() > deadline:
                    break
        finally:
            for run in pending.values():  # every run has saved and let go of its folder
                wait_until_free(out / run.name, STOP_TIMEOUT)
            stop_file.unlink(missing_ok=True)
    finally:
        ray.shutdown()
    return write_summary(out, plan), len(plan), interrupted


def _wait_all(ray, pending: dict) -> None:
    """Print each run's end as it comes."""
    waiting = list(pending)
    while waiting:
        # (a short timeout: Python handles Ctrl+C only between Ray's blocking calls)
        done, waiting = ray.wait(waiting, num_returns=1, timeout=0.5)
        if not done:
            continue
        rc = ray.get(done[0])["rc"]
        state = "finished" if rc == 0 else f"failed (exit {rc}, see output.txt)"
        print(f"{pending[done[0]].name}: {state}; {len(waiting)} left")


def _start_ray(address: str | None, num_cpus: int | None):
    """Ray, connected to the cluster at `address` or started on this machine with `num_cpus`
    CPUs (default: all of them)."""
    allow_ray()  # (hidden from torchrl by helpers/__init__.py)
    try:
        import ray
    except ImportError:
        raise ValueError(
            "The sweep runs on Ray, which is not installed: pip install -e '.[scale]'."
        ) from None
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(
            num_cpus=num_cpus,
            include_dashboard=False,
            log_to_driver=False,
            object_store_memory=100 * 2**20,
        )
    return ray


def write_summary(out: Path, plan: list[SweepRun]) -> int:
    """summary.md (mean and spread per setting, then each run's final evaluation), bands.csv
    and bands.png (each setting's evaluation curves: median and 10th to 90th percentile over seeds), for
    the runs of `plan` that are complete; return how many are."""
    runs = []
    for run in plan:
        if run_status(out / run.name) == "complete":
            runs.append({**load_run(out / run.name), "setting": run.setting})
    lines = [f"# Sweep {out.name}: {len(runs)} of {len(plan)} runs complete", ""]
    lines += [summary_table(runs, key=("setting",)), "", results_table(runs), ""] if runs else []
    (out / SUMMARY_FILE).write_text("\n".join(lines))
    groups: dict[str, list[dict]] = {}
    for r in runs:
        groups.setdefault(r["setting"], []).append(r)
    rows = []
    fig, ax = plt.subplots(figsize=(8, 4))
    for setting, group in groups.items():
        rows += [[setting, *point] for point in zip(*band(group))]
        plot_band(ax, group, setting)
    with open(out / BANDS_CSV, "w", newline="") as f:
        writer = csv.writer(f)
        q = BAND_PERCENTILE
        writer.writerow(["setting", "frames", f"p{q}", "median", f"p{100 - q}"])
        writer.writerows(rows)
    finish_figure(fig, ax, f"sweep {out.name}: evaluation over seeds").savefig(
        out / BANDS_PNG, dpi=100
    )
    plt.close(fig)
    return len(runs)
