"""The pixel CartPole environment, its transforms and normalization constants."""

import numpy as np
import pytest
import torch
from torchrl.envs import Resize, TransformedEnv
from torchrl.envs.utils import check_env_specs

from helpers.envs import (
    CROP_HEIGHT,
    CROP_TOP,
    FRAME_STACK,
    STACK_KEY,
    Uint8Resize,
    make_base_env,
    make_env,
    make_transforms,
    render_frame,
)
from helpers.normalization import (
    NORM_KEEP_DIMS,
    NORM_REDUCE_DIMS,
    NORM_VIEW,
    course_norm_constants,
    load_norm_constants,
    save_norm_constants,
)
from helpers.run.workers import worker_processes


def test_env_specs_are_consistent(obs_norm):
    env = make_env(obs_norm=obs_norm, seed=0)
    try:
        check_env_specs(env)
    finally:
        env.close()


def test_observation_is_four_stacked_64x64_frames(obs_norm):
    env = make_env(obs_norm=obs_norm, seed=0)
    td = env.reset()
    env.close()
    assert td["pixels"].shape == (4, 64, 64)
    assert td["pixels"].dtype == torch.float32


def test_constants_have_shape_4_1_1(obs_norm):
    assert obs_norm["loc"].shape == (FRAME_STACK, 1, 1)
    assert obs_norm["scale"].shape == (FRAME_STACK, 1, 1)
    # Mostly white frames: the mean pixel is bright and the spread small.
    assert 0.9 < obs_norm["loc"].mean() < 1.0
    assert 0.01 < obs_norm["scale"].mean() < 0.2


def test_normalized_pixels_have_zero_mean_unit_std_on_a_fresh_rollout(obs_norm):
    env = make_env(obs_norm=obs_norm, seed=123)
    pixels = env.rollout(200, break_when_any_done=False)["next", "pixels"]
    env.close()
    assert abs(pixels.mean().item()) < 0.1
    assert abs(pixels.std().item() - 1.0) < 0.1


def test_the_tutorials_init_stats_flow_normalizes_that_same_env():
    # The tutorial computes the constants on an env, then plays that same env. init_stats
    # leaves the stacked frames as floats in [0, 255]: they must still be scaled to [0, 1].
    env = make_env(seed=0)
    env.transform[-1].init_stats(
        num_iter=200, reduce_dim=list(NORM_REDUCE_DIMS), cat_dim=0, keep_dims=NORM_KEEP_DIMS
    )
    pixels = env.rollout(100, break_when_any_done=False)["next", "pixels"]
    env.close()
    assert abs(pixels.mean().item()) < 0.1
    assert abs(pixels.std().item() - 1.0) < 0.1


def test_a_step_is_rewarded_0_1(obs_norm):
    env = make_env(obs_norm=obs_norm, seed=0)
    rollout = env.rollout(5)
    env.close()
    torch.testing.assert_close(rollout["next", "reward"], torch.full((5, 1), 0.1))


def test_stacked_frames_start_from_the_reset_frame(obs_norm):
    env = make_env(obs_norm=obs_norm, seed=0)
    first = env.reset()["pixels"] * obs_norm["scale"] + obs_norm["loc"]  # undo the norm
    env.close()
    for i in range(1, FRAME_STACK):
        torch.testing.assert_close(first[i], first[0], atol=1e-5, rtol=0)


def test_constants_round_trip_through_a_file(tmp_path, obs_norm):
    path = save_norm_constants(obs_norm, tmp_path / "norm.pt")
    loaded = load_norm_constants(path)
    torch.testing.assert_close(loaded["loc"], obs_norm["loc"])
    torch.testing.assert_close(loaded["scale"], obs_norm["scale"])


def test_missing_constants_file_names_the_notebook(tmp_path):
    with pytest.raises(FileNotFoundError, match="02_normalization"):
        load_norm_constants(tmp_path / "nowhere.pt")


def test_course_constants_are_computed_and_saved_when_missing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DQN_COURSE_OUTPUT_DIR", str(tmp_path))
    constants = course_norm_constants(num_iter=20)
    assert "not found" in capsys.readouterr().out
    assert (tmp_path / "obs_norm.pt").exists()
    again = course_norm_constants(num_iter=20)
    assert "loaded" in capsys.readouterr().out
    torch.testing.assert_close(again["loc"], constants["loc"])


def test_constants_saved_for_an_older_pipeline_are_recomputed(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DQN_COURSE_OUTPUT_DIR", str(tmp_path))
    old = {"loc": torch.full((4, 1, 1), 0.99), "scale": torch.full((4, 1, 1), 0.05)}
    torch.save(old, tmp_path / "obs_norm.pt")  # no "view": made before the crop
    constants = course_norm_constants(num_iter=20)
    assert "older view" in capsys.readouterr().out
    assert not torch.equal(constants["loc"], old["loc"])
    assert torch.load(tmp_path / "obs_norm.pt", weights_only=True)["view"] == NORM_VIEW


def test_constants_of_the_wrong_shape_are_refused():
    bad = {"loc": torch.zeros(3, 64, 64), "scale": torch.ones(3, 64, 64)}
    with pytest.raises(ValueError, match=r"\[4, 1, 1\]"):
        make_env(obs_norm=bad)


@pytest.mark.parametrize("num_workers", [0, -1, 1.5])
def test_bad_worker_count_is_refused(num_workers, obs_norm):
    with pytest.raises(ValueError, match="num_workers"):
        make_env(parallel=True, num_workers=num_workers, obs_norm=obs_norm)


@pytest.mark.slow  # (starts worker processes)
def test_parallel_env_batches_workers_and_leaves_no_process(obs_norm):
    before = {p.pid for p in worker_processes()}
    env = make_env(parallel=True, num_workers=2, obs_norm=obs_norm, seed=0)
    rollout = env.rollout(10, break_when_any_done=False)
    assert rollout["pixels"].shape == (2, 10, 4, 64, 64)
    assert {p.pid for p in worker_processes()} - before, "the ParallelEnv started no worker"
    env.close()
    single = make_env(obs_norm=obs_norm)
    single.rollout(3)
    single.close()
    from helpers.run.workers import stop_workers

    assert stop_workers(keep=before, timeout=10) == [], "workers had to be killed"
    assert {p.pid for p in worker_processes()} - before == set()


def test_serial_env_steps_its_workers_in_this_process_and_keeps_uint8_frames(obs_norm):
    before = {p.pid for p in worker_processes()}
    env = make_env(num_workers=2, obs_norm=obs_norm, seed=0)
    rollout = env.rollout(6, break_when_any_done=False)
    assert {p.pid for p in worker_processes()} == before, "a SerialEnv starts no process"
    env.close()
    frames = rollout[STACK_KEY]
    assert rollout.batch_size == (2, 6) and frames.dtype == torch.uint8
    # the float observation is the uint8 stack scaled and normalized (FrameNorm: up to rounding)
    expected = (frames.float().div(255) - obs_norm["loc"]) / obs_norm["scale"]
    torch.testing.assert_close(rollout["pixels"], expected, rtol=0, atol=1e-5)


def test_the_crop_drops_only_rows_that_are_always_white():
    env = make_base_env()
    env.set_seed(0)
    frames = torch.cat([env.rollout(500, break_when_any_done=False)["pixels"] for _ in range(2)])
    env.close()
    band = slice(CROP_TOP, CROP_TOP + CROP_HEIGHT)
    assert (frames != 255).any(-1)[:, band].any(), "nothing drawn in the band"
    outside = torch.cat([frames[:, : band.start], frames[:, band.stop :]], 1)
    assert (outside == 255).all()


def test_the_frames_are_gymnasiums_own_render():
    """make_base_env's CartPole reads its frames from pygame's surface its own way
    (render_frame): the same pixels as gymnasium's render, state after state, falls included."""
    import gymnasium as gym

    env = make_base_env()
    ours = env._env.unwrapped
    assert ours.render.func is render_frame  # what torchrl's pixel wrapper calls
    theirs = gym.make("CartPole-v1", render_mode="rgb_array").unwrapped
    theirs.reset(seed=0)
    theirs.action_space.seed(0)  # fixed actions: the same falls on every run
    falls = 0
    for _ in range(80):
        terminated = theirs.step(theirs.action_space.sample())[2]
        ours.state = theirs.state
        frame = ours.render()
        assert frame.shape == (400, 600, 3) and frame.flags.writeable
        assert np.array_equal(frame, theirs.render())
        if terminated:
            falls += 1
            theirs.reset()
    assert falls >= 2, "the test needs states where the pole has fallen"
    env.close()
    theirs.close()


def test_the_crop_keeps_the_band_at_full_width():
    transforms = make_transforms()
    crop = next(i for i, t in enumerate(transforms) if type(t).__name__ == "Crop")
    env, raw_env = TransformedEnv(make_base_env(), transforms[: crop + 1]), make_base_env()
    env.set_seed(0)
    raw_env.set_seed(0)
    cropped, raw = env.reset()["pixels"], raw_env.reset()["pixels"]  # the same first state
    env.close()
    raw_env.close()
    assert cropped.shape == (3, CROP_HEIGHT, 600)
    assert torch.equal(cropped, raw[CROP_TOP : CROP_TOP + CROP_HEIGHT].permute(2, 0, 1))


def test_the_tutorial_pipeline_keeps_its_order_and_no_uint8_copy(obs_norm):
    tutorial = make_env(obs_norm=obs_norm, seed=0, pipeline="float32")
    names = [type(t).__name__ for t in tutorial.transform]
    tutorial.close()
    assert names[1:] == [
        "ToTensorImage",
        "RewardScaling",
        "GrayScale",
        "Resize",
        "CatFrames",
        "ObservationNorm",
    ]
    with pytest.raises(ValueError, match="uint8, float32"):
        make_env(obs_norm=obs_norm, pipeline="fast")


def test_uint8_resize_matches_torchrls_resize_to_a_grey_level():
    env = make_base_env()
    env.set_seed(0)
    frame = env.reset()["pixels"].permute(2, 0, 1)[:, CROP_TOP : CROP_TOP + CROP_HEIGHT]
    env.close()
    ours, theirs = (
        Uint8Resize(64, 64)._apply_transform(frame),
        Resize(64, 64)._apply_transform(frame),
    )
    assert ours.shape == theirs.shape == (3, 64, 64) and ours.dtype == torch.uint8
    assert (ours.int() - theirs.int()).abs().max() <= 1
    batch = Uint8Resize(64, 64)._apply_transform(torch.stack([frame, frame.flip(-1)]))
    assert torch.equal(batch[0], ours) and batch.shape == (2, 3, 64, 64)


def test_frame_norm_is_to_tensor_image_then_observation_norm(obs_norm):
    from tensordict import TensorDict
    from torchrl.envs import ObservationNorm, ToTensorImage

    from helpers.envs import FrameNorm

    frames = torch.randint(0, 256, (5, 4, 64, 64), dtype=torch.uint8)
    one_pass = FrameNorm(obs_norm, ["frames"], ["pixels"])(TensorDict(frames=frames))
    to_float = ToTensorImage(
        in_keys=["frames"], out_keys=["pixels"], shape_tolerant=True, from_int=True
    )
    norm = ObservationNorm(
        loc=obs_norm["loc"], scale=obs_norm["scale"], in_keys=["pixels"], standard_normal=True
    )
    two_passes = norm(to_float(TensorDict(frames=frames)))
    torch.testing.assert_close(one_pass["pixels"], two_passes["pixels"], rtol=0, atol=1e-5)
    assert one_pass["pixels"].dtype == torch.float32
    # by hand: a black pixel of channel 0 is (0 - loc) / scale
    black = -obs_norm["loc"][0, 0, 0] / obs_norm["scale"][0, 0, 0]
    zeros = FrameNorm(obs_norm, ["frames"], ["pixels"])(TensorDict(frames=0 * frames))
    assert torch.allclose(zeros["pixels"][0, 0], black.expand(64, 64))
