"""Process utils: find the worker processes that collectors and ParallelEnvs start, and stop stragglers."""

from __future__ import annotations

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
