"""Notebooks 04 and 05. The training loop shared by notebooks 04 and 05 and `python -m helpers train`."""

from __future__ import annotations

import json
import math
import multiprocessing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil
import torch
from torchrl.modules import QValueActor

from helpers.config import Config, config_for_mode, get_mode
from helpers.envs import make_env
from helpers.evaluation import final_evaluation
from helpers.learner_functions import check_yours, trained_with, use_your_target
from helpers.loop import (
    gradient_step,
    learner_threads,
    loop_body,
    make_collector,
    make_optimizer,
    make_update,
)
from helpers.losses import check_target, make_loss
from helpers.machine import get_device, torch_threads
from helpers.models import make_model
from helpers.normalization import compute_norm_constants
from helpers.replay import check_free_space, check_replay_settings, open_replay
from helpers.run.checkpoints import (
    CHECKPOINT_FILE,
    flat_params,
    load_params_into,
    restore_training,
)
from helpers.run.evaluator import Evaluations, Evaluator, is_perfect
from helpers.run.folder import (
    EVALUATION_FILE,
    LOG_FILE,
    REPLAY_DIR,
    RunFolder,
    check_run_arguments,
)
from helpers.run.fork_server import fork_server, fork_servers
from helpers.run.keeping import RunKeeping, batch_row
from helpers.run.logs import read_log
from helpers.run.workers import (
    StopOnInterrupt,
    WorkerGone,
    stop_workers,
    worker_processes,
)
from helpers.sabotage import sabotage_batch


@dataclass
class TrainResult:
    """What a training run leaves behind (all files are in `run_dir`)."""

    run_dir: Path
    rows: list[dict]
    frames: int
    interrupted: bool
    actor: QValueActor  # the trained greedy policy (the best-evaluated parameters)
    final_eval: dict | None = None  # the final evaluation's statistics (None if interrupted)

    @property
    def log_path(self) -> Path:
        return self.run_dir / LOG_FILE

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT_FILE


def train(
    target: str,
    run_dir: str | Path,
    *,
    mode: str | None = None,
    config: Config | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    obs_norm: dict | None = None,
    resume: bool = False,
    overwrite: bool = False,
    live_plot: bool | None = None,
    progress: bool = True,
    yours: dict[str, Callable] | None = None,
) -> TrainResult:
    """Train a pixel DQN with TD(0) or TD(lambda) targets; write log, curves and checkpoint to `run_dir`.

    Args:
        target: "td0" (one-step targets on stored transitions) or "td-lambda" (lambda-returns on
            stored trajectory chunks).
        run_dir: folder of this run: run.json, log.csv (a row per batch), curves.png, checkpoint.pt.
        mode: course mode whose hyperparameters to use (default: $DQN_COURSE_MODE).
        config: hyperparameters, overriding those of the mode.
        seed: seed of torch, the collectors' and the evaluation environments.
        device: where the network trains (default: CUDA, MPS, then CPU).
        obs_norm: normalization constants (computed when missing).
        resume: continue the run saved in `run_dir` up to `config.total_frames` (with its
            replay memory, and so its `buffer_size`).
        overwrite: replace a run already in `run_dir` (otherwise that is an error).
        live_plot: redraw a learning curve during training (default: inside a notebook).
        progress: show a progress bar.
        yours: your own functions to train with, in place of the course's (notebooks 04 and
            05): {"td0_target": ..., "gradient_step": ..., "loop_body": ...,
            "lambda_returns": ...}, each checked by its exercise's check before the run starts
            (helpers.learner_functions).

    Interrupting (Ctrl+C, the notebook's stop button, SIGTERM) ends the run cleanly after the
    current batch: the log kept, a checkpoint saved, the collectors' processes stopped. The
    checkpoint is also saved every `eval_every` frames and when an evaluation (played beside the
    training, see helpers.run.evaluator) comes back, so a run killed outright keeps its last one.
    One run at a time uses a folder (a lock); see `helpers.run.folder.RunFolder`.

    A run ends before `total_frames` once an agent has played every evaluation episode to
    `eval_max_steps`: that agent is the one the run keeps, whatever more training would do.
    """
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise RuntimeError(  # a spawned worker importing a script that calls train() at top level
            "train() was called while a worker process was starting: put the script's call "
            'under `if __name__ == "__main__":`.'
        )
    check_target(target)
    mode = get_mode(mode)
    config = config or config_for_mode(mode)
    check_run_arguments(config, seed)
    check_replay_settings(config, target)
    device = get_device(device)
    if not str(run_dir).strip():
        raise ValueError("The run folder (--out) is empty: name the folder to write the run in.")
    run_dir = Path(run_dir)
    yours = yours or {}
    names = check_yours(yours, target, config)  # (before anything is written)
    # As run.json stores it (JSON types), so that the folder's run and this one compare equal.
    run = dict(target=target, mode=mode, seed=seed, config=config.to_dict(), yours=names)
    run = json.loads(json.dumps(run))
    print(trained_with(names, target))
    with RunFolder(run_dir) as folder, fork_server():  # (the run's workers, then it ends)
        if not resume:  # (before anything is written or set aside)
            check_free_space(config, target, run_dir)
        state = folder.start(run, resume, overwrite)
        return _train(folder, run, state, config, device, obs_norm, live_plot, progress, yours)


def _train(
    folder: RunFolder,
    run: dict,
    state: dict | None,
    config: Config,
    device: torch.device,
    obs_norm: dict | None,
    live_plot: bool | None,
    progress: bool,
    yours: dict[str, Callable],
) -> TrainResult:
    """The loop of `train`, in a folder that `train` has locked and prepared."""
    run_dir, target, seed = folder.path, run["target"], run["seed"]
    torch.manual_seed(seed)
    if state is not None:
        obs_norm = state["obs_norm"]
    elif obs_norm is None:
        obs_norm = compute_norm_constants(config.norm_init_iter, seed=seed)

    env = make_env(obs_norm=obs_norm, device=device, pipeline=config.pipeline)
    model = make_model(env, config, device)  # (the environment gives the network its shapes)
    env.close()
    loss_module, target_updater = make_loss(model.actor, config, target)
    your_target = yours.get("td0_target" if target == "td0" else "lambda_returns")
    if your_target is not None:
        use_your_target(loss_module, target, config, your_target)
    optim = make_optimizer(loss_module, config, device)
    counters = {"frames": 0, "batches": 0, "trajectories": 0}
    best = {"eval": -math.inf, "frames": 0, "params": None}
    saved_replay = None
    if state is not None:
        counters, best, saved_replay = restore_training(
            state, model.actor, loss_module, optim, model.egreedy, str(run_dir)
        )
    remaining = config.total_frames - counters["frames"]
    perfect = is_perfect(best, config.eval_max_steps)  # (the loop stops there: see its end)
    if remaining < config.frames_per_batch or (perfect and not state["interrupted"]):
        if not state["interrupted"] and not (run_dir / EVALUATION_FILE).exists():
            # stopped during its final evaluation: do that, and only that
            if best["params"] is not None:
                load_params_into(model.actor, best["params"], str(run_dir))
            final_eval = final_evaluation(run_dir, config, progress)
            rows = read_log(run_dir / LOG_FILE)
            return TrainResult(run_dir, rows, counters["frames"], False, model.actor, final_eval)
        raise ValueError(
            f"{run_dir} is finished: its agent played every evaluation episode to "
            f"{config.eval_max_steps} steps, so training further cannot change it."
            if remaining >= config.frames_per_batch
            else f"{run_dir} already holds {counters['frames']} of {config.total_frames} "
            "frames; raise total_frames (--frames) to train further."
        )
    if state is not None:
        folder.resuming(run)

    replay = open_replay(config, target, run_dir / REPLAY_DIR, obs_norm, saved_replay)
    learner = dict(loss_module=loss_module, optim=optim, obs_norm=obs_norm, egreedy=model.egreedy)
    keeping = RunKeeping(
        folder, run, state, config, learner, replay, counters, best, live_plot, progress
    )
    workers_before = {p.pid for p in worker_processes()}
    finished = False
    collector = evaluator = None
    workers: list[psutil.Process] = []  # the run's own worker processes, once started
    stored = config.init_random_frames if len(replay) else 0  # (a resumed run's memory)
    with torch_threads(learner_threads()), StopOnInterrupt() as stop:
        try:
            collector = make_collector(config, model.policy_explore, obs_norm, remaining, device)
            evaluator = Evaluator(config, obs_norm)
            evaluations = Evaluations(keeping.log, evaluator, best, config.eval_max_steps)
            workers = [p for p in worker_processes() if p.pid not in workers_before]
            servers = fork_servers()  # (first: its end ends or orphans the workers)
            names = {evaluator.process.pid: "The evaluation"}
            stop.watch(servers + workers, names | {p.pid: "The fork server" for p in servers})
            collector.set_seed(seed)
            body = yours.get("loop_body", loop_body)
            step = yours.get("gradient_step", gradient_step)
            update = make_update(loss_module, optim, target_updater, config, device, step)
            for data in collector:
                # The algorithm: store, learn, explore less, hand the weights over (loop_body).
                with stop.deferred():  # a second interrupt waits for the batch's updates
                    row = batch_row(data, keeping.counters)
                    stored += data.numel()
                    if config.sabotage:  # notebook 07's planted faults; none by default
                        data = sabotage_batch(data, config.sabotage)
                    results = body(
                        data,
                        replay.extend,
                        replay.sample,
                        update,
                        model.egreedy,
                        collector,
                        config.n_optim,
                        stored >= config.init_random_frames,
                    )
                    if results:
                        row["loss"], row["grad_norm"] = results[-1]
                    keeping.write(row, epsilon=float(model.egreedy.eps))
                # Evaluate a snapshot every eval_every frames, beside the training; keep the best.
                frames, last = row["frames"], row["frames"] >= config.total_frames
                due = frames // config.eval_every > (frames - data.numel()) // config.eval_every
                if row["batch"] == 0 or due or last:
                    evaluations.add(frames, flat_params(loss_module.value_network_params))
                if last:
                    evaluator.training_ended()
                with stop.deferred():
                    arrived = evaluations.collect(wait=last, stop=lambda: stop.requested)
                    # The run-keeping: a checkpoint, the progress shown.
                    keeping.after_batch(
                        evaluations.best, data.numel(), (due or arrived) and not last, arrived
                    )
                # An agent that played every evaluation episode to the step limit is the one
                # the run keeps, whatever follows: no later snapshot is evaluated, so stop here.
                if stop.requested or evaluations.perfect:
                    break
            finished = not stop.requested
        except KeyboardInterrupt:
            stop.requested = True
        except WorkerGone as gone:
            raise gone.error from None
        except (RuntimeError, ChildProcessError):  # (torchrl's, the evaluator's own)
            died = stop.dead_worker(wait=stop.POLL)
            if died is None:
                raise
            raise died from None
        finally:
            stop.shield()
            try:
                if evaluator is not None:  # (an evaluation still running is dropped)
                    evaluator.close()
                keeping.stopped(evaluations.best if evaluator is not None else best, stop.requested)
            finally:  # the workers stop whatever failed above: a process left would hang exit
                if collector is not None and not stop.worker_died:
                    collector.shutdown()  # (which would wait forever for a dead worker)
                timeout = 0 if stop.worker_died else 10
                stop_workers(keep=workers_before, timeout=timeout, also=workers)
            keeping.finish(finished)
    best, counters = keeping.best, keeping.counters
    if best["params"] is not None:
        load_params_into(model.actor, best["params"], str(run_dir))
    final_eval = None
    if finished and config.final_episodes > 0:
        final_eval = final_evaluation(run_dir, config, progress)
    return TrainResult(
        run_dir, keeping.log.rows, counters["frames"], not finished, model.actor, final_eval
    )
