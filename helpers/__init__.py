"""Shared code for the pixel-DQN course: the notebooks import their building blocks from here."""

import os

# OpenMP threads that finish a parallel region spin for a while before sleeping. On a small
# machine they take the cores the environment workers need: make them sleep at once. (Read
# when torch loads, so this must run before `import torch`; importing helpers first does.)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# pygame's SDL installs C-level handlers for SIGINT and SIGTERM when an environment first
# renders, after which `kill PID`, `timeout` or `docker stop` no longer reach Python: a training
# run would ignore them and go on to the end. Leave signals to Python (see StopOnInterrupt).
os.environ.setdefault("SDL_NO_SIGNAL_HANDLERS", "1")

# torchrl logs to stdout by default, which would mix its lines into `bench --json` and
# `evaluate --json`: send them to stderr (read when torchrl is imported).
os.environ.setdefault("TORCHRL_CONSOLE_STREAM", "stderr")

__version__ = "0.1.0"
