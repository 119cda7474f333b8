"""Multi-seed sweeps on a real local Ray: a run folder per run, the summary and its bands, and an
interrupted sweep that, started again, skips what finished and resumes the rest."""

import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from clitools import cli, in_ci, start_cli, wait_until

from helpers import allow_ray
from helpers.commands.sweep import plan_sweep
from helpers.run.logs import read_log

pytestmark = pytest.mark.slow  # left out of the quick lane (make check)

allow_ray()  # (helpers hides Ray from torchrl)
try:
    import ray  # noqa: F401
except ImportError:
    if not in_ci():  # one line in `make test` (pytest -rs); CI installs it and must run this
        pytest.skip("sweep tests need Ray: pip install -e '.[scale]'", allow_module_level=True)

FRAMES = 2048  # a smoke run of about 20 s on 2 cores: long enough to interrupt mid-run


def test_a_sweep_plans_every_target_setting_and_seed():
    plan = plan_sweep(["td0", "td-lambda"], [0, 1], ["lr=1e-3,5e-4", "n_optim=3"])
    assert len(plan) == 2 * 2 * 2
    assert [r.name for r in plan[:2]] == [
        "td0-lr=1e-3-n_optim=3-seed0",
        "td0-lr=1e-3-n_optim=3-seed1",
    ]
    assert plan[-1].setting == "td-lambda lr=5e-4 n_optim=3"
    with pytest.raises(ValueError, match="NAME=VALUE"):
        plan_sweep(["td0"], [0], ["lr"])


@pytest.mark.parametrize(
    "args,message",
    [
        (["--set", "lr=fast"], "lr takes a value of type float"),
        (["--seeds", "-1"], "--seeds must be between"),
    ],
)
def test_bad_sweeps_are_one_line_before_ray_starts(tmp_path, args, message):
    result = cli("sweep", "--mode", "smoke", "--out", str(tmp_path / "s"), *args)
    assert result.returncode == 2 and message in result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip().splitlines()[-1]]
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").iterdir())


def ray_processes() -> set[int]:
    """pids of Ray's own processes (its raylet and GCS server) on this machine."""
    names = ("raylet", "gcs_server")
    return {p.pid for p in psutil.process_iter(["name"]) if p.info["name"] in names}


def sweep_process(out: Path) -> subprocess.Popen:
    """`python -m helpers sweep` of 2 smoke seeds, one run at a time, in its own process group."""
    args = ["sweep", "--mode", "smoke", "--seeds", "0", "1", "--frames", str(FRAMES)]
    return start_cli(*args, "--parallel", "1", "--out", str(out))


def test_an_interrupted_sweep_keeps_what_ran_and_finishes_when_started_again(tmp_path):
    ray_before = ray_processes()
    out = tmp_path / "sweep"
    first, second = out / "td-lambda-seed0", out / "td-lambda-seed1"
    proc = sweep_process(out)
    deadline = time.monotonic() + 240
    while not (second / "log.csv").exists() or len(read_log(second / "log.csv")) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl+C in the terminal that runs the sweep
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert "td-lambda-seed0: finished" in stdout and "Interrupted" in stdout
    assert (first / "evaluation.json").exists() and not (second / "evaluation.json").exists()
    assert json.loads((second / "command.json").read_text())["rc"] == 130
    assert "Interrupted after" in (second / "output.txt").read_text()  # it saved, then stopped
    assert "1 of 2 runs complete" in (out / "summary.md").read_text()
    finished_first = (first / "evaluation.json").stat().st_mtime_ns

    again = sweep_process(out)
    stdout, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, stderr[-2000:]
    assert "td-lambda-seed0: complete" in stdout and "td-lambda-seed1: resume" in stdout
    assert (first / "evaluation.json").stat().st_mtime_ns == finished_first  # not run again
    rows = read_log(second / "log.csv")
    assert [r["frames"] for r in rows] == [32 * (i + 1) for i in range(FRAMES // 32)]
    summary = (out / "summary.md").read_text()
    assert "2 of 2 runs complete" in summary and "| td-lambda | 2 |" in summary
    for folder in (first, second):
        assert {"run.json", "log.csv", "checkpoint.pt", "evaluation.json", "command.json"} <= {
            p.name for p in folder.iterdir()
        }
    with open(out / "bands.csv") as f:
        band = list(csv.DictReader(f))
    assert band and all(float(b["p10"]) <= float(b["median"]) <= float(b["p90"]) for b in band)
    assert (out / "bands.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    wait_until(lambda: ray_processes() <= ray_before, 30, "Ray's processes outlived the sweep")
    assert not [
        p for p in psutil.process_iter(["cmdline"]) if str(out) in " ".join(p.info["cmdline"] or [])
    ]
