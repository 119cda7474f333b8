"""Process utils: find the worker processes that collectors and ParallelEnvs start, and stop stragglers."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

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
    checks `requested` between batches. A second interrupt raises KeyboardInterrupt at once,
    or, inside a `deferred()` block (a gradient step, a weight update), as that block ends.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self.saving = False
        self._deferring = self._pending = False
        self._previous: dict = {}

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """A block that a second interrupt does not cut in half (it raises as the block ends):
        an exception inside TorchRL's functional calls or weight updates would leave parameters
        swapped or a collector waiting."""
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False
        if self._pending:
            raise KeyboardInterrupt

    def shield(self) -> None:
        """From now on interrupts only say that the run is stopping: the caller is saving
        its state, which an exception halfway through would leave inconsistent."""
        self.saving = True

    def _handler(self, signum, frame) -> None:
        if self.saving:
            print("\nStopping: saving the checkpoint and stopping the workers first.")
            return
        if self.requested:
            if self._deferring:
                self._pending = True
                return
            raise KeyboardInterrupt
        self.requested = True
        print("\nInterrupt received: stopping after this batch (interrupt again to stop at once).")

    def __enter__(self) -> StopOnInterrupt:
        self._previous = _handle_interrupts(self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)


def _handle_interrupts(handler) -> dict:
    """Send SIGINT and SIGTERM to `handler`, even where a parent blocked them (a Ray worker
    blocks SIGINT and passes its mask on) or ignored them (a script's background job); return
    the handlers it replaced. Only the main thread can: elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {s: signal.signal(s, handler) for s in StopOnInterrupt.SIGNALS}
    signal.pthread_sigmask(signal.SIG_UNBLOCK, StopOnInterrupt.SIGNALS)
    return previous


@contextmanager
def children_ignore_interrupts() -> Iterator[None]:
    """Start processes inside this block that never receive SIGINT and SIGTERM.

    A terminal's Ctrl+C reaches every process of the foreground group: a collector's worker
    would die mid-batch while the main process waits for it, and the run would hang. Inside
    the block both signals are blocked; workers started here keep them blocked for good (a
    process inherits the signal mask across the spawn) and leave them to the main process,
    which stops them itself (`stop_workers`). A signal that reaches the main process while the
    workers start waits, and is handled as the block ends.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, StopOnInterrupt.SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextmanager
def interrupts_raise() -> Iterator[None]:
    """Ctrl+C and SIGTERM raise KeyboardInterrupt in this block, even where the process was
    started with them ignored or blocked (a background job of a script, a Ray worker)."""

    def interrupt(signum, frame) -> None:
        raise KeyboardInterrupt

    previous = _handle_interrupts(interrupt)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
