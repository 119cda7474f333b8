"""No notebook (run tooling). The compact replay memory's files: memory-mapped tensors made new, or reopened to resume.

A run keeps its memory in its folder's `replay/` (see `helpers.run.folder.REPLAY_DIR`): the frames and
links stay on disk, and the checkpoint stores the few counters that say what the files hold
(`FrameReplay.state_dict`), so `--resume` goes on with the memory the run had.

A run killed after its last checkpoint went on writing: those frames sit at positions from the
checkpoint's `written` on, where the resumed run writes again, and they overwrote the oldest
frames, which the high-water marks (`marks`) tell the memory no longer to count as held
(`FrameReplay.lowest`). Steps still waiting for their next frame at the checkpoint never get
it (the resumed run's collectors start new episodes): they are closed.

Why the course's own code: `torchrl.checkpoint` saves a replay buffer by dumping a copy of it
at each checkpoint, which for a memory of 100,000 frames is hundreds of megabytes written every
`eval_every` frames; here the files are the memory, and a checkpoint stores only counters.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import torch
from tensordict import MemoryMappedTensor, TensorDict

from helpers.envs import FRAME_SIZE

# A slot's fields besides its frame: the step's links, action, reward and flags.
SLOT_FIELDS = {
    "prev": torch.int32,
    "next": torch.int32,  # -1: not a complete step
    "action": torch.uint8,
    "reward": torch.float32,
    "terminated": torch.bool,
    "truncated": torch.bool,
}


class ReplayFilesError(ValueError):
    """Replay files that cannot be reopened as the memory a checkpoint describes."""


class ReplayDiskError(OSError):
    """A disk without room for a new replay memory's files."""


def ring_files(capacity: int, chunk_length: int | None) -> dict[str, tuple[tuple, torch.dtype]]:
    """The memory's files: name -> (shape, dtype)."""
    files = {name: ((capacity,), dtype) for name, dtype in SLOT_FIELDS.items()}
    files["frame"] = (capacity, FRAME_SIZE, FRAME_SIZE), torch.uint8
    files["marks"] = (2,), torch.int64
    if chunk_length is not None:
        files["chunks"] = (capacity // chunk_length, chunk_length), torch.int32
    return files


def ring_nbytes(capacity: int, chunk_length: int | None) -> int:
    """Bytes on disk of a memory of `capacity` frames (what `open_ring` reserves)."""
    return sum(
        _nbytes(shape, dtype) for shape, dtype in ring_files(capacity, chunk_length).values()
    )


def _nbytes(shape: tuple, dtype: torch.dtype) -> int:
    """Bytes of one of the memory's files."""
    return math.prod(shape) * dtype.itemsize


def no_room(needed: int, folder: Path) -> str | None:
    """Why `needed` bytes do not fit on the disk of `folder` (or of its nearest existing
    parent), or None when they do."""
    existing = next((p for p in (folder, *folder.parents) if p.is_dir()), Path("/"))
    free = shutil.disk_usage(existing).free
    if needed <= free:
        return None
    return (
        f"The replay memory needs {needed / 1e6:,.1f} MB in {folder} and its disk has "
        f"{free / 1e6:,.1f} MB free: lower buffer_size (--set buffer_size=N), free some space, "
        "or choose an --out folder on another disk."
    )


def open_ring(
    folder: Path, capacity: int, chunk_length: int | None, saved: dict | None = None
) -> tuple[TensorDict, torch.Tensor | None, torch.Tensor]:
    """The ring's slots [capacity], the chunk table [capacity // chunk, chunk] (None without
    chunks) and the two high-water marks (the highest frame and chunk positions ever written),
    all memory-mapped in `folder`: new files, or, given the `saved` state of the memory whose
    files they are, the ones already there."""
    reopen = saved is not None
    if reopen and (saved["capacity"], saved.get("chunk_length")) != (capacity, chunk_length):
        raise ReplayFilesError(
            f"The replay memory in {folder} holds {saved['capacity']} frames in chunks of "
            f"{saved.get('chunk_length')}, not {capacity} in chunks of {chunk_length}."
        )
    files = ring_files(capacity, chunk_length)
    folder.mkdir(parents=True, exist_ok=True)
    if not reopen:
        _reserve(folder, files)
    maps = {
        name: _memmap(folder / f"{name}.memmap", shape, dtype, reopen)
        for name, (shape, dtype) in files.items()
    }
    marks, chunks = maps.pop("marks"), maps.pop("chunks", None)
    if not reopen:
        maps["next"].fill_(-1)
        marks.zero_()
    return TensorDict(maps, batch_size=[capacity]), chunks, marks


def _reserve(folder: Path, files: dict) -> None:
    """Allocate the new files' blocks now: memory-mapped pages of a sparse file are only given
    disk space when first written, and a full disk then kills the process (SIGBUS)."""
    try:
        for name, (shape, dtype) in files.items():
            fd = os.open(folder / f"{name}.memmap", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                os.posix_fallocate(fd, 0, max(1, _nbytes(shape, dtype)))
            finally:
                os.close(fd)
    except OSError as err:
        remove_replay(folder)
        needed = sum(_nbytes(shape, dtype) for shape, dtype in files.values())
        raise ReplayDiskError(
            no_room(needed, folder) or f"Cannot reserve the replay memory in {folder}: {err}"
        ) from None


def _memmap(path: Path, shape: tuple, dtype: torch.dtype, reopen: bool) -> MemoryMappedTensor:
    """A memory-mapped tensor in `path`: a new one, or the one already there (`reopen`)."""
    if not reopen:  # (the file `_reserve` made, whole)
        return MemoryMappedTensor.from_filename(path, dtype, torch.Size(shape))
    if not path.is_file() or path.stat().st_size != _nbytes(shape, dtype):
        raise ReplayFilesError(
            f"{path} is missing or is not the replay file the checkpoint expects."
        )
    return MemoryMappedTensor.from_filename(path, dtype, torch.Size(shape))


def remove_replay(folder: Path) -> None:
    """Delete a replay memory's folder (a finished run's, a new run's leftovers)."""
    shutil.rmtree(folder, ignore_errors=True)
