"""Run the course's command line in a separate process, as a user would; tell whether CI runs."""

import os
import signal
import subprocess
import sys
import time

STARTED: list[subprocess.Popen] = []  # every command start_cli started, for stop_leftovers


def cli(*args: str) -> subprocess.CompletedProcess:
    """`python -m helpers ARGS`, with headless rendering; returns the finished process."""
    env = dict(os.environ)  # (headless: conftest sets SDL_VIDEODRIVER)
    return subprocess.run(
        [sys.executable, "-m", "helpers", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def start_cli(*args: str) -> subprocess.Popen:
    """`python -m helpers ARGS` started in its own process group, as a terminal starts a command
    (Ctrl+C there is SIGINT to the whole group); stdout and stderr are piped."""
    env = dict(os.environ)  # (headless: conftest sets SDL_VIDEODRIVER)
    proc = subprocess.Popen(
        [sys.executable, "-m", "helpers", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    STARTED.append(proc)
    return proc


def stop_leftovers() -> None:
    """Kill what is left of the process group (the command and its workers) of every command
    start_cli started: a test that failed before it stopped its command leaves no run going
    beside the next tests."""
    while STARTED:
        proc = STARTED.pop()
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:  # (the command and its workers have all ended)
            pass
        proc.communicate()  # (reaps it and closes its pipes)


def in_ci() -> bool:
    """CI sets CI: tests that need an optional tool fail there instead of skipping."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def wait_until(condition, timeout: float, what: str) -> None:
    """Poll `condition()` until it is true; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout:.0f} s: {what}")
        time.sleep(0.1)
