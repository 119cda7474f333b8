"""Notebook 04. Evaluation utils: deterministic episodes of an agent on fixed seeds, and their statistics.

Two sets of seeds that training never uses: `EVAL_SEED` onwards for the evaluations during
training (they choose which agent a run keeps), `TEST_SEED` onwards for the final evaluation and
`python -m helpers evaluate` (they only report; helpers.run.checkpoint_evaluation plays them).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable

import torch
from tensordict import TensorDictBase
from torchrl.envs import EnvBase, ExplorationType, set_exploration_type

from helpers.config import (  # noqa: F401 (EVAL_SEED: notebook 04 reads it here)
    EVAL_SEED,
    MAX_STEPS,
    TEST_SEED,
    Config,
)
from helpers.envs import STACK_KEY

# The most episodes one process plays side by side (`batched_episode_lengths`): 10 cost a step
# no more than 25, for a quarter of the memory (docs/speed-and-memory.md).
SIDE_BY_SIDE = 10


def play_episode(
    policy, env: EnvBase, max_steps: int = MAX_STEPS, seed: int | None = None
) -> TensorDictBase:
    """One greedy episode (DETERMINISTIC exploration): a [steps] TensorDict of what happened."""
    if seed is not None:
        env.set_seed(seed)
    with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
        return env.rollout(max_steps, policy=policy)


def episode_length(
    policy, env: EnvBase, max_steps: int = MAX_STEPS, seed: int | None = None
) -> int:
    """The number of steps of `play_episode`'s episode, played without keeping it.

    An evaluation needs only how long each episode lasted: stepping the environment by hand
    and dropping each step once the next one is made skips the rollout's stacking of 500
    steps of frames at the end, about a tenth of an evaluation's time (tests/test_agent.py
    checks the lengths against `play_episode`'s, cut ones included).
    """
    if seed is not None:
        env.set_seed(seed)
    with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
        steps, step = 0, env.reset()
        while steps < max_steps:
            step = env.step(policy(step))
            steps += 1
            if step["next", "done"].item():
                break
            step = env.step_mdp(step)
    return steps


def episode_lengths(
    policy, env: EnvBase, seeds: list[int], max_steps: int = MAX_STEPS
) -> list[int]:
    """Length of one deterministic episode per seed."""
    return [episode_length(policy, env, max_steps, seed) for seed in seeds]


def batched_episode_lengths(
    policy,
    envs: EnvBase,
    seeds: list[int],
    max_steps: int = MAX_STEPS,
    stop: Callable[[list[int | None]], bool] = lambda ended: False,
) -> list[int | None]:
    """`episode_lengths` of up to `len(envs)` seeds played side by side, one in each
    environment of a batched env (`make_env(num_workers=n)`): each step renders the CartPoles
    still playing, then runs torchrl's transforms and the policy once for all of them, which
    makes a step of an evaluation about half as costly (docs/speed-and-memory.md).

    The lengths are `episode_length`'s: each environment is seeded as `set_seed` seeds one
    (tests/test_evaluator.py compares them). A batch's forward pass can differ from a single
    one's in the last bit of a Q-value, so a rare near-tie between the two actions may go
    the other way. An environment whose episode has ended is no longer stepped (torchrl's
    partial steps: a `"_step"` mask). `stop` sees the lengths so far, in seed order, None for
    the episodes still playing, whenever one ends: when it says True, they are returned as
    they are.
    """
    size = envs_in(envs)
    if not 0 < len(seeds) <= size:
        raise ValueError(f"{len(seeds)} seeds for a batch of {size} environments.")
    if not envs.batch_size:  # (one environment, not a batch of one: make_env(num_workers=1))
        return [episode_length(policy, envs, max_steps, seeds[0])]
    padded = seeds + seeds[-1:] * (size - len(seeds))  # (spare environments are never stepped)
    envs.reset(list_of_kwargs=[{"seed": seed} for seed in padded])  # (as set_seed does)
    ended: list[int | None] = [None] * len(seeds)
    playing = torch.arange(size) < len(seeds)
    with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
        step = envs.reset()
        for steps in range(1, max_steps + 1):
            # (the observations go: a partial step keeps those of the environments it skips,
            # and torchrl's would clash with the raw frame of the same name)
            step = policy(step).exclude("pixels", STACK_KEY).set("_step", playing.clone())
            step = envs.step(step)
            done = step["next", "done"].reshape(size) & playing
            for i in done.nonzero().flatten().tolist():
                ended[i] = steps
            playing &= ~done
            if done.any() and stop(ended) and steps < max_steps:
                return ended
            if not playing.any():
                break
            step = envs.step_mdp(step)
    return [max_steps if n is None else n for n in ended]


def envs_in(envs: EnvBase) -> int:
    """How many environments `envs` steps side by side (1 for a plain one)."""
    return envs.batch_size[0] if envs.batch_size else 1


def side_by_side(seeds: list[int]) -> list[list[int]]:
    """`seeds` cut into the fewest groups of at most SIDE_BY_SIDE, their sizes differing by
    one at most (larger first)."""
    size, longer = divmod(len(seeds), -(-len(seeds) // SIDE_BY_SIDE))
    groups, start = [], 0
    for i in range(-(-len(seeds) // SIDE_BY_SIDE)):
        end = start + size + (i < longer)
        groups.append(seeds[start:end])
        start = end
    return groups


def evaluation_lengths(
    policy,
    envs: EnvBase,
    config: Config,
    ended: Callable[[], bool] = lambda: False,
    to_beat: float = -math.inf,
) -> list[int]:
    """The episodes of one evaluation during training: `eval_episodes` on the seeds from
    EVAL_SEED; if all reach the step limit, up to `confirm_episodes` more on the seeds after
    them, ending with the first that falls short, or once `ended()` says the training has
    collected its last frame. `envs` plays them side by side, as many at a time as it holds
    (`batched_episode_lengths`).

    Twenty perfect episodes cannot tell an agent that never fails from one that fails one
    episode in fifty, and a perfect evaluation stops the run: the extra episodes give it the
    evidence of 100. Once the training has ended there is nothing left to stop, so they are
    not played. The mean of an evaluation is over the episodes it played.

    `to_beat` is the best evaluation of the run so far. An evaluation stops as soon as its
    mean can no longer reach it, even if every episode still playing reached the step limit:
    that agent cannot be the one the run keeps (`cannot_reach`). It then counts the episodes
    that had ended.
    """
    limit, count, size = config.eval_max_steps, config.eval_episodes, envs_in(envs)
    lengths: list[int] = []
    for start in range(EVAL_SEED, EVAL_SEED + count, size):
        seeds = list(range(start, min(start + size, EVAL_SEED + count)))
        played = batched_episode_lengths(
            policy,
            envs,
            seeds,
            limit,
            lambda e: cannot_reach(lengths + _known(e), count, limit, to_beat),
        )
        lengths.extend(_known(played))
        if cannot_reach(lengths, count, limit, to_beat):
            return lengths
    confirm = EVAL_SEED + count + config.confirm_episodes
    for start in range(EVAL_SEED + count, confirm, size):
        if min(lengths) < limit or ended():
            break
        seeds = list(range(start, min(start + size, confirm)))
        # (in seed order, up to the first that falls short, or the first still playing once
        # the training has ended: the episodes one by one would have played)
        played = batched_episode_lengths(
            policy, envs, seeds, limit, lambda e: ended() or _short(e, limit)
        )
        for n in played:
            if n is None:
                break
            lengths.append(n)
            if n < limit:
                break
    return lengths


def _known(lengths: list[int | None]) -> list[int]:
    """The lengths of the episodes that have ended (`batched_episode_lengths`)."""
    return [n for n in lengths if n is not None]


def _short(lengths: list[int | None], limit: int) -> bool:
    """An episode fell short of `limit`, and every one before it in seed order has ended."""
    for n in lengths:
        if n is None:
            return False
        if n < limit:
            return True
    return False


def cannot_reach(lengths: list[int], count: int, limit: int, to_beat: float) -> bool:
    """True when an evaluation of `count` episodes that began with `lengths` ends with a mean
    below `to_beat` even if each episode left lasts `limit` steps (the most it can reach: an
    evaluation whose episodes all reach the limit has a mean of `limit`, confirmed or not)."""
    best_case = (sum(lengths) + (count - len(lengths)) * limit) / count
    return best_case < to_beat


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
