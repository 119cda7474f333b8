"""No notebook (run tooling; notebook 05 mentions it). Evaluation beside training: a process of its own plays the greedy episodes of
snapshots of the agent's parameters while training goes on.

Training hands over a snapshot every `eval_every` frames and does not wait for it; the episode
lengths come back a few batches later (`Evaluations` says what happens when the evaluator is
still busy). Each evaluation is the one an evaluation that stopped the training would make:
the same fixed seeds, the same episodes, the same parameters.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import queue
import traceback

import torch
from tensordict import TensorDict

from helpers.config import Config
from helpers.envs import make_env
from helpers.evaluation import episode_stats, evaluation_lengths
from helpers.models import make_model
from helpers.run.checkpoints import not_finite
from helpers.run.fork_server import worker_context
from helpers.run.logs import CsvLog
from helpers.run.workers import children_ignore_interrupts

NICE = 5  # the evaluator yields the CPU to the collector and the learner when they need it


class EvaluatorError(Exception):
    """The evaluation process raised an error (its traceback is the message)."""


class Evaluator:
    """Evaluate parameter snapshots in a worker process, first sent, first returned.

    `submit(frames, params, to_beat)` hands over a snapshot and returns at once; `results()` gives the
    `(frames, lengths)` of the snapshots evaluated since the last call (`wait=True`: of every
    snapshot sent). Use it as a context manager, which stops the process.
    """

    def __init__(self, config: Config, obs_norm: dict) -> None:
        context = worker_context()
        self._tasks, self._done = context.Queue(), context.Queue()
        self._ended = context.Event()  # the training has collected its last frame
        self.pending: list[int] = []  # frames of the snapshots sent and not yet returned
        with children_ignore_interrupts():  # the main process decides when it stops
            self.process = context.Process(
                target=_serve,
                args=(
                    self._tasks,
                    self._done,
                    self._ended,
                    config.to_dict(),
                    obs_norm,
                ),
                name="dqn-evaluator",
                daemon=True,
            )
            self.process.start()

    def submit(
        self, frames: int, params: dict[str, torch.Tensor], to_beat: float = -math.inf
    ) -> None:
        """Evaluate `params` (flat, on the CPU, not changed afterwards), the agent at `frames`;
        the evaluation stops once its mean cannot reach `to_beat`, the best one so far
        (`evaluation_lengths`)."""
        self._tasks.put((frames, params, to_beat))
        self.pending.append(frames)

    def training_ended(self) -> None:
        """No more frames will be collected: a perfect evaluation is no longer confirmed (it
        could only stop a training that has stopped), so the last results come back sooner."""
        self._ended.set()

    def results(self, wait: bool = False, stop=None) -> list[tuple[int, list[int]]]:
        """The snapshots evaluated so far, as (frames, episode lengths); with `wait`, all of
        them, unless `stop()` turns true first (checked every second)."""
        found = []
        while self.pending and not (wait and stop is not None and stop()):
            try:
                item = self._done.get(timeout=1.0) if wait else self._done.get_nowait()
            except queue.Empty:
                if wait and self.process.is_alive():
                    continue
                if wait:
                    raise ChildProcessError(
                        "The evaluation process ended before its results."
                    ) from None
                break
            if isinstance(item, str):
                raise EvaluatorError(f"The evaluation process failed:\n{item}")
            self.pending.remove(item[0])
            found.append(item)
        return found

    def close(self) -> None:
        """Stop the process: at once if snapshots are pending (they are dropped)."""
        if self.process.is_alive() and not self.pending:
            self._tasks.put(None)
            self.process.join(timeout=5)
        if self.process.is_alive():  # (it keeps SIGTERM blocked: see children_ignore_interrupts)
            self.process.kill()
            self.process.join(timeout=5)
        for q in (self._tasks, self._done):
            q.cancel_join_thread()
            q.close()

    def __enter__(self) -> Evaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def is_perfect(best: dict, max_steps: int) -> bool:
    """`best` (a run's kept agent) played every evaluation episode to `max_steps`, the extra
    ones that confirm a perfect evaluation included (`evaluation_lengths`): no later agent can
    beat it, so nothing after it is evaluated and the training stops."""
    return best["eval"] >= max_steps


class Evaluations:
    """A run's evaluations: snapshots handed to the `Evaluator`, their results written into
    their rows of the log when they come back, and the best-evaluated agent.

    The evaluator plays one snapshot at a time. A snapshot that falls due while it is busy
    waits its turn; a newer one takes its place (the older row goes without an evaluation), so
    that evaluations never pile up behind a training that outruns them. `best` is the
    best-evaluated snapshot so far: ties go to the longer-trained, parameters that diverged
    (NaN or inf) are never kept, and once an agent has played every evaluation episode to
    `max_steps`, no later one can beat it: later snapshots are not evaluated. An evaluation
    stops as soon as it can no longer reach `best` (`evaluation_lengths`): the row's
    `eval_played` says how many episodes it played, and its mean is theirs.
    """

    def __init__(self, log: CsvLog, evaluator: Evaluator, best: dict, max_steps: int) -> None:
        self.log, self.evaluator, self.best, self.max_steps = log, evaluator, best, max_steps
        self.snapshots: dict[int, dict] = {}  # frames -> parameters sent or waiting to be
        self.waiting: int | None = None  # frames of the snapshot waiting for the evaluator

    @property
    def perfect(self) -> bool:
        """The kept agent played every evaluation episode to the step limit."""
        return is_perfect(self.best, self.max_steps)

    def add(self, frames: int, snapshot: dict) -> None:
        """Evaluate `snapshot`, the parameters once `frames` frames were collected (the row of
        the log with those frames gets the result)."""
        if self.perfect:
            return
        if self.waiting is not None:  # replaced by a newer snapshot
            del self.snapshots[self.waiting]
        self.snapshots[frames], self.waiting = snapshot, frames
        self._start()

    def collect(self, wait: bool = False, stop=None) -> bool:
        """Take in the evaluations that are back (with `wait`, every snapshot's, unless
        `stop()` turns true first, see `Evaluator.results`); True if any came back."""
        arrived = False
        while True:
            for frames, lengths in self.evaluator.results(wait, stop):
                stats, params = episode_stats(lengths), self.snapshots.pop(frames)
                self.log.update(
                    frames,
                    eval_mean=stats["mean"],
                    eval_std=stats["std"],
                    eval_played=stats["episodes"],
                )
                if stats["mean"] >= self.best["eval"] and not not_finite(params):
                    self.best = {"eval": stats["mean"], "frames": frames, "params": params}
                arrived = True
            if self.waiting is not None and self.perfect:  # nothing can beat it now
                del self.snapshots[self.waiting]
                self.waiting = None
            self._start()
            if not (wait and self.evaluator.pending) or (stop is not None and stop()):
                return arrived

    def _start(self) -> None:
        """Hand the waiting snapshot to the evaluator if it is free."""
        if self.waiting is not None and not self.evaluator.pending:
            to_beat = self.best["eval"]  # (it cannot change before this evaluation is back)
            self.evaluator.submit(self.waiting, self.snapshots[self.waiting], to_beat)
            self.waiting = None


def _serve(tasks, done, ended, config: dict, obs_norm: dict) -> None:
    """The evaluation process: one torch thread, a lower priority, snapshots until None (or
    until the training process is gone: killed outright, it can send nothing)."""
    torch.set_num_threads(1)
    os.nice(NICE)
    try:
        config = Config.from_dict(config)
        # (each episode sets its own seed: see episode_lengths)
        env = make_env(obs_norm=obs_norm, pipeline=config.pipeline)
        actor = make_model(env, config, torch.device("cpu")).actor
        params = TensorDict.from_module(actor)
        while (task := _next_task(tasks)) is not None:
            frames, snapshot, to_beat = task
            # (no finiteness check: a diverged snapshot is evaluated and reported as it plays)
            with torch.no_grad():
                params.update_(TensorDict(snapshot).unflatten_keys("."))
            lengths = evaluation_lengths(actor, env, config, ended.is_set, to_beat)
            done.put((frames, lengths))
        env.close()
    except Exception:
        done.put(traceback.format_exc())
        # Stay until told to stop: the training reads the traceback, where a process that
        # ended would only be reported as having died.
        while _next_task(tasks) is not None:
            pass
    done.close()
    done.join_thread()  # what was put is sent...
    os._exit(0)  # ...and the interpreter's final garbage collection (seconds, with torch) skipped


def _next_task(tasks):
    """The next snapshot to evaluate, or None once told to stop or orphaned."""
    # (the process that started this one, the training's; not the fork server it came from,
    # which outlives the training while its workers live)
    while multiprocessing.parent_process().is_alive():
        try:
            return tasks.get(timeout=1.0)
        except queue.Empty:
            continue
    return None
