"""Replay memories: the compact one rebuilds exactly what the naive one stores, on real rollouts."""

import functools

import pytest
import torch
from tensordict import TensorDict
from torchrl.collectors import Collector

from helpers.config import config_for_mode
from helpers.envs import STACK_KEY, make_env
from helpers.frame_replay import FrameReplay
from helpers.losses import FOLLOWS_KEY
from helpers.normalization import make_normalizer
from helpers.replay import (
    NaiveReplay,
    checked_chunk_length,
    make_replay_buffer,
    scratch_dir,
)
from helpers.run.replay_files import ReplayFilesError

WORKERS, STEPS = 2, 8  # each collected batch is [2 workers, 8 steps]
COMPARED = [
    "pixels",
    "action",
    ("next", "pixels"),
    ("next", "reward"),
    ("next", "done"),
    ("next", "terminated"),
    ("next", "truncated"),
]


@pytest.fixture(scope="module")
def batches(obs_norm):
    """40 real batches from 2 asynchronous collectors of 2 workers each, random actions (30 s:
    the tests that use it are marked slow, out of `make check`)."""
    make = functools.partial(make_env, parallel=True, num_workers=WORKERS, obs_norm=obs_norm)
    env = make_env(obs_norm=obs_norm)
    collector = Collector(
        make,
        None,
        num_collectors=2,
        sync=False,
        frames_per_batch=WORKERS * STEPS,
        total_frames=40 * WORKERS * STEPS,
    )
    collector.set_seed(0)
    try:
        out = [data.clone() for data in collector]
    finally:
        collector.shutdown()
        env.close()
    return out


@pytest.mark.slow
def test_the_rollout_covers_the_hard_cases(batches):
    data = torch.stack(batches)  # [batches, workers, steps]
    step_count = data["step_count"].squeeze(-1)
    assert (step_count[..., 1:] == 0).any(), "no episode starts inside a row"
    assert (step_count[..., 0] > 0).any(), "no episode continues from an earlier batch"
    traj = data["collector", "traj_ids"]
    assert len(set(traj[:, :, -1].flatten().tolist())) > 4, "rows of one stream only"


def compare(replay: FrameReplay, positions: torch.Tensor, expected: TensorDict) -> int:
    """Assert that every step still complete in `replay` equals `expected`; return how many."""
    held = replay.frame_positions(positions)[1]
    got = replay.get(positions[held])
    for key in COMPARED:
        assert torch.equal(got[key], expected[key][held]), key
    return int(held.sum())


@pytest.mark.slow
def test_compact_transitions_equal_the_naive_ones(batches, obs_norm, tmp_path):
    config = config_for_mode("smoke").replace(buffer_size=10_000, pipeline="float32")
    with scratch_dir(tmp_path) as scratch:
        naive = NaiveReplay(config, "td0", scratch / "naive")
        compact = FrameReplay(10_000, 32, make_normalizer(obs_norm), scratch)
        positions = []
        for data in batches:
            naive.extend(data)
            positions.append(compact.extend(data).reshape(-1))
        stored = naive.buffer[:]  # every transition, in the order collected
        checked = compare(compact, torch.cat(positions), stored)
        # all but the last step of each of the 4 workers, whose next frame is still to come
        assert len(stored) - 4 <= checked <= len(stored)
        first = stored["step_count"].squeeze(-1) == 0
        assert first.any()
        # right after a reset the stack repeats the reset frame: nothing of the episode before
        starts = torch.cat(positions)[first]
        start = compact.get(starts[compact.frame_positions(starts)[1]])[STACK_KEY]
        assert torch.equal(start, start[:, -1:].expand_as(start))
        assert compact.nbytes() / 10_000 == 64 * 64 + 4 + 4 + 1 + 4 + 1 + 1


@pytest.mark.slow
def test_a_small_ring_drops_old_steps_and_keeps_the_rest_exact(batches, obs_norm, tmp_path):
    with scratch_dir(tmp_path) as scratch:
        compact = FrameReplay(50, 32, make_normalizer(obs_norm), scratch)
        checked = 0
        for data in batches:
            pos = compact.extend(data)
            checked += compare(compact, pos.reshape(-1), data.reshape(-1))
        assert checked > 0
        old = compact.extend(batches[0])  # positions far behind are no longer held
        assert not compact.frame_positions(old - 500)[1].any()
        sample = compact.sample()
        assert sample["pixels"].shape == (32, 4, 64, 64) and sample["pixels"].dtype == torch.float32


@pytest.mark.slow
def test_a_memory_that_starts_mid_episode_rebuilds_the_history_from_the_stack(
    batches, obs_norm, tmp_path
):
    with scratch_dir(tmp_path) as scratch:
        compact = FrameReplay(10_000, 32, make_normalizer(obs_norm), scratch)
        continued = [d for d in batches if (d["step_count"][:, 0] > 0).all()][0]
        pos = compact.extend(continued)
        open_rows = int((~continued["next", "done"][:, -1]).sum())  # last step still open
        assert (
            compare(compact, pos.reshape(-1), continued.reshape(-1)) == WORKERS * STEPS - open_rows
        )


@pytest.mark.slow
def test_compact_chunks_equal_the_naive_rows(batches, obs_norm, tmp_path):
    config = config_for_mode("smoke").replace(
        buffer_size=10_000, frames_per_batch=WORKERS * STEPS, num_workers=WORKERS, chunk_length=4
    )
    with scratch_dir(tmp_path) as scratch:
        compact = make_replay_buffer(config, "td-lambda", scratch, obs_norm)
        naive = make_replay_buffer(config.replace(pipeline="float32"), "td-lambda", scratch / "n")
        assert isinstance(compact, FrameReplay) and isinstance(naive, NaiveReplay)
        rows = []
        for data in batches:
            naive.extend(data)
            rows.append(compact.extend(data))
        rows = torch.cat(rows).reshape(-1, 4)  # [chunks, 4 steps]
        complete = compact.frame_positions(rows)[1].all(-1)
        assert len(rows) - 4 <= int(complete.sum()) < len(rows)
        stored = naive.buffer[:]
        got = compact.get(rows[complete])
        for key in COMPARED:
            assert torch.equal(got[key], stored[key][complete]), key
        # Step t's next stack is step t + 1's where the episode went on (ChunkDQNLoss relies
        # on it), never at a chunk's last step.
        follows, done = got[FOLLOWS_KEY].squeeze(-1), got["next", "done"].squeeze(-1)
        assert torch.equal(follows[:, :-1], ~done[:, :-1]) and not follows[:, -1].any()
        assert done[:, :-1].any() and follows.any()
        on = follows[:, :-1]
        assert torch.equal(got["next", "pixels"][:, :-1][on], got["pixels"][:, 1:][on])
        sample = compact.sample()
        steps = checked_chunk_length(config)
        assert sample.batch_size == (config.batch_size // steps, steps)
        # the next observation is the observation shifted by one frame
        assert torch.equal(sample["next", STACK_KEY][:, :, :3], sample[STACK_KEY][:, :, 1:])


@pytest.mark.slow
def test_the_compact_memory_stores_uint8_frames(batches, obs_norm, tmp_path):
    with scratch_dir(tmp_path) as scratch:
        compact = FrameReplay(1_000, 8, make_normalizer(obs_norm), scratch)
        compact.extend(batches[0])
        assert compact.slots["frame"].dtype == torch.uint8
        assert sorted(p.name for p in scratch.iterdir())[0] == "action.memmap"
        sample = compact.sample()
        assert torch.equal(sample[STACK_KEY][:, -1], compact.slots["frame"][sample["index"]])
    assert not list(tmp_path.iterdir()), "the scratch folder was not removed"


@pytest.mark.slow
def test_a_reopened_memory_is_the_one_its_checkpoint_saw(batches, obs_norm, tmp_path):
    """A run killed after a checkpoint wrote more; the resumed run reopens the files with the
    checkpoint's state: the steps it held are rebuilt exactly, but for those the later writes
    overwrote and those whose next frame never came."""
    norm = make_normalizer(obs_norm)
    reference = FrameReplay(400, 32, norm, tmp_path / "reference", chunk_length=4)
    killed = FrameReplay(400, 32, norm, tmp_path / "killed", chunk_length=4)
    for data in batches[:20]:
        reference.extend(data)
        killed.extend(data)
    saved = killed.state_dict()
    assert saved["open_steps"] and saved["written"] > saved["steps_written"] == 20 * 16
    for data in batches[20:30]:  # written after the checkpoint, then the run is killed
        killed.extend(data)
    highest = killed.written
    del killed
    reopened = FrameReplay(400, 32, norm, tmp_path / "killed", chunk_length=4, saved=saved)
    assert reopened.written == saved["written"] and not reopened.open_steps
    assert reopened.lowest == highest - 400 > 0  # what the later writes overwrote
    positions = torch.arange(saved["written"])
    frames, held = reference.frame_positions(positions)
    expected = held & (frames[:, :-1] >= highest - 400).all(-1)
    expected &= ~torch.isin(positions, torch.tensor(saved["open_steps"]))
    assert torch.equal(reopened.frame_positions(positions)[1], expected)
    assert 100 < int(expected.sum()) < int(held.sum())
    got, want = reopened.get(positions[expected]), reference.get(positions[expected])
    for key in COMPARED:
        assert torch.equal(got[key], want[key]), key
    reopened.extend(batches[30])  # and it goes on
    assert reopened.sample().batch_size == (8, 4)


@pytest.mark.slow
def test_replay_files_that_do_not_match_the_checkpoint_are_refused(batches, obs_norm, tmp_path):
    norm = make_normalizer(obs_norm)
    memory = FrameReplay(400, 32, norm, tmp_path, chunk_length=4)
    memory.extend(batches[0])
    saved = memory.state_dict()
    with pytest.raises(ReplayFilesError, match="holds 400 frames in chunks of 4, not 800"):
        FrameReplay(800, 32, norm, tmp_path, chunk_length=4, saved=saved)
    (tmp_path / "frame.memmap").unlink()
    with pytest.raises(ReplayFilesError, match="frame.memmap is missing"):
        FrameReplay(400, 32, norm, tmp_path, chunk_length=4, saved=saved)


def test_sampling_an_empty_memory_says_what_to_do(obs_norm, tmp_path):
    with scratch_dir(tmp_path) as scratch:
        with pytest.raises(RuntimeError, match="extend it first"):
            FrameReplay(100, 8, make_normalizer(obs_norm), scratch).sample()


def test_scratch_is_removed_after_an_error_and_stale_ones_are_cleaned(tmp_path):
    with pytest.raises(RuntimeError), scratch_dir(tmp_path) as scratch:
        (scratch / "x.memmap").write_bytes(b"0")
        raise RuntimeError("boom")
    assert not list(tmp_path.iterdir())
    stale = tmp_path / ".replay-old"
    stale.mkdir()
    with scratch_dir(tmp_path):
        assert not stale.exists()


@pytest.mark.slow
def test_chunk_length_needs_divisible_batches():
    with pytest.raises(ValueError, match="multiple"):
        checked_chunk_length(config_for_mode("smoke").replace(frames_per_batch=33))
    with pytest.raises(ValueError, match="must divide"):
        checked_chunk_length(config_for_mode("smoke").replace(chunk_length=5))


def test_unknown_target_and_missing_constants(tmp_path):
    config = config_for_mode("smoke")
    with pytest.raises(ValueError, match="td0"):
        make_replay_buffer(config, "td1", tmp_path)
    with pytest.raises(ValueError, match="normalization constants"):
        make_replay_buffer(config, "td0", tmp_path)
    with pytest.raises(ValueError, match="at least 36 frames"):  # rows of 16 steps
        make_replay_buffer(config.replace(buffer_size=30), "td0", tmp_path, {"loc": 0})


@pytest.mark.slow
def test_rows_that_do_not_cut_into_chunks_are_refused_before_anything_is_written(
    batches, obs_norm, tmp_path
):
    with scratch_dir(tmp_path) as scratch:
        compact = FrameReplay(
            1_000, 32, make_normalizer(obs_norm), scratch, chunk_length=5
        )  # rows of 8 steps
        with pytest.raises(ValueError, match="not chunks of 5"):
            compact.extend(batches[0])
        assert compact.written == 0 and not compact.open_steps


@pytest.mark.slow
def test_a_shifted_sample_moves_its_five_frames_together(batches, obs_norm, tmp_path):
    """With `shift`, a transition's observation and next observation (which share three
    frames) move by one offset: the shared frames stay equal, and differ from those stored."""
    with scratch_dir(tmp_path) as scratch:
        replay = FrameReplay(10_000, 32, make_normalizer(obs_norm), scratch, shift=4)
        for batch in batches:
            replay.extend(batch)
        torch.manual_seed(0)
        sample = replay.sample()
        replay.shift = 0
        as_stored = replay.get(sample["index"])
    assert torch.equal(sample["next", STACK_KEY][:, :3], sample[STACK_KEY][:, 1:])
    assert not torch.equal(sample[STACK_KEY], as_stored[STACK_KEY])
    assert sample["pixels"].shape == as_stored["pixels"].shape == (32, 4, 64, 64)
