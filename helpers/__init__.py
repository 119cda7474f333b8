"""Shared code for the pixel-DQN course: the notebooks import their building blocks from here.

Which notebook teaches which module (each module's first line says it too):

- 01 environment: `envs` (the pixel CartPole and its transforms)
- 02 normalization: `normalization`
- 03 model: `models`
- 04 TD(0): `loop`, `losses`, `evaluation`, `replay`, `frame_replay`, `training`, `plots`,
  `learner_functions` (your functions in the run)
- 05 TD(lambda): `losses`, `replay`, `training`, `learner_functions`, `results` (the course's
  runs and bands), `augmentation` (an option it mentions)
- 06 video: `agents`, `video`
- 07 experiments: `experiments` (ablations, their bands, a room's runs pooled), `diagnosis`
  (find the bug), `sabotage` (not taught: the faults its broken runs were trained with)
- every notebook: `config` (modes and settings), `machine` (device, outputs, banner),
  `exercises`, `learning_checks` and `loop_check` (the checks of 02 to 05)

No notebook teaches the two subpackages, which hold the tooling around the lesson:

- `helpers.run`: what keeps a training run safe and resumable. Its folder and lock (`folder`),
  `checkpoints`, the CSV log (`logs`), the replay memory's files (`replay_files`), the
  evaluation process beside training (`evaluator`), the worker processes (`workers`), and
  `keeping`, which keeps a run's records in step with `train`'s loop.
- `helpers.commands`: `python -m helpers ...` (`cli`, with `__main__`), `bench` (with
  `bench_pieces`), `sweep`, and the notebooks' measured times (`timings`).
"""

import os
import sys

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

# torchrl imports Ray wherever Ray is installed, for features the course does not use. With the
# course's packages that import takes 2 to 3 s in every process that imports torchrl (a
# notebook's kernel, the training, its collector and evaluator, the final evaluation's workers)
# and tens of MB in each (docs/speed-and-memory.md). Only the sweeps use Ray, and they ask for it
# (`allow_ray`). A module that is None in sys.modules counts as not installed for
# `importlib.util.find_spec`, which torchrl asks; a process that has imported Ray keeps it.
sys.modules.setdefault("ray", None)


def allow_ray() -> None:
    """Let `import ray` work in this process (`python -m helpers sweep`); torchrl's modules
    imported before this call still go without Ray, which the course does not need."""
    if "ray" in sys.modules and sys.modules["ray"] is None:
        del sys.modules["ray"]


__version__ = "0.1.0"
