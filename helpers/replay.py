"""Notebooks 04 and 05. Replay utils: the scratch folder, TD(lambda) chunks, the tutorial's naive replay buffer,
and `make_replay_buffer`, which picks it or the course's compact one (helpers/frame_replay.py).

The naive memory stores what the collector returns: a float32 stack of 4 frames for the
observation and another for the next observation, 131 kB a step. The compact one stores each
64x64 grayscale frame once, as uint8 (4 kB), and rebuilds both stacks when a batch is sampled.
docs/replay-memory.md measures both.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tensordict import TensorDict, TensorDictBase
from torchrl.data import LazyMemmapStorage, TensorDictReplayBuffer

from helpers.config import Config
from helpers.envs import FRAME_SIZE, check_pipeline
from helpers.frame_replay import FrameReplay, min_capacity
from helpers.losses import check_target
from helpers.normalization import make_normalizer
from helpers.run.replay_files import (
    ReplayDiskError,
    ReplayFilesError,
    no_room,
    remove_replay,
    ring_nbytes,
)

SCRATCH_PREFIX = ".replay-"


@contextmanager
def scratch_dir(parent: str | Path) -> Iterator[Path]:
    """A folder for memory-mapped files inside `parent`, removed when the block ends.

    It lives next to the run's outputs, not in the system temp folder, and leftovers of a
    run that was killed outright are removed the next time a run starts there.
    """
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    for stale in parent.glob(SCRATCH_PREFIX + "*"):
        shutil.rmtree(stale, ignore_errors=True)
    path = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def row_steps(config: Config) -> int:
    """Consecutive steps each worker collects per batch: frames_per_batch // num_workers."""
    if config.frames_per_batch % config.num_workers:
        raise ValueError(
            f"frames_per_batch ({config.frames_per_batch}) must be a multiple of "
            f"num_workers ({config.num_workers})."
        )
    return config.frames_per_batch // config.num_workers


def checked_chunk_length(config: Config) -> int:
    """Steps per TD(lambda) chunk; each collected row of frames_per_batch // num_workers
    consecutive steps is cut into chunks of this length."""
    row = row_steps(config)
    if row % config.chunk_length:
        raise ValueError(
            f"Each worker collects rows of {row} steps: chunk_length ({config.chunk_length}) "
            "must divide it."
        )
    return config.chunk_length


class NaiveReplay:
    """The tutorial's replay memory: every key the collector returns, float32 stacks and all."""

    def __init__(self, config: Config, target: str, scratch: str | Path) -> None:
        self.td0 = target == "td0"
        self.chunk_length = steps = 1 if self.td0 else checked_chunk_length(config)
        self.buffer = TensorDictReplayBuffer(
            storage=LazyMemmapStorage(max(1, config.buffer_size // steps), scratch_dir=scratch),
            batch_size=max(1, config.batch_size // steps),
        )

    def extend(self, data: TensorDictBase) -> None:
        """Store a collected [workers, time] batch: flat transitions for TD(0), chunks for TD(lambda)."""
        self.buffer.extend(data.reshape(-1) if self.td0 else data.reshape(-1, self.chunk_length))

    def sample(self) -> TensorDict:
        return self.buffer.sample()

    def state_dict(self) -> None:
        """Not kept across runs: a resumed tutorial-pipeline run starts with an empty memory."""
        return None

    def __len__(self) -> int:
        return len(self.buffer)


def make_replay_buffer(
    config: Config,
    target: str,
    folder: str | Path,
    obs_norm: dict | None = None,
    saved: dict | None = None,
) -> FrameReplay | NaiveReplay:
    """The replay memory of `config.pipeline`: FrameReplay ("uint8") or NaiveReplay ("float32").

    Args:
        config: gives `pipeline`, `buffer_size`, `batch_size`, `frames_per_batch`, `num_workers`.
        target: "td0" samples `batch_size` single transitions; "td-lambda" samples
            `batch_size // chunk_length` whole collected rows, shaped [chunks, time].
        folder: folder for the memory-mapped files (a run's `replay/`, or see `scratch_dir`).
        obs_norm: normalization constants (the compact memory normalizes on sampling).
        saved: the `state_dict()` of the compact memory already in `folder`, to go on with it.
    """
    check_target(target)
    if check_pipeline(config.pipeline) == "float32":
        return NaiveReplay(config, target, folder)
    if obs_norm is None:
        raise ValueError("The compact replay memory needs the normalization constants.")
    check_replay_settings(config, target)
    return FrameReplay(
        config.buffer_size,
        config.batch_size,
        make_normalizer(obs_norm),
        folder,
        chunk_length=None if target == "td0" else checked_chunk_length(config),
        saved=saved,
        shift=config.random_shift,
    )


def check_replay_settings(config: Config, target: str) -> None:
    """Refuse, before anything is written, settings that the replay memory cannot hold."""
    row = row_steps(config)
    if config.random_shift and config.pipeline != "uint8":
        raise ValueError(
            "random_shift needs the course's pipeline (its compact replay memory shifts the "
            "frames): set random_shift=0 or pipeline=uint8."
        )
    if config.random_shift >= FRAME_SIZE // 2:
        raise ValueError(
            f"Setting random_shift must be below {FRAME_SIZE // 2} pixels (half a frame), got "
            f"{config.random_shift}."
        )
    if target == "td-lambda":
        checked_chunk_length(config)
    if config.pipeline == "uint8" and config.buffer_size < min_capacity(row):
        raise ValueError(
            f"buffer_size ({config.buffer_size}) is too small for rows of {row} steps: "
            f"give it at least {min_capacity(row)} frames."
        )


def check_free_space(config: Config, target: str, run_dir: Path) -> None:
    """Refuse, before anything is written, a run whose compact replay memory would not fit on
    the disk of `run_dir` (with 50 MB for its checkpoints and logs)."""
    if config.pipeline != "uint8":
        return
    chunk_length = None if target == "td0" else config.chunk_length
    why = no_room(ring_nbytes(config.buffer_size, chunk_length) + 50_000_000, run_dir)
    if why:
        raise ReplayDiskError(why)


def open_replay(
    config: Config, target: str, folder: Path, obs_norm: dict, saved: dict | None
) -> FrameReplay | NaiveReplay:
    """The run's replay memory in `folder`: the one a resumed run had (its `saved` state), or a
    new, empty one."""
    if saved is not None:
        try:
            replay = make_replay_buffer(config, target, folder, obs_norm, saved)
            print(f"Resuming with the replay memory kept in {folder} ({len(replay):,} samples).")
            return replay
        except ReplayFilesError as err:
            print(f"{err} The resumed run starts with an empty replay memory.")
    remove_replay(folder)
    return make_replay_buffer(config, target, folder, obs_norm)
