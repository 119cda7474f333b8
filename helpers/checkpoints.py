"""Checkpoint utils: save a training run's state, and load a trained agent safely (weights only)."""

from __future__ import annotations

import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from tensordict import TensorDict
from torchrl.envs import TransformedEnv
from torchrl.modules import QValueActor

from helpers.config import Config
from helpers.envs import make_env
from helpers.models import make_actor

FORMAT = "pixel-dqn-course/1"


class CheckpointError(ValueError):
    """A file that is not a usable checkpoint of this course."""


def save_checkpoint(path: str | Path, **state: object) -> Path:
    """Write `state` (tensors, numbers, strings, dicts) to `path` atomically.

    The file is first written next to `path` and then renamed, so an interrupted save
    never leaves a truncated checkpoint in place of a good one.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": FORMAT, **state}, tmp)
    os.replace(tmp, path)
    return path


def flat_params(params: TensorDict) -> dict[str, torch.Tensor]:
    """A parameter TensorDict as a plain {"a.b.c": tensor} dict that loads with weights_only."""
    return {k: v.detach().cpu().clone() for k, v in params.flatten_keys(".").items()}


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint with `weights_only=True` (it can never run code) and check its format."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"No checkpoint at {path}. Train one first (notebook 04/05 or "
            "`python -m helpers train`), or use one from checkpoints/."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(
            f"{path} is not a readable checkpoint (truncated, corrupt or not a torch file): {err}"
        ) from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a checkpoint of this course (expected format {FORMAT!r})."
        )
    return state


def load_params_into(actor: QValueActor, flat: dict[str, torch.Tensor], source: str) -> None:
    """Copy saved parameters into `actor`, refusing a file made for another architecture."""
    params = TensorDict.from_module(actor).flatten_keys(".")
    expected = {k: tuple(v.shape) for k, v in params.items()}
    found = {k: tuple(v.shape) for k, v in flat.items()}
    if expected != found:
        diff = sorted(set(expected.items()) ^ set(found.items()))[:4]
        raise CheckpointError(
            f"{source} was made with a different network architecture than this course's "
            f"(first differences: {diff})."
        )
    with torch.no_grad():
        params.update_(TensorDict(flat, batch_size=[]))


@dataclass
class Agent:
    """A trained agent loaded from a checkpoint.

    Attributes:
        policy: the greedy actor; reads `pixels`, writes `action` (and the Q-values).
        obs_norm: the normalization constants it was trained with.
        config: the hyperparameters of its training run.
        info: target, mode, seed and frames of its training run.
    """

    policy: QValueActor
    obs_norm: dict
    config: Config
    info: dict

    def make_env(self, seed: int | None = None, **kwargs: object) -> TransformedEnv:
        """The evaluation environment, normalized with the constants the agent was trained with."""
        kwargs.setdefault("pipeline", self.config.pipeline)
        return make_env(obs_norm_state_dict=self.obs_norm, seed=seed, **kwargs)


def load_agent(path: str | Path, device: str | torch.device = "cpu") -> Agent:
    """Load the trained policy of a checkpoint written by `helpers.training.train`."""
    state = load_checkpoint(path)
    try:
        config = Config.from_dict(state["config"])
        obs_norm = state["obs_norm"]
        params = state["params"]
    except (KeyError, TypeError) as err:
        raise CheckpointError(f"{path} lacks part of a training checkpoint: {err}") from err
    env = make_env(obs_norm_state_dict=obs_norm)
    try:
        actor = make_actor(env, config.init_bias, device)
    finally:
        env.close()
    load_params_into(actor, params, str(path))
    actor.eval()
    info = {k: state.get(k) for k in ("target", "mode", "seed", "frames", "interrupted")}
    return Agent(actor, obs_norm, config, info)
