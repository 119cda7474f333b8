"""Evaluation utils: deterministic episodes of a trained agent and their statistics."""

from __future__ import annotations

import statistics
from pathlib import Path

import torch
from tensordict import TensorDictBase
from torchrl.envs import EnvBase, ExplorationType, set_exploration_type

from helpers.checkpoints import load_agent

MAX_STEPS = 500  # CartPole-v1 truncates episodes at 500 steps


def play_episode(
    policy, env: EnvBase, max_steps: int = MAX_STEPS, seed: int | None = None
) -> TensorDictBase:
    """One greedy episode (DETERMINISTIC exploration): a [steps] TensorDict of what happened."""
    if seed is not None:
        env.set_seed(seed)
    with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
        return env.rollout(max_steps, policy=policy)


def episode_stats(lengths: list[int]) -> dict:
    """Mean, standard deviation, min and max of episode lengths."""
    return {
        "episodes": len(lengths),
        "mean": statistics.fmean(lengths),
        "std": statistics.pstdev(lengths),
        "min": min(lengths),
        "max": max(lengths),
        "lengths": lengths,
    }


def evaluate_checkpoint(
    path: str | Path, episodes: int = 10, seed: int = 0, max_steps: int = MAX_STEPS
) -> dict:
    """Play `episodes` deterministic episodes (seeds seed, seed+1, ...) with a checkpoint's agent."""
    if episodes < 1:
        raise ValueError(f"--episodes must be at least 1, got {episodes}.")
    agent = load_agent(path)
    env = agent.make_env()
    try:
        lengths = [
            play_episode(agent.policy, env, max_steps, seed + i).numel() for i in range(episodes)
        ]
    finally:
        env.close()
    return {"checkpoint": str(path), "seed": seed, **episode_stats(lengths)}
