"""The main thread hears of a worker's death wherever it waits, even inside a library that
drops every Exception, and a checkpoint cut short by it leaves the saved one as it was."""

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
