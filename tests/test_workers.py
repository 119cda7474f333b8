"""The main thread hears of a worker's death wherever it waits, even inside a library that
drops every Exception, and a checkpoint cut short by it leaves the saved one as it was. Workers
keep Ctrl+C and SIGTERM blocked, however they are started."""

import json
import queue
import subprocess
import sys
import time

import psutil
import pytest
import torch

from helpers.run.checkpoints import save_checkpoint
from helpers.run.workers import StopOnInterrupt, WorkerDiedError, WorkerGone


def swallowing_wait(seconds: float) -> None:
    """Block like torchrl's weight sync does: any Exception raised while waiting for an
    acknowledgement is logged and dropped, and it waits again."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            queue.Queue().get(timeout=0.2)
        except Exception:  # noqa: BLE001 (what torchrl's _wait_for_ack does)
            pass


def test_a_dead_worker_interrupts_a_wait_that_drops_exceptions():
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)"])
    start = time.monotonic()
    with StopOnInterrupt() as stop:
        stop.watch([psutil.Process(worker.pid)], {worker.pid: "The test's"})
        with pytest.raises(WorkerGone) as gone:
            swallowing_wait(15)
        stop.shield()
    worker.wait()
    assert time.monotonic() - start < 5
    assert isinstance(gone.value.error, WorkerDiedError)
    assert str(gone.value.error).startswith(f"The test's process (pid {worker.pid}) ended")
    assert stop.worker_died


class Interrupted:
    """An object whose pickling is cut short, as a signal cuts a save halfway."""

    def __reduce__(self):
        raise WorkerGone(WorkerDiedError("a worker ended"))


def test_a_save_cut_short_raises_the_interruption_and_keeps_the_saved_checkpoint(tmp_path):
    path = save_checkpoint(tmp_path / "checkpoint.pt", batches=3, weight=torch.ones(2))
    before = path.read_bytes()
    with pytest.raises(WorkerGone):  # not reported as a full disk
        save_checkpoint(path, batches=4, weight=torch.zeros(2), extra=Interrupted())
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]  # no .tmp left


# A fresh interpreter (no resource tracker yet) starts a spawned worker inside
# children_ignore_interrupts as its first multiprocessing call, then one from the fork server,
# and reports each one's blocked signals and what worker_processes finds.
WORKERS_SCRIPT = """
import json, multiprocessing, time
from helpers.run.workers import children_ignore_interrupts, worker_context, worker_processes

def blocked(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("SigBlk:"):
            return int(line.split()[1], 16)

with children_ignore_interrupts():
    spawned = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(30,))
    spawned.start()
forked = worker_context().Process(target=time.sleep, args=(30,))
with children_ignore_interrupts():
    forked.start()
time.sleep(1)
found = sorted(p.pid for p in worker_processes())
print(json.dumps({"spawned": blocked(spawned.pid), "forked": blocked(forked.pid),
                  "expected": sorted([spawned.pid, forked.pid]), "found": found}))
spawned.kill(), forked.kill()
"""


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_workers_keep_interrupts_blocked_and_the_fork_server_is_not_a_worker():
    result = subprocess.run(
        [sys.executable, "-c", WORKERS_SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    seen = json.loads(result.stdout.splitlines()[-1])
    for signum in StopOnInterrupt.SIGNALS:  # bit n - 1 of the mask is signal n
        assert seen["spawned"] >> (signum - 1) & 1, f"a spawned worker takes {signum!r}"
        assert seen["forked"] >> (signum - 1) & 1, f"a forked worker takes {signum!r}"
    assert seen["found"] == seen["expected"]  # the two workers, not the resource tracker or server
