"""No notebook. The run-keeping around `train`'s loop (helpers.training): the log, the progress
shown, the checkpoints, and what a run leaves in its folder when it stops, however it stops."""

from __future__ import annotations

import time

import matplotlib.pyplot as plt
from tqdm.auto import tqdm

from helpers.config import Config
from helpers.plots import LiveCurve, in_notebook, plot_training, progress_postfix
from helpers.run.checkpoints import CHECKPOINT_FILE, counters_after, save_checkpoint, training_state
from helpers.run.folder import CURVES_FILE, LOG_FILE, REPLAY_DIR, RunFolder
from helpers.run.logs import CsvLog
from helpers.run.replay_files import remove_replay


class RunKeeping:
    """One run's records in its locked `folder`, kept in step with the training.

    The loop hands it each batch's log row (`write`), the kept agent after each batch
    (`after_batch`: a checkpoint every `eval_every` frames and when an evaluation comes back,
    the progress bar, the live curve), and the end (`stopped`, then `finish`: the last
    checkpoint, the replay memory's files removed unless the run can resume, the curves).
    `counters` and `best` are the run's, as the last checkpoint must save them.
    """

    def __init__(
        self,
        folder: RunFolder,
        run: dict,
        state: dict | None,
        config: Config,
        learner: dict,  # loss_module, optim, obs_norm, egreedy: what a checkpoint saves
        replay,  # the run's replay memory (FrameReplay or NaiveReplay), whose state it saves too
        counters: dict,
        best: dict,
        live_plot: bool | None,
        progress: bool,
    ) -> None:
        self.folder, self.run, self.config, self.learner = folder, run, config, learner
        self.replay = replay
        self.counters, self.best = counters, best
        self.first_batches = state["batches"] if state is not None else 0
        # A resumed run's log goes on from its checkpoint: rows written after it are dropped.
        self.log = CsvLog(folder.path / LOG_FILE, keep=counters["batches"] if state else 0)
        self.live = LiveCurve() if (in_notebook() if live_plot is None else live_plot) else None
        self.start = time.monotonic() - (self.log.rows[-1]["seconds"] if self.log.rows else 0.0)
        self.bar = tqdm(
            total=config.total_frames,
            initial=counters["frames"],
            unit="frame",
            disable=not progress,
        )

    def write(self, row: dict, epsilon: float) -> None:
        """Log a batch's row, with the epsilon and the seconds the run has taken so far."""
        row["epsilon"] = epsilon
        row["seconds"] = round(time.monotonic() - self.start, 2)
        self.log.write(row)
        self.counters = counters_after(row)

    def after_batch(self, best: dict, frames: int, save: bool, evaluated: bool) -> None:
        """The batch of `frames` frames is done and `best` is the kept agent: save a checkpoint
        (`save`), show the progress, redraw the curve when an evaluation came back."""
        self.best = best
        if save:
            self.checkpoint(finished=False)  # what a run killed outright keeps
        self.bar.update(frames)
        self.bar.set_postfix(progress_postfix(self.log.rows), refresh=False)
        if self.live is not None and evaluated:
            self.live.update(self.log.rows)

    def checkpoint(self, finished: bool) -> None:
        """Save everything `--resume` needs (helpers.run.checkpoints), the replay memory too
        unless the run is `finished`; the run an --overwrite replaced then becomes previous/."""
        learner = self.learner
        save_checkpoint(
            self.folder.path / CHECKPOINT_FILE,
            **training_state(
                run=self.run,
                counters=self.counters,
                loss_module=learner["loss_module"],
                optim=learner["optim"],
                obs_norm=learner["obs_norm"],
                epsilon=float(learner["egreedy"].eps),
                best=self.best,
                finished=finished,
                replay=None if finished else self.replay.state_dict(),
            ),
        )
        self.folder.keep()

    def stopped(self, best: dict, interrupted: bool) -> None:
        """The loop has stopped: the counters as the log has them (what the checkpoint must
        agree with, whenever it stopped), the kept agent as the evaluations left it."""
        self.best = best
        # A worker's death interrupts the main thread anywhere, a full disk fails a row's
        # write: the last checkpoint must count no row that the log's file lacks.
        self.log.settle()
        if self.log.rows:
            self.counters = counters_after(self.log.rows[-1])
        if interrupted:
            print(f"Interrupted after {self.counters['frames']} frames: saving what ran so far.")
        self.bar.close()

    def finish(self, finished: bool) -> None:
        """The last checkpoint (none for a start that failed before its first batch), the
        replay memory's files removed unless the run can resume from them, the curves drawn;
        why a finished run stopped short of its frames, if it did."""
        path, frames, config = self.folder.path, self.counters["frames"], self.config
        if finished and frames < config.total_frames:  # (a perfect evaluation stopped it)
            more = f" and {config.confirm_episodes} more" if config.confirm_episodes else ""
            print(
                f"Stopped after {frames:,} of {config.total_frames:,} frames: the agent at "
                f"{self.best['frames']:,} frames played all {config.eval_episodes} evaluation "
                f"episodes{more} to {config.eval_max_steps} steps, and no later agent could "
                "replace it."
            )
        if self.counters["batches"] > self.first_batches:
            self.checkpoint(finished)
        if finished or self.replay.state_dict() is None:
            remove_replay(path / REPLAY_DIR)  # kept only for a run to resume
        if self.log.rows:
            title = f"{self.run['target']} ({self.run['mode']} mode)"
            plt.close(plot_training(self.log.rows, title, path / CURVES_FILE))


def batch_row(data, counters: dict) -> dict:
    """A log row's facts about a collected batch: its counters, and the greedy Q-value of its
    states, computed by the collecting policy (free, where a replay sample would cost a
    forward pass), and the length of the training episodes it ended."""
    ended = data["next", "done"].squeeze(-1)
    row = {
        "batch": counters["batches"],
        "frames": counters["frames"] + data.numel(),
        "trajectories": counters["trajectories"] + int(ended.sum()),
        "value": float(data["chosen_action_value"].mean()),
    }
    if ended.any() and ("next", "step_count") in data.keys(True):
        row["train_episode_length"] = float(data["next", "step_count"][ended].float().mean())
    return row
