"""Real full disks: a run on a small tmpfs is refused before it starts when its replay memory
cannot fit, and a disk that fills while it trains ends it with one line and its last
checkpoint intact (the memory's files are reserved up front, so no write can kill it)."""

import subprocess
import time
from pathlib import Path

import pytest
import torch
from clitools import cli, start_cli

from helpers.run.logs import read_log

pytestmark = pytest.mark.slow  # left out of the quick lane (make check)

TRAIN = ["train", "--target", "td0", "--mode", "smoke"]


@pytest.fixture
def small_disk(tmp_path, request):
    """A tmpfs of `request.param` MB mounted on a fresh folder (skipped where mounting is not
    allowed: not root, or a container without the capability)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    size = getattr(request, "param", 20)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip() or result.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name != ".lock")


@pytest.mark.parametrize("small_disk", [20], indirect=True)
def test_a_disk_without_room_for_the_replay_memory_is_refused_before_it_starts(small_disk):
    out = small_disk / "run"
    result = cli(*TRAIN, "--out", str(out))
    assert result.returncode == 2, result.stderr[-2000:]
    line = result.stderr.strip()
    assert line.count("\n") == 0 and line.startswith("error: The replay memory needs")
    assert "MB free" in line and "buffer_size" in line
    assert files(out) == []  # nothing written, nothing left filling the disk


@pytest.mark.parametrize("small_disk", [90], indirect=True)
def test_a_disk_that_fills_while_training_ends_the_run_with_one_line(small_disk):
    out = small_disk / "run"
    proc = start_cli(*TRAIN, "--frames", "20000", "--out", str(out))
    deadline = time.monotonic() + 120
    while not (out / "checkpoint.pt").exists() or len(read_log(out / "log.csv")) < 10:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    kept = torch.load(out / "checkpoint.pt", weights_only=True)
    with open(small_disk / "filler", "wb") as filler:  # another program fills the disk
        try:
            while True:
                filler.write(b"\0" * (1 << 20))
                filler.flush()
        except OSError:
            pass
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2, stderr[-2000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: Could not write") and "then --resume" in last, last
    state = torch.load(out / "checkpoint.pt", weights_only=True)  # a whole checkpoint
    assert state["batches"] >= kept["batches"]
    assert len(read_log(out / "log.csv")) >= state["batches"]  # every row it counts is there
    assert not list(out.glob("*.tmp"))  # no half-written file left filling the disk
