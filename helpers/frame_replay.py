"""Notebook 04 (the compact memory). Replay utils: the compact replay memory, each uint8 frame stored once, stacks rebuilt on sampling.

Written for the course (docs/replay-memory.md says why TorchRL's own pieces do not fit); built on
memory-mapped tensors like TorchRL's `LazyMemmapStorage`, normalizing with TorchRL's transforms.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.envs import Transform

from helpers.augmentation import random_shift
from helpers.envs import FRAME_SIZE, FRAME_STACK, STACK_KEY
from helpers.losses import FOLLOWS_KEY
from helpers.run.replay_files import open_ring

NEXT_STACK = ("next", STACK_KEY)
# What the memory has written: with its files, the whole of it (`state_dict`).
_COUNTERS = ("written", "chunks_written", "steps_written", "complete_steps", "complete_chunks")


def min_capacity(row_steps: int) -> int:
    """The smallest ring that holds a row of `row_steps` steps next to the row before it."""
    return 2 * row_steps + FRAME_STACK


class FrameReplay:
    """Replay memory that stores each frame once, as uint8, and rebuilds the stacks on sampling.

    Frames go into a ring of `capacity` slots, numbered by their absolute position (slot =
    position % capacity). A slot holds a frame and, when the frame is the newest of a step's
    observation, that step: its action, reward, flags, the position of the previous frame of
    its episode (`prev`) and of the next observation's newest frame (`next`). The observation
    of step p is [prev³(p), prev²(p), prev(p), p] and its next observation [prev²(p), prev(p),
    p, next(p)]; the first frame of an episode is its own `prev`, which repeats it as
    CatFrames does after a reset, and no frame of an earlier episode can enter a stack.

    An episode of L steps takes L + 1 slots: its frames plus the final next frame. Episodes
    cross collector batches; the collector's trajectory ids link a batch to the one before.
    """

    def __init__(
        self,
        capacity: int,
        batch_size: int,
        transform: Transform,
        folder: str | Path,
        chunk_length: int | None = None,
        num_actions: int = 2,
        saved: dict | None = None,
        shift: int = 0,
    ) -> None:
        """Args:
        capacity: frames the ring holds (about as many steps: L steps take L + 1 frames).
        batch_size: steps per sample; with `chunk_length`, `batch_size // chunk_length` whole chunks.
        transform: applied to every sample, as TorchRL's `ReplayBuffer(transform=...)`:
            `make_normalizer(obs_norm)` (helpers/normalization.py) gives the normalized `pixels`.
        folder: where the memory-mapped files live (a run's `replay/`, or see `scratch_dir`).
        chunk_length: None samples single transitions (TD(0)); an int cuts each collected row
            into chunks of `chunk_length` consecutive steps and samples whole chunks,
            [chunks, chunk_length]
            (TD(lambda)).
        num_actions: size of the one-hot actions returned.
        saved: a `state_dict()` of the memory whose files are in `folder`: reopen them and go
            on from that state (a resumed run) instead of starting empty.
        shift: shift each sampled transition's frames by up to `shift` pixels (DrQ, see
            helpers.augmentation): one offset for its observation and next observation, which
            share four frames; 0 returns them as stored.
        """
        if capacity < 2 * FRAME_STACK:
            raise ValueError(f"capacity must be at least {2 * FRAME_STACK} frames.")
        self.capacity, self.chunk_length, self.num_actions = capacity, chunk_length, num_actions
        self.batch_size = batch_size if chunk_length is None else max(1, batch_size // chunk_length)
        self.transform, self.shift = transform, shift
        # The slots, the chunk table, and the high-water marks: the highest frame and chunk
        # positions ever written to these files (see `lowest`).
        self.slots, self.chunks, self.marks = open_ring(Path(folder), capacity, chunk_length, saved)
        # Frames written so far; the ring holds positions [lowest, written).
        self.written = self.chunks_written = self.steps_written = 0
        self.complete_steps = self.complete_chunks = 0  # whose next frame is known
        self.open_steps: dict[int, int] = {}  # trajectory id -> position of its last step so far
        if saved is not None:
            self._restore(saved)

    # ----- keeping it across runs (see helpers/run/replay_files.py) -------------------------------
    def state_dict(self) -> dict:
        """The counters that, with the files, are the memory (stored in a run's checkpoint)."""
        state = {key: getattr(self, key) for key in ("capacity", "chunk_length", *_COUNTERS)}
        return {**state, "open_steps": sorted(self.open_steps.values())}

    def _restore(self, saved: dict) -> None:
        """Go back to `saved`, taken at a checkpoint, whatever was written after it."""
        for key in _COUNTERS:
            setattr(self, key, int(saved[key]))
        for position in saved["open_steps"]:  # never continued: the collectors start afresh
            if position >= self.lowest:
                self.slots["next"][position % self.capacity] = -1

    @property
    def lowest(self) -> int:
        """The oldest frame position still held: `capacity` behind the highest ever written."""
        return max(self.written, int(self.marks[0])) - self.capacity

    def _lowest_chunk(self) -> int:
        return max(0, max(self.chunks_written, int(self.marks[1])) - len(self.chunks))

    # ----- writing -------------------------------------------------------------------------
    def extend(self, data: TensorDictBase) -> torch.Tensor:
        """Store a collected batch, [workers, time] or [time]; return its steps' positions."""
        if data.ndim == 1:
            data = data.unsqueeze(0)
        steps = data.shape[-1]
        if min_capacity(steps) > self.capacity:
            raise ValueError(
                f"Rows of {steps} steps do not fit a ring of {self.capacity} frames: "
                "raise buffer_size or collect smaller batches."
            )
        if (
            self.chunks is not None and steps % self.chunk_length
        ):  # checked before anything is written
            raise ValueError(f"Rows of {steps} steps: not chunks of {self.chunk_length}.")
        positions = torch.stack([self._write_row(data[w]) for w in range(data.shape[0])])
        if self.chunks is not None:
            for chunk in positions.reshape(-1, self.chunk_length):
                self.chunks[self.chunks_written % len(self.chunks)] = chunk.to(torch.int32)
                self.chunks_written += 1
        self.marks[0] = max(int(self.marks[0]), self.written)
        if self.chunks is not None:
            self.marks[1] = max(int(self.marks[1]), self.chunks_written)
        return positions

    def _write_row(self, row: TensorDictBase) -> torch.Tensor:
        """Write one worker's consecutive steps; return the positions of their frames."""
        steps = row.shape[0]
        stacks, next_stacks = row[STACK_KEY], row[NEXT_STACK]
        start_count = int(row["step_count"][0])
        done = row["next", "done"].reshape(steps)
        traj_ids = row.get(("collector", "traj_ids"), None)
        traj = None if traj_ids is None else int(traj_ids.reshape(steps)[0])

        # The frames this row writes: [history], then each step's newest frame, followed by
        # the final next frame wherever an episode ends.
        previous = self.open_steps.pop(traj, None) if traj is not None else None
        if previous is not None and previous < self.lowest:
            previous = None  # overwritten since: rebuild its history from the stack below
        history = (
            0 if start_count == 0 or previous is not None else min(start_count, FRAME_STACK - 1)
        )
        ends_before = torch.cumsum(done.long(), 0) - done.long()
        step_pos = self.written + history + torch.arange(steps) + ends_before
        end_pos = step_pos[done] + 1
        count = history + steps + int(done.sum())
        all_pos = torch.arange(self.written, self.written + count)
        if all_pos[-1] >= 2**31:
            raise OverflowError("FrameReplay positions are int32: start a new buffer.")

        frame = torch.empty(count, FRAME_SIZE, FRAME_SIZE, dtype=torch.uint8)
        prev = torch.empty(count, dtype=torch.int64)
        nxt = torch.full((count,), -1, dtype=torch.int64)
        if history:  # the frames before this row, taken from the first observation's stack
            frame[:history] = stacks[0, FRAME_STACK - 1 - history : FRAME_STACK - 1]
            prev[:history] = all_pos[:history] - (all_pos[:history] > self.written).long()
        local = step_pos - self.written
        frame[local] = stacks[:, -1]
        frame[end_pos - self.written] = next_stacks[done][:, -1]
        # prev: the step before in the same episode; an episode's first frame points to itself.
        step_prev = torch.cat([step_pos[:1] - 1, step_pos[:-1]])
        starts = torch.cat([torch.tensor([start_count == 0]), done[:-1]])
        step_prev[starts] = step_pos[starts]
        if previous is not None:  # link the last step of this stream's previous row
            step_prev[0] = previous
            self.slots["next"][previous % self.capacity] = int(step_pos[0])
            self.complete_steps += 1
            self.complete_chunks += 1  # the chunk that ends with that step
        prev[local] = step_prev
        prev[end_pos - self.written] = step_pos[done]
        nxt[local[:-1]] = step_pos[1:]
        nxt[local[done]] = end_pos
        if traj is not None and not bool(done[-1]):
            self.open_steps[int(traj_ids.reshape(steps)[-1])] = int(step_pos[-1])

        slots = all_pos % self.capacity
        meta = {
            "action": torch.zeros(count, dtype=torch.uint8),
            "reward": torch.zeros(count),
            "terminated": torch.zeros(count, dtype=torch.bool),
            "truncated": torch.zeros(count, dtype=torch.bool),
        }
        meta["action"][local] = row["action"].argmax(-1).to(torch.uint8)
        for key in ("reward", "terminated", "truncated"):
            meta[key][local] = row["next", key].reshape(steps).to(meta[key].dtype)
        values = TensorDict(
            {"frame": frame, "prev": prev.int(), "next": nxt.int(), **meta}, batch_size=[count]
        )
        self._set(slots, values)
        self.written += count
        self.steps_written += steps
        self.complete_steps += steps - 1 + int(done[-1])
        if (
            self.chunk_length
        ):  # every chunk of the row but the last is complete, and that one if done
            self.complete_chunks += steps // self.chunk_length - 1 + int(done[-1])
        return step_pos

    def _set(self, slots: torch.Tensor, values: TensorDict) -> None:
        """Write `values` at `slots` (contiguous but for one wrap around the ring)."""
        first = int(slots[0])
        cut = min(len(slots), self.capacity - first)
        self.slots[first : first + cut] = values[:cut]
        if cut < len(slots):
            self.slots[: len(slots) - cut] = values[cut:]

    # ----- reading -------------------------------------------------------------------------
    def frame_positions(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The 5 frames steps `pos` need, [..., 5] (oldest first), and whether all are still held."""
        lowest = self.lowest
        chain = [pos.long()]
        for _ in range(FRAME_STACK - 1):
            chain.insert(0, self.slots["prev"][chain[0] % self.capacity].long())
        nxt = self.slots["next"][pos.long() % self.capacity].long()
        frames = torch.stack([*chain, nxt], -1)
        # A slot read after being overwritten holds another frame's links: every position of
        # the chain (newest first, each read from the one after it) must still be held.
        held = (frames[..., :-1] >= lowest).all(-1) & (pos >= 0) & (nxt >= 0)
        return frames, held

    def get(self, pos: torch.Tensor) -> TensorDict:
        """The transitions of steps `pos` (any shape), with normalized stacks as the loss wants."""
        frames, held = self.frame_positions(pos)
        if not bool(held.all()):
            raise IndexError("Some of these steps are no longer (or not yet) complete in the ring.")
        shape, slots = pos.shape, pos.long() % self.capacity
        stack = self.slots["frame"][frames.reshape(-1) % self.capacity].view(
            *shape, FRAME_STACK + 1, FRAME_SIZE, FRAME_SIZE
        )
        stack = random_shift(stack, self.shift)  # (as stored when shift is 0)
        terminated, truncated = self.slots["terminated"][slots], self.slots["truncated"][slots]
        out = TensorDict(
            {
                STACK_KEY: stack[..., :-1, :, :],
                "action": torch.nn.functional.one_hot(
                    self.slots["action"][slots].long(), self.num_actions
                ),
                "index": pos,
                "next": {
                    STACK_KEY: stack[..., 1:, :, :],
                    "reward": self.slots["reward"][slots].unsqueeze(-1),
                    "terminated": terminated.unsqueeze(-1),
                    "truncated": truncated.unsqueeze(-1),
                    "done": (terminated | truncated).unsqueeze(-1),
                },
            },
            batch_size=shape,
        )
        if pos.ndim == 2 and self.shift == 0:  # chunks: where step t + 1's stack is t's next
            follows = torch.zeros(shape, dtype=torch.bool)
            follows[:, :-1] = (frames[:, :-1, 1:] == frames[:, 1:, :-1]).all(-1)
            out[FOLLOWS_KEY] = follows.unsqueeze(-1)
        return self.transform(out)

    def sample(self) -> TensorDict:
        """`batch_size` random transitions, or [batch_size // chunk_length, chunk_length] random chunks."""
        if self.chunks is None:
            low = max(0, self.lowest)
            pos = self._draw(lambda n: torch.randint(low, self.written, (n,)))
        else:
            low = self._lowest_chunk()

            def rows(n: int) -> torch.Tensor:
                ids = torch.randint(low, self.chunks_written, (n,)) % len(self.chunks)
                return self.chunks[ids].long()

            pos = self._draw(rows)
        return self.get(pos)

    def _draw(self, candidates) -> torch.Tensor:
        """Draw candidates until `batch_size` of them are complete (rejection sampling)."""
        if len(self) == 0:
            raise RuntimeError("The replay memory holds no complete step yet: extend it first.")
        found = []
        for _ in range(100):
            pos = candidates(2 * self.batch_size)
            held = self.frame_positions(pos)[1]
            while held.ndim > 1:
                held = held.all(-1)
            found.append(pos[held])
            if sum(len(f) for f in found) >= self.batch_size:
                return torch.cat(found)[: self.batch_size]
        raise RuntimeError("Too few complete steps in the replay memory to sample a batch.")

    def __len__(self) -> int:
        """Complete steps (or chunks) that can be sampled: their next frame is known.

        A row's last step waits for the next batch of its worker, unless its episode ended.
        """
        if self.chunks is None:
            return min(self.complete_steps, self.capacity)
        return min(self.complete_chunks, len(self.chunks))

    def nbytes(self) -> int:
        """Bytes of storage: the ring of frames and links, and the chunk table."""
        chunks = 0 if self.chunks is None else self.chunks.numel() * self.chunks.element_size()
        return sum(v.numel() * v.element_size() for v in self.slots.values()) + chunks

    def bytes_per_step(self) -> float:
        """Storage per stored step so far: a slot's bytes times the frames written per step."""
        return self.nbytes() / self.capacity * self.written / max(1, self.steps_written)
