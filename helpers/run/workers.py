"""No notebook (run tooling). Process utils: find the worker processes that collectors and ParallelEnvs start, and stop stragglers."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from multiprocessing import resource_tracker

import psutil


def worker_processes(pid: int | None = None) -> list[psutil.Process]:
    """Live child processes of this one (or of process `pid`) started by multiprocessing
    (spawn or forkserver workers, and theirs).

    Python's resource tracker and the process's fork server (helpers.run.fork_server) are
    left out: helpers that serve its runs and exit with them (or with it). A fork server that
    a worker starts for workers of its own (a collector's ParallelEnv, in the tutorial's
    layout) is counted: it is one of the run's processes, and ends with that worker.
    """
    workers, parent = [], psutil.Process(pid)
    for child in parent.children(recursive=True):
        try:
            cmdline = " ".join(child.cmdline())
            server = child.ppid() == parent.pid and is_fork_server(child)
            if child.status() == psutil.STATUS_ZOMBIE or "resource_tracker" in cmdline or server:
                continue
        except psutil.NoSuchProcess:
            continue
        workers.append(child)
    return workers


def is_fork_server(process: psutil.Process) -> bool:
    """Whether `process` is a multiprocessing fork server (False once it has ended)."""
    try:
        return "forkserver import main" in " ".join(process.cmdline())
    except psutil.Error:
        return False


def stop_workers(
    keep: set[int] = frozenset(), timeout: float = 10.0, also: Sequence[psutil.Process] = ()
) -> list[int]:
    """Wait up to `timeout` seconds for worker processes to exit, then terminate the rest.

    Args:
        keep: pids to leave alone (workers that existed before the caller started its own).
        timeout: seconds to wait for a clean exit before terminating, then killing.
        also: processes to stop as well, wherever they now are (a run's workers, which a
            killed fork server leaves to another parent).

    Returns:
        The pids that had to be terminated or killed.
    """
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in worker_processes() if p.pid not in keep]
        left += [p for p in also if _alive(p) and p not in left]
        if not left:
            return []
        if time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    for process in left:
        process.terminate()
    _, alive = psutil.wait_procs(left, timeout=3)
    for process in alive:
        process.kill()
    return [p.pid for p in left]


class WorkerDiedError(ChildProcessError):
    """A worker process (the collector's, the evaluator's, a final evaluation's) ended while it
    was still needed."""


class WorkerGone(BaseException):  # noqa: N818 (an interruption, like KeyboardInterrupt)
    """How `StopOnInterrupt.watch` interrupts the main thread when a worker dies; the run turns
    it into its `error`. A BaseException, like KeyboardInterrupt, so that no `except
    Exception` on the way swallows it (torchrl's weight sync logs and drops those), and no
    handler of OSError (a checkpoint's save) mistakes it for a full disk."""

    def __init__(self, error: WorkerDiedError) -> None:
        super().__init__(str(error))
        self.error = error


class StopOnInterrupt:
    """Turn the first Ctrl+C, the notebook's stop button, SIGTERM (`kill PID`, `timeout`) or
    SIGHUP (a closed terminal or SSH session) into a polite request to stop.

    Inside the block, these signals set `requested` instead of raising KeyboardInterrupt
    wherever the code happens to be (which can leave a collector or a functional call half
    done); the loop checks `requested` between batches. A second interrupt raises
    KeyboardInterrupt at once or, inside a `deferred()` block (a gradient step, a weight
    update), as that block ends, or after `GRACE` seconds if the block is waiting (on a worker
    that no longer answers, say). `watch` raises `WorkerGone` in the main thread within a
    second of a worker's death, wherever it waits.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    WAKE = signal.SIGUSR1  # sent to the main thread to raise what `_wake` was given
    GRACE = 3.0  # seconds a second interrupt waits for a deferred block to end
    POLL = 0.5  # seconds between two looks at the watched workers
    REPEAT = 2.0  # seconds before a worker's death is raised again, if the run still goes on

    def __init__(self) -> None:
        self.requested = False
        self.saving = False
        self.worker_died = False
        self._deferring = self._pending = False
        self._raise: BaseException | None = None
        self._watched: list[psutil.Process] = []
        self._names: dict[int, str] = {}
        self._done = threading.Event()
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
        self._done.set()

    def watch(self, processes: list[psutil.Process], names: dict[int, str] | None = None) -> None:
        """Raise WorkerGone in the main thread as soon as one of `processes` ends, and again
        every REPEAT seconds until `shield` (a library's `except` on the way may have dropped
        it): a collector waits forever for a worker that was killed. `names` says what a pid
        is ("the collector's worker" by default)."""

        self._watched, self._names = processes, names or {}

        def look() -> None:
            woken = -self.REPEAT
            while not self._done.wait(self.POLL):
                error = self.dead_worker()
                if error is not None and time.monotonic() - woken >= self.REPEAT:
                    self._wake(WorkerGone(error))
                    woken = time.monotonic()

        threading.Thread(target=look, daemon=True, name="watch-workers").start()

    def dead_worker(self, wait: float = 0.0) -> WorkerDiedError | None:
        """The error to raise if a watched worker has ended (torchrl raises its own, with a
        traceback, when it notices first), given up to `wait` seconds to show as ended."""
        deadline = time.monotonic() + wait
        while (dead := next((p for p in self._watched if not _alive(p)), None)) is None:
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)
        self.worker_died = True
        name = self._names.get(dead.pid, "The collector's worker")
        return WorkerDiedError(
            f"{name} process (pid {dead.pid}) ended while the run needed it "
            "(killed, or out of memory?). The run stopped with its log and checkpoint kept: "
            "--resume goes on from there."
        )

    def _wake(self, error: BaseException) -> None:
        """Have the main thread raise `error` (a signal interrupts even a blocking read)."""
        if not self.saving:
            self._raise = error
            signal.pthread_kill(threading.main_thread().ident, self.WAKE)

    def _on_wake(self, signum, frame) -> None:
        error, self._raise = self._raise, None
        if error is not None and not self.saving:
            raise error

    def _still_waiting(self) -> None:
        if self._deferring and self._pending:
            self._wake(KeyboardInterrupt())

    def _handler(self, signum, frame) -> None:
        if signum == signal.SIGHUP:
            _detach_terminal()
        if self.saving:
            _say("\nStopping: saving the checkpoint and stopping the workers first.")
            return
        if self.requested:
            if self._deferring and not self._pending:
                self._pending = True
                timer = threading.Timer(self.GRACE, self._still_waiting)
                timer.daemon = True
                timer.start()
                return
            raise KeyboardInterrupt
        self.requested = True
        _say("\nInterrupt received: stopping after this batch (interrupt again to stop at once).")

    def __enter__(self) -> StopOnInterrupt:
        self._previous = _handle_interrupts(self._handler)
        if self._previous:
            self._previous[self.WAKE] = signal.signal(self.WAKE, self._on_wake)
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _detach_terminal() -> None:
    """The terminal is gone (SIGHUP): write what is printed from now on to /dev/null, since
    writing to a closed terminal fails (EIO) and would end the run before it saves."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in (1, 2):
        if os.isatty(fd):
            os.dup2(devnull, fd)
    os.close(devnull)


def _say(text: str) -> None:
    """Print, where there is still somewhere to print to."""
    try:
        print(text, flush=True)
    except OSError:
        pass


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
    the block the signals are blocked; workers started here keep them blocked for good (a
    process inherits the signal mask across the spawn or fork) and leave them to the main
    process, which stops them itself (`stop_workers`). Workers forked from the fork server
    take its mask instead, the one it started with (helpers.run.fork_server.worker_context
    starts it in this block). A signal that reaches the main process while the workers start
    waits, and is handled as the block ends.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    # Python starts its resource tracker with the first worker, and unblocks SIGINT and SIGTERM
    # as it does (Python 3.11 to 3.13): started first, it cannot undo the block below.
    resource_tracker.ensure_running()
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
