"""Replay buffers of transitions and of trajectory chunks, and their scratch folder."""

import pytest
import torch
from tensordict import TensorDict

from helpers.config import config_for_mode
from helpers.replay import chunk_length, make_replay_buffer, prepare_batch, scratch_dir


def fake_batch(workers: int, steps: int) -> TensorDict:
    """A collector-shaped batch [workers, steps] whose pixels encode (worker, step)."""
    ids = torch.arange(workers * steps, dtype=torch.float32).view(workers, steps)
    pixels = ids.view(workers, steps, 1, 1, 1).expand(workers, steps, 4, 64, 64).clone()
    flags = torch.zeros(workers, steps, 1, dtype=torch.bool)
    return TensorDict(
        {
            "pixels": pixels,
            "action": torch.zeros(workers, steps, 2, dtype=torch.int64),
            "action_value": torch.zeros(workers, steps, 2),
            "collector": {"traj_ids": torch.zeros(workers, steps, dtype=torch.int64)},
            "next": {
                "pixels": pixels + 1,
                "reward": torch.full((workers, steps, 1), 0.1),
                "done": flags,
                "terminated": flags,
                "truncated": flags,
            },
        },
        batch_size=[workers, steps],
    )


def test_td0_stores_transitions(tmp_path):
    config = config_for_mode("smoke")
    with scratch_dir(tmp_path) as scratch:
        replay = make_replay_buffer(config, "td0", scratch)
        replay.extend(prepare_batch(fake_batch(2, 16), "td0"))
        assert len(replay) == 32
        sample = replay.sample()
        assert sample.batch_size == (config.batch_size,)
        assert sample["pixels"].shape == (config.batch_size, 4, 64, 64)
        assert "action_value" not in sample.keys() and "collector" not in sample.keys()
        # next pixels stay paired with their own transition
        torch.testing.assert_close(sample["next", "pixels"], sample["pixels"] + 1)
    assert not list(tmp_path.iterdir()), "the scratch folder was not removed"


def test_td_lambda_stores_chunks(tmp_path):
    config = config_for_mode("smoke")
    steps = chunk_length(config)
    with scratch_dir(tmp_path) as scratch:
        replay = make_replay_buffer(config, "td-lambda", scratch)
        replay.extend(prepare_batch(fake_batch(config.num_workers, steps), "td-lambda"))
        assert len(replay) == config.num_workers
        sample = replay.sample()
        assert sample.batch_size == (config.batch_size // steps, steps)
        # each sampled row is one worker's consecutive steps
        first = sample["pixels"][:, :, 0, 0, 0]
        torch.testing.assert_close(first[:, 1:] - first[:, :-1], torch.ones_like(first[:, 1:]))


def test_scratch_is_removed_after_an_error_and_stale_ones_are_cleaned(tmp_path):
    with pytest.raises(RuntimeError), scratch_dir(tmp_path) as scratch:
        (scratch / "x.memmap").write_bytes(b"0")
        raise RuntimeError("boom")
    assert not list(tmp_path.iterdir())
    stale = tmp_path / ".replay-old"
    stale.mkdir()
    with scratch_dir(tmp_path):
        assert not stale.exists()


def test_chunk_length_needs_divisible_batches():
    with pytest.raises(ValueError, match="multiple"):
        chunk_length(config_for_mode("smoke").replace(frames_per_batch=33))
