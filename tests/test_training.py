"""Real (smoke-sized) training runs through the command line: logs, checkpoints, interrupts, errors."""

import contextlib
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
from clitools import cli, start_cli, wait_until

from helpers.run.logs import LOG_COLUMNS, CsvLog, read_log

pytestmark = pytest.mark.slow  # left out of the quick lane (make check)

FRAMES = 160  # five smoke batches: training starts after the second


def spawned_workers() -> set[int]:
    """pids of multiprocessing workers anywhere on the machine (orphans included)."""
    pids = set()
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(p.info["cmdline"] or [])
        if "spawn_main" in cmdline or "forkserver" in cmdline:
            pids.add(p.info["pid"])
    return pids


def contents(folder: Path) -> dict[str, bytes]:
    """The run's files and their bytes (the lock file only holds the pid of its last user)."""
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.name != ".lock"}


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
    # (a worker may take a moment to exit after the command returns; one that stays is reported)
    with contextlib.suppress(AssertionError):
        wait_until(lambda: not spawned_workers() - workers_before, 10, "workers left")
    return out, result, spawned_workers() - workers_before, temp_entries() - temp_before


def test_train_writes_log_checkpoint_and_curves(td0_run):
    out, result, _, _ = td0_run
    assert result.returncode == 0, result.stderr[-2000:]
    assert {p.name for p in out.iterdir()} == {
        ".lock",
        ".course-run",
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
    assert not (out / "replay").exists() and not list(out.rglob("*.memmap"))
    assert not new_temp, f"left in the temp folder: {new_temp}"


def test_resume_continues_the_run(td0_run, tmp_path):
    copy = shutil.copytree(td0_run[0], tmp_path / "run")
    # ...even from a log written before its last column was logged: it goes on, empty there.
    table = [line.split(",") for line in (copy / "log.csv").read_text().splitlines()]
    assert table[0][-2] == "eval_played"
    old = "".join(",".join(r[:-2] + r[-1:]) + "\n" for r in table)
    (copy / "log.csv").write_text(old)
    before = read_log(copy / "log.csv")
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
    assert [r["eval_mean"] for r in rows[: len(before)]] == pytest.approx(
        [r["eval_mean"] for r in before], nan_ok=True
    )
    assert all(math.isnan(r["eval_played"]) for r in rows[: len(before)])
    assert torch.load(copy / "checkpoint.pt", weights_only=True)["frames"] == FRAMES + 64


def start_run(out: Path, frames: int = 20_000, *extra: str) -> subprocess.Popen:
    """A real smoke-mode TD(lambda) run in its own process group, as a terminal starts one."""
    args = ["train", "--target", "td-lambda", "--mode", "smoke", "--frames", str(frames)]
    return start_cli(*args, "--out", str(out), *extra)


def wait_for_rows(log: Path, rows: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not log.exists() or len(log.read_text().splitlines()) < rows + 1:
        assert time.monotonic() < deadline, f"no {rows} log rows after {timeout} s"
        time.sleep(0.2)


def assert_all_exited(processes: list[psutil.Process]) -> None:
    """Every process of a run (its collectors and their workers) has exited."""
    _, alive = psutil.wait_procs(processes, timeout=5)
    alive = [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"processes left behind: {[p.cmdline() for p in alive]}"


def assert_consistent(out: Path, finished: bool) -> None:
    """The checkpoint and the log agree, no partial file is left, and the replay memory is
    kept for --resume exactly while the run is unfinished."""
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    rows = read_log(out / "log.csv")
    assert state["interrupted"] is not finished
    assert rows[-1]["frames"] == state["frames"] and len(rows) == state["batches"]
    assert not list(out.glob("*.tmp"))
    if finished:
        assert state["replay"] is None and not (out / "replay").exists()
    else:  # every step logged is in the kept memory (and maybe the batch a signal cut short)
        assert state["frames"] <= state["replay"]["steps_written"] <= state["frames"] + 32
        assert (out / "replay" / "frame.memmap").stat().st_size == 512 * 64 * 64


@pytest.mark.parametrize(
    "signum,group",
    [
        (signal.SIGINT, False),  # Jupyter's stop button: the main process alone
        (signal.SIGINT, True),  # Ctrl+C in a terminal: every process of the foreground group
        (signal.SIGTERM, False),  # `kill PID`, `timeout`, schedulers
        (signal.SIGTERM, True),  # `kill -- -PGID`, `docker stop` of a shell
        (signal.SIGHUP, False),  # the terminal or SSH session closed
        (signal.SIGHUP, True),  # ... as the shell passes it on to its foreground job
    ],
)
def test_interrupt_keeps_log_and_checkpoint_and_stops_workers(tmp_path, signum, group):
    out = tmp_path / "run"
    proc = start_run(out)
    wait_for_rows(out / "log.csv", 3)
    processes = psutil.Process(proc.pid).children(recursive=True)
    os.killpg(proc.pid, signum) if group else proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=60)  # (a run that does not stop fails here)
    assert proc.returncode == 130, stderr[-2000:]
    assert "Interrupted" in stdout
    assert_consistent(out, finished=False)
    assert 3 <= len(read_log(out / "log.csv")) < 20_000 // 32
    assert (out / "curves.png").exists()
    assert_all_exited(processes)


def test_a_second_interrupt_stops_at_once_and_keeps_a_consistent_folder(tmp_path):
    out = tmp_path / "run"
    proc = start_run(out)
    wait_for_rows(out / "log.csv", 3)
    processes = psutil.Process(proc.pid).children(recursive=True)
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert_consistent(out, finished=False)
    assert_all_exited(processes)


def rows_after_checkpoint(out: Path) -> bool:
    """The run's log has rows that its last checkpoint does not count."""
    try:
        rows = len(read_log(out / "log.csv"))
        return rows > torch.load(out / "checkpoint.pt", weights_only=True)["batches"]
    except (FileNotFoundError, ValueError):  # (no checkpoint yet, or a row being written)
        return False


def test_a_killed_run_resumes_from_its_last_checkpoint(tmp_path):
    # Smoke mode saves a checkpoint every 256 frames (8 batches), and when an evaluation is back.
    out = tmp_path / "run"
    proc = start_run(out)
    wait_for_rows(out / "log.csv", 12)
    while not rows_after_checkpoint(out):  # (one may have just been saved)
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["interrupted"] and state["frames"] >= 256
    assert len(read_log(out / "log.csv")) > state["batches"]  # rows the checkpoint never saw
    frames = state["frames"] + 64
    resumed = start_run(out, frames, "--resume")
    stdout, stderr = resumed.communicate(timeout=180)
    assert resumed.returncode == 0, stderr[-2000:]
    assert "Resuming with the replay memory kept in" in stdout
    rows = read_log(out / "log.csv")
    # The kept memory trains the first resumed batch (an empty one would wait 64 frames).
    assert not math.isnan(rows[state["batches"]]["loss"])
    assert [r["frames"] for r in rows] == [32 * (i + 1) for i in range(frames // 32)]
    assert all(b["seconds"] >= a["seconds"] for a, b in zip(rows, rows[1:]))
    assert_consistent(out, finished=True)
    assert json.loads((out / "run.json").read_text())["config"]["total_frames"] == frames


def test_two_runs_in_one_folder(tmp_path):
    out = tmp_path / "run"
    first = start_run(out)
    wait_for_rows(out / "log.csv", 1)
    second = start_run(out, 20_000, "--overwrite")
    _, stderr = second.communicate(timeout=60)
    assert second.returncode == 2 and "in use by another run" in stderr
    os.killpg(first.pid, signal.SIGINT)
    first.communicate(timeout=60)
    assert first.returncode == 130
    assert_consistent(out, finished=False)
    assert not (out / "previous").exists()


def test_a_full_disk_keeps_the_last_checkpoint(td0_run, tmp_path):
    copy = shutil.copytree(td0_run[0], tmp_path / "run")
    before = (copy / "checkpoint.pt").read_bytes()
    env = dict(os.environ)  # (headless: conftest sets SDL_VIDEODRIVER)
    limit = len(before) // 2  # room for the log and the replay memory, not for a checkpoint
    script = f"ulimit -f {limit // 1024} && exec {sys.executable} -m helpers train "
    script += f"--target td0 --mode smoke --frames {FRAMES + 256} --out {copy} --resume"
    result = subprocess.run(
        ["bash", "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Could not write" in result.stderr and "--resume" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert (copy / "checkpoint.pt").read_bytes() == before
    assert not list(copy.glob("*.tmp"))


@pytest.mark.parametrize(
    "args,message",
    [
        (["--target", "td2", "--mode", "smoke"], "invalid choice"),
        (["--target", "td0", "--mode", "smoke", "--frames", "16"], "smaller than one batch"),
        (["--target", "td0", "--mode", "fast"], "invalid choice"),
        (["--target", "td0", "--mode", "smoke", "--seed", "-1"], "--seed must be between"),
        (["--target", "td0", "--mode", "smoke", "--frames", "10" * 12], "is above"),
        (["--target", "td0", "--mode", "smoke", "--set", "eval_every=0"], "must be positive"),
    ],
)
def test_bad_arguments(tmp_path, args, message):
    result = cli("train", *args, "--out", str(tmp_path / "x"))
    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / "x").exists()


def test_a_script_without_a_main_guard_fails_clearly_and_exits(tmp_path):
    # Worker processes import the script (as spawn does): its top-level train() runs again in them.
    script = tmp_path / "script.py"
    out = tmp_path / "run"
    script.write_text(
        f"from helpers.training import train\ntrain('td0', {str(out)!r}, mode='smoke', progress=False)\n"
    )
    env = dict(os.environ)  # (headless: conftest sets SDL_VIDEODRIVER)
    result = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    assert 'put that call under `if __name__ == "__main__":`' in result.stderr
    assert not (out / "run.json").exists()  # the folder is free for the fixed script


@pytest.mark.parametrize(
    "device,message",
    [("gpu", "Unknown device 'gpu'"), ("cuda", "not available on this machine")],
)
def test_a_bad_device_is_one_line_and_leaves_the_folder_alone(td0_run, device, message):
    out = td0_run[0]
    before = contents(out)
    env = {**os.environ, "DQN_COURSE_DEVICE": device}
    args = [sys.executable, "-m", "helpers", "train", "--target", "td0", "--mode", "smoke"]
    result = subprocess.run(
        [*args, "--out", str(out), "--overwrite"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 2 and message in result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert contents(out) == before


@pytest.mark.parametrize("where", ["under a file", "in /proc"])
def test_an_unwritable_out_folder_is_one_line(tmp_path, where):
    # /proc refuses new folders even to root (CI runs as root, so chmod would not do).
    if where == "under a file":
        (tmp_path / "file").write_text("")
        out = tmp_path / "file" / "run"
    else:
        out = Path("/proc/pixel-dqn-course-test/run")
    result = cli("train", "--target", "td0", "--mode", "smoke", "--out", str(out))
    assert result.returncode == 2 and "Cannot use" in result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr


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
    before = contents(out)
    result = cli("train", "--target", "td-lambda", "--mode", "smoke", "--out", str(out))
    assert result.returncode == 2 and "different run" in result.stderr
    assert contents(out) == before


def test_resuming_a_finished_run_without_more_frames_changes_nothing(td0_run, tmp_path):
    copy = shutil.copytree(td0_run[0], tmp_path / "run")
    before = contents(copy)
    args = ["--target", "td0", "--mode", "smoke", "--frames", str(FRAMES), "--out", str(copy)]
    result = cli("train", *args, "--resume")
    assert result.returncode == 2 and "raise total_frames" in result.stderr
    assert contents(copy) == before


def test_resuming_a_run_stopped_in_its_final_evaluation_only_evaluates(td0_run, tmp_path):
    copy = shutil.copytree(td0_run[0], tmp_path / "run")
    evaluation = json.loads((copy / "evaluation.json").read_text())
    (copy / "evaluation.json").unlink()  # what Ctrl+C during the final evaluation leaves
    before = contents(copy)
    args = ["--target", "td0", "--mode", "smoke", "--frames", str(FRAMES), "--out", str(copy)]
    result = cli("train", *args, "--resume")
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((copy / "evaluation.json").read_text())["lengths"] == evaluation["lengths"]
    assert {k: v for k, v in contents(copy).items() if k != "evaluation.json"} == before


def test_resuming_with_another_pipeline_is_refused(td0_run, tmp_path):
    copy = shutil.copytree(td0_run[0], tmp_path / "run")
    before = contents(copy)
    args = ["--target", "td0", "--mode", "smoke", "--preset", "tutorial", "--out", str(copy)]
    result = cli("train", *args, "--frames", str(FRAMES + 64), "--resume")
    assert result.returncode == 2 and "uint8 pipeline" in result.stderr
    assert contents(copy) == before


@pytest.mark.parametrize(
    "command", ["", "train", "evaluate", "video", "bench", "results", "sweep", "ship"]
)
def test_help_answers_without_importing_torch(command):
    # `python -X importtime` lists every module the interpreter imported, one per line.
    args = [sys.executable, "-X", "importtime", "-m", "helpers", *command.split(), "--help"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "usage:" in result.stdout, result.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()}
    assert "helpers.commands.cli" in imported  # the listing is there: the check can fail
    assert not imported & {"torch", "torchrl", "tensordict"}, command


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


def test_a_run_stops_once_an_agent_plays_every_evaluation_episode_to_the_limit(tmp_path):
    # With episodes cut at 5 steps every agent is perfect: the first evaluation (of the
    # agent at the first batch) ends the run, long before its frames are collected.
    out = tmp_path / "run"
    args = ["--target", "td0", "--mode", "smoke", "--frames", "4096", "--out", str(out)]
    result = cli("train", *args, "--set", "eval_max_steps=5")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = read_log(out / "log.csv")
    # Smoke mode's 2 evaluation episodes and the 2 that confirm them, all at the limit.
    assert rows[0]["eval_mean"] == 5.0 and rows[0]["eval_played"] == 4
    assert 32 <= rows[-1]["frames"] < 4096
    assert "Stopped after" in result.stdout and "could replace it" in result.stdout
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=False)
    assert checkpoint["interrupted"] is False and checkpoint["best_frames"] == 32
    assert checkpoint["frames"] == rows[-1]["frames"]
    assert json.loads((out / "evaluation.json").read_text())["max"] == 5
    assert not (out / "replay").exists()
    # Resuming it, even with more frames, cannot change its agent: refused, nothing touched.
    before = contents(out)
    result = cli("train", *args, "--set", "eval_max_steps=5", "--frames", "8192", "--resume")
    assert result.returncode == 2 and "is finished" in result.stderr
    assert contents(out) == before


def test_a_log_cut_between_memory_and_disk_is_written_again_from_memory(tmp_path):
    # A worker's death can interrupt the main thread after a row is kept in memory and before
    # its line reaches the file; the run then writes the file again from memory (stopped()).
    log = CsvLog(tmp_path / "log.csv")
    for i in range(3):
        log.write({"batch": i, "frames": 32 * (i + 1), "loss": 0.5})
    lines = (tmp_path / "log.csv").read_text().splitlines()
    (tmp_path / "log.csv").write_text("\n".join(lines[:-1]) + "\n")  # the last line lost
    assert len(read_log(tmp_path / "log.csv")) == 2
    log.settle()
    assert [r["frames"] for r in read_log(tmp_path / "log.csv")] == [32, 64, 96]
    assert not list(tmp_path.glob("*.tmp"))


def test_a_log_that_cannot_be_written_again_forgets_the_rows_its_file_lacks(tmp_path):
    # On a full disk the file cannot be written again: the rows in memory then go back to the
    # whole lines the file holds, so that the last checkpoint counts no row the log lacks.
    log = CsvLog(tmp_path / "log.csv")
    for i in range(4):
        log.write({"batch": i, "frames": 32 * (i + 1), "loss": 0.5})
    lines = (tmp_path / "log.csv").read_text().splitlines()
    cut = "\n".join(lines[:3]) + "\n" + lines[3][:5]  # header, two rows, half of the third
    (tmp_path / "log.csv").write_text(cut)
    (tmp_path / "log.csv.tmp").mkdir()  # where the rewrite would go: writing it fails
    log.settle()
    assert [r["frames"] for r in log.rows] == [32, 64]
    assert (tmp_path / "log.csv").read_text() == cut  # the file as it was
