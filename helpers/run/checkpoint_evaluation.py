"""No notebook (run tooling). The final evaluation and `python -m helpers evaluate`: a
checkpoint's agent plays its test episodes, shared between this process and worker processes
forked from the fork server (helpers.run.fork_server), each playing its share side by side
(helpers.evaluation.batched_episode_lengths).
"""

from __future__ import annotations

import json
import os
import signal
import traceback
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path

import torch

from helpers.agents import Agent, load_agent
from helpers.config import MAX_STEPS, TEST_SEED, Config
from helpers.evaluation import batched_episode_lengths, episode_stats, side_by_side
from helpers.machine import torch_threads
from helpers.run.checkpoints import CHECKPOINT_FILE
from helpers.run.folder import EVALUATION_FILE
from helpers.run.fork_server import fork_server, worker_context
from helpers.run.workers import WorkerDiedError, children_ignore_interrupts

MAX_EPISODE_SEED = 2**32 - 1  # numpy's seeds, which gymnasium's environments take


def _agent_lengths(agent, seeds: list[int], max_steps: int) -> list[int]:
    """`episode_lengths` of a loaded agent, played side by side (`batched_episode_lengths`)
    in its own evaluation environments."""
    groups = side_by_side(seeds)
    envs = agent.make_env(num_workers=len(groups[0]))
    try:
        return [
            n
            for group in groups
            for n in batched_episode_lengths(agent.policy, envs, group, max_steps)
        ]
    finally:
        envs.close()


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
