"""Process utils: find the worker processes that collectors and ParallelEnvs start, and stop stragglers."""

from __future__ import annotations

import signal
import threading
import time

import psutil


def worker_processes() -> list[psutil.Process]:
    """Live child processes of this one started by multiprocessing (spawn or forkserver workers).

    Python's resource tracker is left out: it is a helper of the interpreter itself and
    exits with it.
    """
    workers = []
    for child in psutil.Process().children(recursive=True):
        try:
            cmdline = " ".join(child.cmdline())
            if child.status() == psutil.STATUS_ZOMBIE or "resource_tracker" in cmdline:
                continue
        except psutil.NoSuchProcess:
            continue
        workers.append(child)
    return workers


def stop_workers(keep: set[int] = frozenset(), timeout: float = 10.0) -> list[int]:
    """Wait up to `timeout` seconds for worker processes to exit, then terminate the rest.

    Args:
        keep: pids to leave alone (workers that existed before the caller started its own).
        timeout: seconds to wait for a clean exit before terminating, then killing.

    Returns:
        The pids that had to be terminated or killed.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [p for p in worker_processes() if p.pid not in keep]
        if not left:
            return []
        time.sleep(0.1)
    for process in left:
        process.terminate()
    _, alive = psutil.wait_procs(left, timeout=3)
    for process in alive:
        process.kill()
    return [p.pid for p in left]


class StopOnInterrupt:
    """Turn the first Ctrl+C, the notebook's stop button or SIGTERM (`kill PID`, `timeout`,
    `docker stop`) into a polite request to stop.

    Inside the block, SIGINT or SIGTERM sets `requested` instead of raising KeyboardInterrupt wherever the
    code happens to be (which can leave a collector or a functional call half done); the loop
    checks `requested` between batches. A second interrupt raises KeyboardInterrupt at once.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict = {}

    def _handler(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nInterrupt received: stopping after this batch (interrupt again to stop at once).")

    def __enter__(self) -> StopOnInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handler) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
