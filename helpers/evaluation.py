"""Notebook 04. Evaluation utils: deterministic episodes of an agent on fixed seeds, and their statistics.

Two sets of seeds that training never uses: `EVAL_SEED` onwards for the evaluations during
training (they choose which agent a run keeps), `TEST_SEED` onwards for the final evaluation and
`python -m helpers evaluate` (they only report).
"""

from __future__ import annotations

import json
import math
import os
import signal
import statistics
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path

import torch
from tensordict import TensorDictBase
from torchrl.envs import EnvBase, ExplorationType, set_exploration_type

from helpers.agents import Agent, load_agent
from helpers.config import (  # noqa: F401 (EVAL_SEED: notebook 04 reads it here)
    EVAL_SEED,
    MAX_STEPS,
    TEST_SEED,
    Config,
)
from helpers.machine import torch_threads
from helpers.run.checkpoints import CHECKPOINT_FILE
from helpers.run.folder import EVALUATION_FILE
from helpers.run.fork_server import fork_server, worker_context
from helpers.run.workers import WorkerDiedError, children_ignore_interrupts

MAX_EPISODE_SEED = 2**32 - 1  # numpy's seeds, which gymnasium's environments take


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


def evaluation_lengths(
    policy,
    env: EnvBase,
    config: Config,
    ended: Callable[[], bool] = lambda: False,
    to_beat: float = -math.inf,
) -> list[int]:
    """The episodes of one evaluation during training: `eval_episodes` on the seeds from
    EVAL_SEED; if all reach the step limit, up to `confirm_episodes` more on the seeds after
    them, ending with the first that falls short, or once `ended()` says the training has
    collected its last frame.

    Twenty perfect episodes cannot tell an agent that never fails from one that fails one
    episode in fifty, and a perfect evaluation stops the run: the extra episodes give it the
    evidence of 100. Once the training has ended there is nothing left to stop, so they are
    not played. The mean of an evaluation is over the episodes it played.

    `to_beat` is the best evaluation of the run so far. An evaluation stops as soon as its
    mean can no longer reach it, even if every episode left reached the step limit: that agent
    cannot be the one the run keeps (`cannot_reach`).
    """
    limit, count = config.eval_max_steps, config.eval_episodes
    lengths: list[int] = []
    for seed in range(EVAL_SEED, EVAL_SEED + count):
        lengths.append(episode_length(policy, env, limit, seed))
        if cannot_reach(lengths, count, limit, to_beat):
            return lengths
    for seed in range(EVAL_SEED + count, EVAL_SEED + count + config.confirm_episodes):
        if min(lengths) < limit or ended():
            break
        lengths.append(episode_length(policy, env, limit, seed))
    return lengths


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


def _agent_lengths(agent, seeds: list[int], max_steps: int) -> list[int]:
    """`episode_lengths` of a loaded agent, in its own evaluation environment."""
    env = agent.make_env()
    try:
        return episode_lengths(agent.policy, env, seeds, max_steps)
    finally:
        env.close()


def _worker(path: str, seeds: list[int], max_steps: int, conn: Connection) -> None:
    """An evaluation worker process: one torch thread (the processes share the cores), Ctrl+C
    left to the main process; sends back the lengths of `seeds`, or the error that stopped it
    (with its traceback as a note, for the main process to show)."""
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        conn.send(("lengths", _agent_lengths(load_agent(path), seeds, max_steps)))
    except Exception as error:
        error.add_note(f"In evaluation worker {os.getpid()}:\n{traceback.format_exc()}")
        try:
            conn.send(("error", error))
        except Exception:  # (an error that does not pickle)
            conn.send(("error", RuntimeError(traceback.format_exc())))


def _shared_lengths(
    agent: Agent, path: str, shares: list[list[int]], max_steps: int
) -> list[list[int]]:
    """The lengths of each share of seeds: this process plays the first, one worker process
    each of the others. A worker that ends without answering (killed, out of memory) raises
    WorkerDiedError once this process has played its share; leaving, for whatever reason, ends
    every worker."""
    context = worker_context()
    workers: list[tuple[BaseProcess, Connection]] = []
    try:
        for share in shares[1:]:
            ours, theirs = context.Pipe(duplex=False)
            args = (path, share, max_steps, theirs)
            process = context.Process(target=_worker, args=args, daemon=True)
            with children_ignore_interrupts():  # (started, and known here, or neither)
                process.start()
                workers.append((process, ours))
            theirs.close()
        with torch_threads(1):  # (one core each, as the workers)
            parts = [_agent_lengths(agent, shares[0], max_steps)]
        for process, conn in workers:
            try:  # (the pipe's end: the worker holds its only other end)
                kind, value = conn.recv()
            except EOFError:
                raise WorkerDiedError(
                    f"An evaluation worker (pid {process.pid}) ended before it sent its "
                    "episodes (killed, or out of memory?); nothing was written: run the "
                    "command again (train: add --resume, which only evaluates)."
                ) from None
            if kind == "error":
                raise value
            parts.append(value)
        return parts
    finally:
        for process, conn in workers:
            process.join(timeout=1)  # (one that has answered is ending)
            if process.is_alive():  # (it keeps SIGTERM blocked: children_ignore_interrupts)
                process.kill()
                process.join()
            conn.close()


def evaluate_checkpoint(
    path: str | Path,
    episodes: int = 100,
    seed: int = TEST_SEED,
    max_steps: int = MAX_STEPS,
    workers: int | None = None,
) -> dict:
    """Play `episodes` deterministic episodes (seeds seed, seed+1, ...) with a checkpoint's agent.

    Rendering is the slow part, so the episodes are shared between `workers` processes, this
    one included (default: one per CPU core, at most 8); the lengths do not depend on how they
    are shared.
    """
    if episodes < 1:
        raise ValueError(f"--episodes must be at least 1, got {episodes}.")
    if not 0 <= seed <= MAX_EPISODE_SEED - episodes:
        raise ValueError(
            f"--seed must be between 0 and {MAX_EPISODE_SEED - episodes:,} for {episodes} "
            f"episodes, got {seed}."
        )
    if workers is not None and workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}.")
    if max_steps < 1:
        raise ValueError(f"--max-steps must be at least 1, got {max_steps}.")
    agent = load_agent(path)  # a bad file says so here, once, not in every worker
    seeds = list(range(seed, seed + episodes))
    workers = min(workers or min(os.cpu_count() or 1, 8), episodes)
    if workers == 1:
        lengths = _agent_lengths(agent, seeds, max_steps)
    else:
        shares = [seeds[i::workers] for i in range(workers)]
        # This process plays the first share while the workers play the rest (forked from the
        # fork server once it has imported torch: helpers.run.fork_server).
        with fork_server():
            parts = _shared_lengths(agent, str(path), shares, max_steps)
        by_seed = {s: n for share, part in zip(shares, parts) for s, n in zip(share, part)}
        lengths = [by_seed[s] for s in seeds]
    return {"checkpoint": str(path), "seed": seed, **episode_stats(lengths)}


def final_evaluation(run_dir: Path, config: Config, progress: bool = True) -> dict:
    """`config.final_episodes` deterministic episodes of the run's agent on the test seeds,
    written to evaluation.json; the same numbers as `python -m helpers evaluate`."""
    if progress:
        print(f"Final evaluation: {config.final_episodes} episodes on seeds {TEST_SEED}+ ...")
    stats = evaluate_checkpoint(
        run_dir / CHECKPOINT_FILE, config.final_episodes, TEST_SEED, config.eval_max_steps
    )
    (run_dir / EVALUATION_FILE).write_text(json.dumps(stats, indent=1))
    if progress:
        print(
            f"Final evaluation: mean {stats['mean']:.1f} steps (std {stats['std']:.1f}, "
            f"min {stats['min']}, max {stats['max']}) over {stats['episodes']} episodes"
        )
    return stats
