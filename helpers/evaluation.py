"""Evaluation utils: deterministic episodes of an agent on fixed seeds, and their statistics.

Two sets of seeds that training never uses: `EVAL_SEED` onwards for the evaluations during
training (they choose which agent a run keeps), `TEST_SEED` onwards for the final evaluation and
`python -m helpers evaluate` (they only report).
"""

from __future__ import annotations

import os
import statistics
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import torch
from tensordict import TensorDictBase
from torchrl.envs import EnvBase, ExplorationType, set_exploration_type

from helpers.checkpoints import load_agent

MAX_STEPS = 500  # CartPole-v1 truncates episodes at 500 steps
EVAL_SEED = 100_000  # first seed of the evaluations during training
TEST_SEED = 200_000  # first seed of the final evaluation (and of `evaluate`)


def play_episode(
    policy, env: EnvBase, max_steps: int = MAX_STEPS, seed: int | None = None
) -> TensorDictBase:
    """One greedy episode (DETERMINISTIC exploration): a [steps] TensorDict of what happened."""
    if seed is not None:
        env.set_seed(seed)
    with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
        return env.rollout(max_steps, policy=policy)


def episode_lengths(
    policy, env: EnvBase, seeds: list[int], max_steps: int = MAX_STEPS
) -> list[int]:
    """Length of one deterministic episode per seed."""
    return [play_episode(policy, env, max_steps, seed).numel() for seed in seeds]


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


def _agent_lengths(agent, seeds: list[int], max_steps: int) -> list[int]:
    """`episode_lengths` of a loaded agent, in its own evaluation environment."""
    env = agent.make_env()
    try:
        return episode_lengths(agent.policy, env, seeds, max_steps)
    finally:
        env.close()


def _checkpoint_lengths(path: str, seeds: list[int], max_steps: int) -> list[int]:
    """`_agent_lengths` of a checkpoint's agent (what each worker process runs)."""
    return _agent_lengths(load_agent(path), seeds, max_steps)


def evaluate_checkpoint(
    path: str | Path,
    episodes: int = 100,
    seed: int = TEST_SEED,
    max_steps: int = MAX_STEPS,
    workers: int | None = None,
) -> dict:
    """Play `episodes` deterministic episodes (seeds seed, seed+1, ...) with a checkpoint's agent.

    Rendering is the slow part, so the episodes are shared between `workers` processes
    (default: one per CPU core, at most 8); the lengths do not depend on how they are shared.
    """
    if episodes < 1:
        raise ValueError(f"--episodes must be at least 1, got {episodes}.")
    agent = load_agent(path)  # a bad file says so here, once, not in every worker
    seeds = list(range(seed, seed + episodes))
    workers = min(workers or min(os.cpu_count() or 1, 8), episodes)
    if workers == 1:
        lengths = _agent_lengths(agent, seeds, max_steps)
    else:
        shares = [seeds[i::workers] for i in range(workers)]
        # One torch thread per worker process: the processes share the cores.
        with ProcessPoolExecutor(
            workers,
            mp_context=get_context("spawn"),
            initializer=torch.set_num_threads,
            initargs=(1,),
        ) as pool:
            parts = list(
                pool.map(_checkpoint_lengths, [str(path)] * workers, shares, [max_steps] * workers)
            )
        by_seed = {s: n for share, part in zip(shares, parts) for s, n in zip(share, part)}
        lengths = [by_seed[s] for s in seeds]
    return {"checkpoint": str(path), "seed": seed, **episode_stats(lengths)}
