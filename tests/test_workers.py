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


# A fresh interpreter (no resource tracker, no fork server yet) starts a worker from the fork
# server and a spawned one inside children_ignore_interrupts, in the order given, and reports
# each one's blocked signals, what worker_processes finds, and the fork servers left once the
# fork_server block has ended.
WORKERS_SCRIPT = """
import json, multiprocessing, sys, time
import psutil
from helpers.run.fork_server import fork_server, worker_context
from helpers.run.workers import children_ignore_interrupts, worker_processes

def blocked(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("SigBlk:"):
            return int(line.split()[1], 16)

def spawned():
    with children_ignore_interrupts():
        process = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(30,))
        process.start()
    return process

def forked():
    process = worker_context().Process(target=time.sleep, args=(30,))
    with children_ignore_interrupts():
        process.start()
    return process

with fork_server():
    order = (spawned, forked) if sys.argv[1] == "spawned" else (forked, spawned)
    workers = {start.__name__: start() for start in order}
    time.sleep(1)
    seen = {name: blocked(process.pid) for name, process in workers.items()}
    seen["found"] = sorted(p.pid for p in worker_processes())
    seen["expected"] = sorted(p.pid for p in workers.values())
    for process in workers.values():
        process.kill()
        process.join()
children = psutil.Process().children()
seen["servers"] = [c.pid for c in children if "forkserver" in " ".join(c.cmdline())]
print(json.dumps(seen))
"""


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
@pytest.mark.parametrize("first", ["spawned", "forked"])
def test_workers_keep_interrupts_blocked_and_the_fork_server_ends_with_its_block(first):
    result = subprocess.run(
        [sys.executable, "-c", WORKERS_SCRIPT, first], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    seen = json.loads(result.stdout.splitlines()[-1])
    for signum in StopOnInterrupt.SIGNALS:  # bit n - 1 of the mask is signal n
        assert seen["spawned"] >> (signum - 1) & 1, f"a spawned worker takes {signum!r}"
        assert seen["forked"] >> (signum - 1) & 1, f"a forked worker takes {signum!r}"
    assert seen["found"] == seen["expected"]  # the two workers, not the resource tracker or server
    assert seen["servers"] == []  # stopped as the block ended
