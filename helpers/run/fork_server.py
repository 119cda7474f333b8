"""No notebook (run tooling). The fork server the course's worker processes start from: one
process imports torch, torchrl and the course's worker code once, then forks each worker (the
collector's, the evaluator's, the final evaluation's) from itself.

A spawned worker is a fresh interpreter that imports all that for itself: seconds of CPU and
about 280 MB of memory of its own per process with torch's CUDA build. Forked from the server,
it starts in a fraction of a second and shares those pages (results/levers/fork-server/).
The server lives for one run (`fork_server`): an idle notebook kernel does not hold it, and
the next run's workers see the environment variables and code of their time.
"""

from __future__ import annotations

import contextlib
import multiprocessing
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing import forkserver
from multiprocessing.context import BaseContext

import psutil

from helpers.run.workers import children_ignore_interrupts

# What the server imports before it forks any worker: the bulk of a worker's start-up.
WORKER_MODULES = ["helpers.loop", "helpers.run.evaluator", "helpers.evaluation"]
_blocks = 0  # `fork_server` blocks open in this process (the outermost one stops the server)


def worker_context() -> BaseContext:
    """The multiprocessing context of the course's workers, its fork server started if none
    runs. The server starts with SIGINT, SIGTERM and SIGHUP blocked and every worker it forks
    keeps them blocked (`children_ignore_interrupts`): the main process stops its workers."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(WORKER_MODULES)
    with children_ignore_interrupts():
        forkserver.ensure_running()
    return context


@contextmanager
def fork_server() -> Iterator[None]:
    """A block whose workers come from one fork server (a run, an evaluation): the server is
    stopped as the outermost such block ends, once no worker of it is left (one left would
    keep it alive, and stopping it would wait for that worker)."""
    global _blocks
    _blocks += 1
    try:
        yield
    finally:
        _blocks -= 1
        if _blocks == 0:
            _stop_server()


def fork_servers() -> list[psutil.Process]:
    """This process's fork server in a list, or an empty list if none runs. A run watches it
    beside its workers: killed, it leaves them running without their parent."""
    pid = getattr(forkserver._forkserver, "_forkserver_pid", None)
    try:
        return [] if pid is None else [psutil.Process(pid)]
    except psutil.NoSuchProcess:
        return []


def _stop_server() -> None:
    """Stop this process's fork server if it runs and has no worker left."""
    server = forkserver._forkserver  # (Python's, one per process; 3.11 to 3.13 stop it so)
    if getattr(server, "_forkserver_pid", None) is None or not hasattr(server, "_stop"):
        return
    for process in fork_servers():
        with contextlib.suppress(psutil.Error):
            if any(c.status() != psutil.STATUS_ZOMBIE for c in process.children()):
                return
    try:
        server._stop()
    except ChildProcessError:  # (reaped already: forget it, so that a new one can start)
        server._forkserver_pid = server._forkserver_address = None


@contextmanager
def collector_start_method() -> Iterator[None]:
    """torchrl's collectors start their processes with the global start method: the fork
    server's while they start, whatever it was before (other code in a notebook's kernel keeps
    its own)."""
    previous = multiprocessing.get_start_method(allow_none=True)
    worker_context()
    multiprocessing.set_start_method("forkserver", force=True)
    try:
        yield
    finally:
        multiprocessing.set_start_method(previous, force=True)
