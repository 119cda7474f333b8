"""Real (smoke-sized) training runs through the command line: logs, checkpoints, interrupts, errors."""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import torch
from clitools import cli

from helpers.logs import LOG_COLUMNS, read_log

FRAMES = 160  # five smoke batches: training starts after the second


def spawned_workers() -> set[int]:
    """pids of multiprocessing workers anywhere on the machine (orphans included)."""
    pids = set()
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(p.info["cmdline"] or [])
        if "spawn_main" in cmdline or "forkserver" in cmdline:
            pids.add(p.info["pid"])
    return pids


def temp_entries() -> set[str]:
    return {
        p.name for p in Path(tempfile.gettempdir()).iterdir() if not p.name.startswith("pytest-")
    }


@pytest.fixture(scope="module")
def td0_run(tmp_path_factory):
    """One real TD(0) training run in smoke mode, shared by the tests below."""
    out = tmp_path_factory.mktemp("td0")
    workers_before, temp_before = spawned_workers(), temp_entries()
    result = cli(
        "train", "--target", "td0", "--mode", "smoke", "--frames", str(FRAMES), "--out", str(out)
    )
    time.sleep(1)
    return out, result, spawned_workers() - workers_before, temp_entries() - temp_before


def test_train_writes_log_checkpoint_and_curves(td0_run):
    out, result, _, _ = td0_run
    assert result.returncode == 0, result.stderr[-2000:]
    assert {p.name for p in out.iterdir()} == {
        "run.json",
        "log.csv",
        "checkpoint.pt",
        "curves.png",
        "evaluation.json",
    }
    assert json.loads((out / "run.json").read_text())["target"] == "td0"


def test_log_has_a_row_per_batch_and_a_real_loss(td0_run):
    out, _, _, _ = td0_run
    rows = read_log(out / "log.csv")
    assert list(rows[0]) == list(LOG_COLUMNS)
    assert [r["frames"] for r in rows] == [32.0 * (i + 1) for i in range(FRAMES // 32)]
    losses = [r["loss"] for r in rows if not math.isnan(r["loss"])]
    assert len(losses) >= 2 and all(math.isfinite(x) for x in losses)
    assert len(set(losses)) > 1, "the loss never changed"
    assert not math.isnan(rows[0]["eval_mean"]) and not math.isnan(rows[-1]["eval_mean"])
    assert rows[-1]["epsilon"] < rows[0]["epsilon"]


def test_checkpoint_holds_the_run(td0_run):
    out, _, _, _ = td0_run
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["frames"] == FRAMES and state["target"] == "td0" and not state["interrupted"]
    assert set(state["obs_norm"]) >= {"loc", "scale"} and state["optimizer"]["state"]
    assert state["params"].keys() == state["target_params"].keys()
    assert any(
        not torch.equal(state["params"][k], state["target_params"][k]) for k in state["params"]
    )


def test_the_run_keeps_its_best_evaluated_agent(td0_run):
    out, _, _, _ = td0_run
    rows = [r for r in read_log(out / "log.csv") if not math.isnan(r["eval_mean"])]
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    best = max(r["eval_mean"] for r in rows)
    # Ties go to the later evaluation: the agent that trained longer.
    best_frames = [r["frames"] for r in rows if r["eval_mean"] == best][-1]
    assert state["best_eval"] == pytest.approx(best) and state["best_frames"] == best_frames
    assert state["best_params"].keys() == state["params"].keys()


def test_final_evaluation_is_what_evaluate_prints(td0_run):
    out, _, _, _ = td0_run
    saved = json.loads((out / "evaluation.json").read_text())
    assert saved["episodes"] == 3 and saved["seed"] == 200_000  # smoke: 3 test episodes
    again = cli("evaluate", "--checkpoint", str(out), "--episodes", "3", "--json")
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(again.stdout)["lengths"] == saved["lengths"]


def test_nothing_left_behind(td0_run):
    out, _, new_workers, new_temp = td0_run
    assert not new_workers, f"worker processes left: {new_workers}"
    assert not list(out.glob(".replay-*")) and not list(out.rglob("*.memmap"))
    assert not new_temp, f"left in the temp folder: {new_temp}"


def test_resume_continues_the_run(td0_run, tmp_path):
    copy = shutil.copytree(td0_run[0], tmp_path / "run")
    result = cli(
        "train",
        "--target",
        "td0",
        "--mode",
        "smoke",
        "--frames",
        str(FRAMES + 64),
        "--out",
        str(copy),
        "--resume",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = read_log(copy / "log.csv")
    assert rows[-1]["frames"] == FRAMES + 64 and len(rows) == FRAMES // 32 + 2
    assert torch.load(copy / "checkpoint.pt", weights_only=True)["frames"] == FRAMES + 64


@pytest.mark.parametrize(
    "signum",
    [signal.SIGINT, signal.SIGTERM],  # Jupyter's stop button; `kill PID`, `timeout`, schedulers
)
def test_interrupt_keeps_log_and_checkpoint_and_stops_workers(tmp_path, signum):
    out = tmp_path / "run"
    workers_before = spawned_workers()
    env = {**os.environ, "SDL_VIDEODRIVER": "dummy"}
    args = [
        sys.executable,
        "-m",
        "helpers",
        "train",
        "--target",
        "td-lambda",
        "--mode",
        "smoke",
        "--frames",
        "20000",
        "--out",
        str(out),
    ]
    proc = subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    log = out / "log.csv"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (
        not log.exists() or len(log.read_text().splitlines()) < 4
    ):
        time.sleep(0.5)
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert "Interrupted" in stdout
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    rows = read_log(log)
    assert state["interrupted"] and 0 < state["frames"] < 20000
    assert rows[-1]["frames"] <= state["frames"] and len(rows) >= 3
    assert (out / "curves.png").exists()
    time.sleep(1)
    assert not spawned_workers() - workers_before
    assert not list(out.glob(".replay-*"))


@pytest.mark.parametrize(
    "args,message",
    [
        (["--target", "td2", "--mode", "smoke"], "invalid choice"),
        (["--target", "td0", "--mode", "smoke", "--frames", "16"], "smaller than one batch"),
        (["--target", "td0", "--mode", "fast"], "invalid choice"),
    ],
)
def test_bad_arguments(tmp_path, args, message):
    result = cli("train", *args, "--out", str(tmp_path / "x"))
    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / "x" / "log.csv").exists()


def test_resume_without_a_checkpoint(tmp_path):
    result = cli("train", "--target", "td0", "--mode", "smoke", "--out", str(tmp_path), "--resume")
    assert result.returncode == 2 and "No checkpoint" in result.stderr


def test_resume_from_a_corrupt_checkpoint_changes_nothing(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "log.csv").write_text("batch\n0\n")
    result = cli("train", "--target", "td0", "--mode", "smoke", "--out", str(tmp_path), "--resume")
    assert result.returncode == 2 and "not a readable checkpoint" in result.stderr
    assert (tmp_path / "log.csv").read_text() == "batch\n0\n"


def test_an_output_folder_with_another_run_is_refused(td0_run):
    out, _, _, _ = td0_run
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    result = cli("train", "--target", "td-lambda", "--mode", "smoke", "--out", str(out))
    assert result.returncode == 2 and "different run" in result.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_resuming_with_another_pipeline_is_refused(td0_run, tmp_path):
    copy = shutil.copytree(td0_run[0], tmp_path / "run")
    before = {p.name: p.read_bytes() for p in copy.iterdir()}
    args = ["--target", "td0", "--mode", "smoke", "--preset", "tutorial", "--out", str(copy)]
    result = cli("train", *args, "--frames", str(FRAMES + 64), "--resume")
    assert result.returncode == 2 and "course pipeline" in result.stderr
    assert {p.name: p.read_bytes() for p in copy.iterdir()} == before


def test_help_explains_each_option():
    result = cli("train", "--help")
    options = ("--target", "--mode", "--preset", "--frames", "--seed", "--out", "--resume")
    for option in (*options, "--overwrite"):
        assert option in result.stdout


def test_overwrite_keeps_the_replaced_run_in_previous(td0_run, tmp_path):
    copy = shutil.copytree(td0_run[0], tmp_path / "run")
    old_log = (copy / "log.csv").read_text()
    result = cli(
        "train",
        "--target",
        "td0",
        "--mode",
        "smoke",
        "--frames",
        "64",
        "--out",
        str(copy),
        "--overwrite",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (copy / "previous" / "log.csv").read_text() == old_log
    assert (copy / "previous" / "checkpoint.pt").exists()
    assert read_log(copy / "log.csv")[-1]["frames"] == 64
