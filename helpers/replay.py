"""Replay utils: memory-mapped replay buffers for transitions (TD(0)) and trajectory chunks (TD(lambda))."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tensordict import TensorDictBase
from torchrl.data import LazyMemmapStorage, TensorDictReplayBuffer

from helpers.config import Config

SCRATCH_PREFIX = ".replay-"
# What the losses need from a collected batch; the rest (Q-values seen while collecting,
# collector bookkeeping) would only take space.
STORED_KEYS = (
    "pixels",
    "action",
    ("next", "pixels"),
    ("next", "reward"),
    ("next", "done"),
    ("next", "terminated"),
    ("next", "truncated"),
)


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


def chunk_length(config: Config) -> int:
    """Steps per trajectory chunk: each collector batch is [num_workers, chunk_length]."""
    if config.frames_per_batch % config.num_workers:
        raise ValueError(
            f"frames_per_batch ({config.frames_per_batch}) must be a multiple of "
            f"num_workers ({config.num_workers})."
        )
    return config.frames_per_batch // config.num_workers


def make_replay_buffer(config: Config, target: str, scratch: str | Path) -> TensorDictReplayBuffer:
    """A replay buffer of `config.buffer_size` frames, stored as memory-mapped files in `scratch`.

    Args:
        config: gives `buffer_size`, `batch_size`, `frames_per_batch` and `num_workers`.
        target: "td0" stores single transitions and samples `batch_size` of them;
            "td-lambda" stores chunks of `chunk_length(config)` consecutive steps and samples
            `batch_size // chunk_length` whole chunks, shaped [chunks, time].
        scratch: folder for the memory-mapped files (see `scratch_dir`).
    """
    if target == "td0":
        capacity, sample_size = config.buffer_size, config.batch_size
    elif target == "td-lambda":
        steps = chunk_length(config)
        capacity = max(1, config.buffer_size // steps)
        sample_size = max(1, config.batch_size // steps)
    else:
        raise ValueError(f"Unknown target {target!r}: choose 'td0' or 'td-lambda'.")
    return TensorDictReplayBuffer(
        storage=LazyMemmapStorage(capacity, scratch_dir=scratch),
        batch_size=sample_size,
    )


def prepare_batch(data: TensorDictBase, target: str) -> TensorDictBase:
    """What goes into the buffer from a collected [workers, time] batch.

    TD(0) flattens it into independent transitions; TD(lambda) keeps the time axis so
    that each worker's row is stored as one chunk.
    """
    data = data.select(*STORED_KEYS)
    return data.reshape(-1) if target == "td0" else data
