"""Notebook 06. Video utils: record an episode's raw frames, write MP4 or GIF, embed videos in notebooks, and the factories TorchRL's renderer (`render_policy`, `rlrender`) builds a course agent with."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import TYPE_CHECKING

import imageio.v2 as imageio
import numpy as np
import torch
from torchrl.envs import CatTensors, TransformedEnv
from torchrl.modules import QValueActor

from helpers.agents import load_agent
from helpers.evaluation import MAX_STEPS, play_episode
from helpers.machine import output_dir

if TYPE_CHECKING:
    from torchrl.render import RenderConfig

RAW_KEY = "pixels_raw"  # the untouched RGB frame, copied before the other transforms
VIDEO_NAME = "td-lambda-agent.mp4"  # what `make course` leaves in outputs/
VIDEO_FORMATS = (".mp4", ".gif")


def keep_raw_frames(env: TransformedEnv) -> TransformedEnv:
    """Copy each raw frame to `pixels_raw` (RAW_KEY) ahead of the transforms, which change `pixels` in place."""
    env.transform.insert(0, CatTensors(["pixels"], RAW_KEY, del_keys=False))
    return env


def check_video_path(path: str | Path) -> Path:
    """Refuse a video file name we cannot write: another format, or a folder that does not
    exist (it is not created: a typo would scatter folders around)."""
    path = Path(path)
    if path.suffix.lower() not in VIDEO_FORMATS:
        raise ValueError(f"Cannot write {path.name}: the video file must end in .mp4 or .gif.")
    if not path.parent.is_dir():
        raise FileNotFoundError(
            f"Cannot write {path}: the folder {path.parent} does not exist (create it first)."
        )
    if path.exists() and not path.is_file():
        raise ValueError(f"Cannot write {path}: it is not a regular file. Choose another name.")
    existed = path.exists()
    try:
        with path.open("ab"):
            pass
    except OSError as err:
        raise ValueError(
            f"Cannot write {path} ({err.strerror}): choose a file in a folder you can write to."
        ) from None
    if not existed:
        path.unlink()
    return path


def write_video(frames: torch.Tensor | np.ndarray, path: str | Path, fps: int = 30) -> Path:
    """Write uint8 frames [T, H, W, 3] to an MP4 (H.264, imageio-ffmpeg) or a GIF, by suffix."""
    path = check_video_path(path)
    if fps < 1:
        raise ValueError(f"fps must be at least 1, got {fps}.")
    frames = np.asarray(frames, dtype=np.uint8)
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"Expected frames shaped [T, H, W, 3], got {list(frames.shape)}.")
    if path.suffix.lower() == ".mp4":
        # macro_block_size=8 keeps 400x600 frames at their size (16 would pad them to 608 wide).
        imageio.mimwrite(path, frames, fps=fps, macro_block_size=8, quality=7)
    else:
        # Pillow merges identical consecutive GIF frames into one longer frame; flipping the
        # lowest bit of one corner pixel on every other frame keeps one GIF frame per step.
        frames = frames.copy()
        frames[1::2, 0, 0, 0] ^= 1
        imageio.mimwrite(path, frames, duration=1000 / fps, loop=0)
    return path


def record_video(
    checkpoint: str | Path,
    out: str | Path,
    max_steps: int = MAX_STEPS,
    seed: int = 0,
    fps: int = 30,
) -> tuple[Path, int]:
    """Play one deterministic episode with a checkpoint's agent and write it to `out`."""
    check_video_path(out)  # before the episode is played, not after
    if max_steps < 1:
        raise ValueError(f"--max-steps must be at least 1, got {max_steps}.")
    if fps < 1:
        raise ValueError(f"--fps must be at least 1, got {fps}.")
    agent = load_agent(checkpoint)
    env = keep_raw_frames(agent.make_env())
    try:
        episode = play_episode(agent.policy, env, max_steps, seed)
    finally:
        env.close()
    return write_video(episode[RAW_KEY], out, fps), episode.numel()


# TorchRL's renderer (`torchrl.render.render_policy`, the `rlrender` command) plays a policy
# from a checkpoint with two factories it imports: these build a course checkpoint's agent and
# environment. It captures the frames it finds under `pixel_key`: give it RAW_KEY.
def agent_env(config: RenderConfig, seed: int | None = None) -> TransformedEnv:
    """torchrl.render's environment factory: the environment of the agent in `config.ckpt`
    (a course checkpoint), normalized as in its training, with the raw frames kept (RAW_KEY)."""
    return keep_raw_frames(load_agent(config.ckpt).make_env(seed=seed))


def agent_policy(ckpt_path: str | Path) -> QValueActor:
    """torchrl.render's policy factory: the greedy actor of a course checkpoint (the renderer
    must not load the parameters itself: `auto_load_policy=False`, `--no-auto-load-policy`)."""
    return load_agent(ckpt_path).policy


def embed_video(path: str | Path, width: int = 480):
    """An HTML element that carries the video itself (base64), so it survives in a saved notebook."""
    from IPython.display import HTML

    path = Path(path)
    data = base64.b64encode(path.read_bytes()).decode()
    if path.suffix.lower() == ".gif":
        return HTML(f'<img src="data:image/gif;base64,{data}" width="{width}">')
    return HTML(f'<video controls loop width="{width}" src="data:video/mp4;base64,{data}"></video>')


def report_video() -> None:
    """Print where the course's rollout video is (the last step of `make course`)."""
    path = output_dir() / VIDEO_NAME
    if path.exists():
        print(f"Rollout video of the trained agent: {path}")
    else:
        print(f"No rollout video at {path}: notebook 06 writes it.")
