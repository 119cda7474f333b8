"""Notebook 01. Environment utils: the pixel CartPole environment and its transforms (the normalization's
constants are computed and stored by `helpers.normalization`)."""

from __future__ import annotations

import functools
import os

import numpy as np
import torch
import torch.nn.functional as F
from torchrl.data import Composite, Unbounded
from torchrl.envs import (
    CatFrames,
    Compose,
    Crop,
    GrayScale,
    ObservationNorm,
    ParallelEnv,
    PermuteTransform,
    Resize,
    RewardScaling,
    SerialEnv,
    StepCounter,
    ToTensorImage,
    TransformedEnv,
)
from torchrl.envs.libs.gym import GymEnv

from helpers.config import FRAME_STACK, REWARD_SCALE

# pygame draws CartPole; with no screen (servers, CI, Docker) it needs SDL's dummy driver.
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

ENV_NAME = "CartPole-v1"
FRAME_SIZE = 64  # frames are resized to FRAME_SIZE x FRAME_SIZE
# The band of the 400x600 frame where the cart and pole are drawn: rows 160 to 319. Every row
# above and below is white in every frame (notebook 01 checks it), so cutting them loses nothing
# and leaves 60% less to convert and resize.
CROP_TOP, CROP_HEIGHT = 160, 160
STACK_KEY = "stack"  # the stack as uint8 frames, before the float conversion (for the replay)
PIPELINES = ("uint8", "float32")


def make_base_env(device: str | torch.device | None = None) -> GymEnv:
    """One CartPole that returns rendered 400x600 RGB frames instead of its state vector.

    Module-level (not a lambda) so that worker processes (spawned, or forked from the course's
    fork server) can import it by name.
    """
    env = GymEnv(ENV_NAME, from_pixels=True, pixels_only=True, device=device)
    cartpole = env._env.unwrapped  # (gymnasium's CartPoleEnv, under torchrl's pixel wrapper)
    cartpole.render = functools.partial(render_frame, cartpole)
    return env


def render_frame(cartpole) -> np.ndarray | None:
    """What gymnasium's `CartPoleEnv.render()` returns in "rgb_array" mode: the same drawing,
    the same [400, 600, 3] uint8 frame, copied from pygame's surface row by row.

    gymnasium copies the surface through numpy's transposing copy of `pixels3d`, which takes
    most of a render's time; pygame's `tobytes` writes the rows in order, in about a third of
    that (tests/test_envs.py checks the frames are equal; docs/speed-and-memory.md).
    """
    import pygame  # (as gymnasium imports it: when the first frame is drawn)

    mode, cartpole.render_mode = cartpole.render_mode, "surface"
    try:  # (gymnasium's render draws, then returns nothing)
        type(cartpole).render(cartpole)
    finally:
        cartpole.render_mode = mode
    if cartpole.state is None:
        return None
    width, height = cartpole.screen.get_size()
    rows = np.frombuffer(pygame.image.tobytes(cartpole.screen, "RGB"), np.uint8)
    return rows.reshape(height, width, 3).copy()  # (writable, as gymnasium's)


class Uint8Resize(Resize):
    """torchrl's Resize (antialiased bilinear), computed with `F.interpolate` on [N, C, H, W].

    torchrl hands a 3-dim image to torchvision, which takes its slow path on our uint8 frames;
    `F.interpolate` on the same pixels, seen as a channels-last batch, uses the fast uint8
    kernel: 5 times faster here, and the same result up to rounding.
    """

    def _apply_transform(self, observation: torch.Tensor) -> torch.Tensor:
        images = observation.reshape(-1, *observation.shape[-3:])
        size = (self.w, self.h)
        resized = F.interpolate(images, size=size, mode="bilinear", antialias=True)
        return resized.reshape(*observation.shape[:-2], *size)


def check_pipeline(pipeline: str) -> str:
    """Return `pipeline` if it is one of PIPELINES, else raise a ValueError that lists them."""
    if pipeline not in PIPELINES:
        raise ValueError(f"Unknown pipeline {pipeline!r}: choose one of {', '.join(PIPELINES)}.")
    return pipeline


def make_obs_norm(obs_norm: dict | None, in_keys: list | None = None) -> ObservationNorm:
    """The ObservationNorm with saved constants `loc` and `scale`, on `in_keys` (["pixels"]);
    without constants, a lazy one for `init_stats` (notebook 02)."""
    if obs_norm is None:
        return ObservationNorm(in_keys=in_keys or ["pixels"], standard_normal=True)
    return ObservationNorm(
        in_keys=in_keys or ["pixels"],
        loc=obs_norm["loc"].clone(),
        scale=obs_norm["scale"].clone(),
        standard_normal=True,
    )


class FrameNorm(ObservationNorm):
    """`ToTensorImage` then `ObservationNorm`, in one pass: uint8 stacks -> (frames / 255 - loc) / scale.

    Computed as frames * (1 / (255 scale)) - loc / scale, in place on a single float copy: the
    two transforms make three full-size float tensors with a division each. On the replay's
    samples (2 x 128 stacks per gradient step) that halves the sampling time
    (docs/speed-and-memory.md).
    The constants are ObservationNorm's, computed on [0, 1] pixels (notebook 02); the result
    equals the two transforms' up to float rounding (tests/test_envs.py).
    """

    def __init__(self, obs_norm: dict, in_keys: list, out_keys: list) -> None:
        super().__init__(
            loc=obs_norm["loc"].clone(),
            scale=obs_norm["scale"].clone(),
            in_keys=in_keys,
            out_keys=out_keys,
            standard_normal=True,
        )

    def _apply_transform(self, frames: torch.Tensor) -> torch.Tensor:
        per_level = (255 * self.scale).reciprocal()
        # (a copy even of float frames: the in-place arithmetic must not change the input)
        scaled = frames.to(per_level.dtype, copy=True).mul_(per_level)
        return scaled.sub_(self.loc / self.scale)

    def transform_observation_spec(self, observation_spec: Composite) -> Composite:
        """Unbounded float "pixels", as the two transforms make them."""
        for frames, pixels in zip(self.in_keys, self.out_keys):
            shape, device = observation_spec[frames].shape, observation_spec[frames].device
            observation_spec[pixels] = Unbounded(shape, device=device, dtype=self.loc.dtype)
        return observation_spec


def make_transforms(
    obs_norm: dict | None = None, pipeline: str = "uint8", reward_scale: float = REWARD_SCALE
) -> Compose:
    """The observation pipeline, ending with the normalization (lazy when no constants).

    "float32" is the tutorial's order: ToTensorImage, RewardScaling, GrayScale, Resize,
    CatFrames, ObservationNorm. "uint8" (the course's, the default) cuts the frame to the band where the
    cart and pole are drawn, then shrinks and stacks it while it is still uint8, keeps that
    uint8 stack under `stack` for the compact replay memory, and only then converts to float:
    the same scene, drawn taller, for much less work per step (notebook 01 shows both).
    """
    reward = RewardScaling(loc=0.0, scale=reward_scale)  # reward 1 -> reward_scale per step
    if check_pipeline(pipeline) == "float32":
        stack = CatFrames(FRAME_STACK, in_keys=["pixels"], dim=-3)  # -> [4, 64, 64]
        shrink = [ToTensorImage(), reward, GrayScale(), Resize(FRAME_SIZE, FRAME_SIZE), stack]
        return Compose(StepCounter(), *shrink, make_obs_norm(obs_norm))
    return Compose(
        StepCounter(),  # counts the steps of each episode, for the logs and the replay memory
        # Shrink the frame while it is still uint8, then convert the small result to float:
        # float work on the full 400x600x3 frame is the costliest step otherwise. Resizing the
        # colour frame first and converting 64x64 pixels to grey is cheaper still.
        PermuteTransform((-1, -3, -2), in_keys=["pixels"]),  # uint8 [H, W, C] -> [C, H, W]
        # -> [3, 160, 600]. torchrl 0.14's Crop hands `w` to torchvision as the height and `h`
        # as the width (the opposite of its docstring); tests/test_envs.py checks the shape.
        Crop(w=CROP_HEIGHT, h=600, top=CROP_TOP, left=0, in_keys=["pixels"]),
        Uint8Resize(FRAME_SIZE, FRAME_SIZE),  # -> [3, 64, 64], still uint8
        GrayScale(),  # -> [1, 64, 64], still uint8
        # -> [4, 64, 64], still uint8: kept under "stack" for the compact replay memory
        CatFrames(FRAME_STACK, in_keys=["pixels"], out_keys=[STACK_KEY], dim=-3),
        reward,
        *to_pixels(obs_norm, [STACK_KEY], ["pixels"]),
    )


def to_pixels(obs_norm: dict | None, in_keys: list, out_keys: list) -> list:
    """uint8 stacks -> normalized float "pixels": `FrameNorm` with the constants, and without
    them `ToTensorImage` (to [0, 1]) then a lazy `ObservationNorm` for `init_stats` (notebook 02)."""
    if obs_norm is not None:
        return [FrameNorm(obs_norm, in_keys, out_keys)]
    to_float = ToTensorImage(in_keys=in_keys, out_keys=out_keys, shape_tolerant=True, from_int=True)
    return [to_float, make_obs_norm(None, out_keys)]


def make_env(
    parallel: bool = False,
    obs_norm: dict | None = None,
    num_workers: int = 1,
    device: str | torch.device | None = None,
    seed: int | None = None,
    pipeline: str = "uint8",
    reward_scale: float = REWARD_SCALE,
) -> TransformedEnv:
    """Build the environment the agent sees: stacked, normalized 64x64 grayscale frames.

    Args:
        parallel: run the `num_workers` environments in worker processes (a ParallelEnv)
            instead of one after the other in this process (a SerialEnv); either way the
            transforms run once, batched, in this process.
        obs_norm: `loc` and `scale` of the ObservationNorm (see
            `helpers.normalization.compute_norm_constants`); without them the normalization is left to be
            initialised with `init_stats`.
        num_workers: number of environments; 1 (and not `parallel`) gives a plain env.
        device: where the environment puts its tensors (default: CPU).
        seed: seed for the environment(s), for repeatable rollouts.
        pipeline: "uint8" (the course's, uint8 first, see `make_transforms`) or "float32".
        reward_scale: what the reward of 1 per step is multiplied by (Config.reward_scale).
    """
    if obs_norm is not None:
        check_norm_constants(obs_norm)
    if not isinstance(num_workers, int) or num_workers < 1:
        raise ValueError(f"num_workers must be a positive integer, got {num_workers!r}.")
    factory = functools.partial(make_base_env, device=device)
    if parallel:
        base_env = ParallelEnv(num_workers, factory)
    elif num_workers > 1:
        base_env = SerialEnv(num_workers, factory)
    else:
        base_env = factory()
    env = TransformedEnv(base_env, make_transforms(obs_norm, pipeline, reward_scale))
    if seed is not None:
        env.set_seed(seed)
    return env


def check_norm_constants(state_dict: dict) -> None:
    """Raise a ValueError unless `state_dict` holds `loc` and `scale` of shape [4, 1, 1]."""
    expected = torch.Size([FRAME_STACK, 1, 1])
    for key in ("loc", "scale"):
        value = state_dict.get(key) if isinstance(state_dict, dict) else None
        if not isinstance(value, torch.Tensor) or value.shape != expected:
            raise ValueError(
                f"Normalization constants need a tensor {key!r} of shape {list(expected)}; "
                f"got {value!r:.80}. Recompute them with compute_norm_constants() "
                "(notebook 02)."
            )
