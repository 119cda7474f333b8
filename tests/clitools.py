"""Run the course's command line in a separate process, as a user would."""

import os
import subprocess
import sys


def cli(*args: str) -> subprocess.CompletedProcess:
    """`python -m helpers ARGS`, with headless rendering; returns the finished process."""
    env = {**os.environ, "SDL_VIDEODRIVER": "dummy"}
    return subprocess.run(
        [sys.executable, "-m", "helpers", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
