"""The training loop shared by notebooks 04 and 05 and `python -m helpers train`."""

from __future__ import annotations

import functools
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from torchrl.collectors import Collector
from torchrl.envs import ExplorationType
from torchrl.modules import QValueActor
from tqdm.auto import tqdm

from helpers.checkpoints import (
    CHECKPOINT_FILE,
    flat_params,
    load_checkpoint,
    load_params_into,
    save_checkpoint,
)
from helpers.config import Config, config_for_mode, get_device, get_mode
from helpers.envs import compute_norm_constants, make_env
from helpers.evaluation import (
    EVAL_SEED,
    TEST_SEED,
    episode_lengths,
    episode_stats,
    evaluate_checkpoint,
)
from helpers.logs import CsvLog
from helpers.losses import check_target, make_loss
from helpers.models import make_model
from helpers.plots import LiveCurve, in_notebook, plot_training
from helpers.replay import make_replay_buffer, scratch_dir
from helpers.workers import StopOnInterrupt, stop_workers, worker_processes

RUN_FILE, LOG_FILE, CURVES_FILE, EVALUATION_FILE = (
    "run.json",
    "log.csv",
    "curves.png",
    "evaluation.json",
)
RUN_FILES = (RUN_FILE, LOG_FILE, CHECKPOINT_FILE, CURVES_FILE, EVALUATION_FILE)
PREVIOUS_DIR = "previous"  # where overwrite=True moves the run it replaces


@dataclass
class TrainResult:
    """What a training run leaves behind (all files are in `out_dir`)."""

    out_dir: Path
    rows: list[dict]
    frames: int
    interrupted: bool
    actor: QValueActor  # the trained greedy policy (the best-evaluated parameters)
    final_eval: dict | None = None  # the final evaluation's statistics (None if interrupted)

    @property
    def log_path(self) -> Path:
        return self.out_dir / LOG_FILE

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / CHECKPOINT_FILE


def _prepare_out_dir(out_dir: Path, run: dict, resume: bool, overwrite: bool) -> dict | None:
    """Check `out_dir` against this run; return the checkpoint to resume from, if any."""
    run_file = out_dir / RUN_FILE
    if resume:
        state = load_checkpoint(out_dir / CHECKPOINT_FILE)
        saved = (state.get("target"), state.get("mode"), state["config"].get("pipeline", "course"))
        asked = (run["target"], run["mode"], run["config"]["pipeline"])
        if saved != asked:
            raise ValueError(
                f"{out_dir} holds a {saved[0]} run in {saved[1]} mode with the {saved[2]} "
                f"pipeline; cannot resume it as {asked[0]} in {asked[1]} mode with the {asked[2]} "
                "pipeline."
            )
        # The final evaluation belongs to the agent that finished: the resumed run writes its own.
        (out_dir / EVALUATION_FILE).unlink(missing_ok=True)
        return state
    if run_file.exists() and not overwrite:
        old = json.loads(run_file.read_text())
        kind = "a different run" if old != run else "this run already"
        raise FileExistsError(
            f"{out_dir} holds {kind} ({old.get('target')}, {old.get('mode')} mode, seed "
            f"{old.get('seed')}). Nothing was changed. Pass --resume to continue it, --overwrite "
            "to replace it, or choose another --out folder."
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    if run_file.exists():  # overwrite: keep the run being replaced, one level deep
        previous = out_dir / PREVIOUS_DIR
        shutil.rmtree(previous, ignore_errors=True)
        previous.mkdir()
        for name in RUN_FILES:
            if (out_dir / name).exists():
                (out_dir / name).rename(previous / name)
        print(f"The run that was in {out_dir} is now in {previous}.")
    run_file.write_text(json.dumps(run, indent=1))
    return None


def train(
    target: str,
    out_dir: str | Path,
    *,
    mode: str | None = None,
    config: Config | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    obs_norm_state_dict: dict | None = None,
    resume: bool = False,
    overwrite: bool = False,
    live_plot: bool | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train a pixel DQN with TD(0) or TD(lambda) targets; write log, curves and checkpoint to `out_dir`.

    Args:
        target: "td0" (one-step targets on stored transitions) or "td-lambda" (lambda-returns on
            stored trajectory chunks).
        out_dir: folder of this run: run.json, log.csv (a row per batch), curves.png, checkpoint.pt.
        mode: course mode whose hyperparameters to use (default: $DQN_COURSE_MODE).
        config: hyperparameters, overriding those of the mode.
        seed: seed of torch, the collectors' and the evaluation environments.
        device: where the network trains (default: CUDA, MPS, then CPU).
        obs_norm_state_dict: normalization constants (computed when missing).
        resume: continue the run saved in `out_dir` up to `config.total_frames`.
        overwrite: replace a run already in `out_dir` (otherwise that is an error).
        live_plot: redraw a learning curve during training (default: inside a notebook).
        progress: show a progress bar.

    Interrupting (Ctrl+C, the notebook's stop button) ends the run cleanly: the log kept, a
    checkpoint saved, the collectors' processes stopped.
    """
    check_target(target)
    mode = get_mode(mode)
    config = config or config_for_mode(mode)
    if config.total_frames < config.frames_per_batch:
        raise ValueError(
            f"total_frames ({config.total_frames}) is smaller than one batch "
            f"({config.frames_per_batch} frames): ask for at least {config.frames_per_batch}."
        )
    out_dir = Path(out_dir)
    run = {"target": target, "mode": mode, "seed": seed, "config": config.to_dict()}
    state = _prepare_out_dir(out_dir, json.loads(json.dumps(run)), resume, overwrite)
    device = get_device(device)
    torch.manual_seed(seed)
    if state is not None:
        obs_norm_state_dict = state["obs_norm"]
    elif obs_norm_state_dict is None:
        obs_norm_state_dict = compute_norm_constants(config.norm_init_iter, seed=seed)

    eval_env = make_env(
        obs_norm_state_dict=obs_norm_state_dict,
        device=device,
        seed=seed + 10_000,
        pipeline=config.pipeline,
    )
    model = make_model(eval_env, config, device)
    loss_module, target_updater = make_loss(model.actor, config, target)
    optim = make_optimizer(loss_module, config, device)
    frames = batch = trajectories = 0
    best = {"eval": -math.inf, "frames": 0, "params": None}
    if state is not None:
        load_params_into(model.actor, state["params"], str(out_dir))
        loss_module.target_value_network_params.flatten_keys(".").update_(
            {k: v.to(device) for k, v in state["target_params"].items()}
        )
        optim.load_state_dict(state["optimizer"])
        model.egreedy.eps.fill_(state["epsilon"])
        frames, batch, trajectories = state["frames"], state["batches"], state["trajectories"]
        if state.get("best_params") is not None:
            best = {"eval": state["best_eval"], "frames": state["best_frames"]}
            best["params"] = {k: v.to(device) for k, v in state["best_params"].items()}
    remaining = config.total_frames - frames
    if remaining < config.frames_per_batch:
        raise ValueError(
            f"{out_dir} already holds {frames} of {config.total_frames} frames; "
            "raise total_frames (--frames) to train further."
        )

    log = CsvLog(out_dir / LOG_FILE, append=state is not None)
    live = LiveCurve() if (in_notebook() if live_plot is None else live_plot) else None
    workers_before = {p.pid for p in worker_processes()}
    start, stored = time.monotonic(), 0
    eval_seeds = list(range(EVAL_SEED, EVAL_SEED + config.eval_episodes))
    collector = None
    bar = tqdm(total=config.total_frames, initial=frames, unit="frame", disable=not progress)
    with scratch_dir(out_dir) as scratch, StopOnInterrupt() as stop:
        replay = make_replay_buffer(config, target, scratch, obs_norm_state_dict)
        try:
            collector = Collector(
                functools.partial(
                    make_env,
                    parallel=config.parallel_envs,
                    obs_norm_state_dict=obs_norm_state_dict,
                    num_workers=config.num_workers,
                    pipeline=config.pipeline,
                ),
                model.policy_explore,
                num_collectors=config.num_collectors,
                sync=False,
                frames_per_batch=config.frames_per_batch,
                total_frames=remaining,
                exploration_type=ExplorationType.RANDOM,
                device=device,
                storing_device="cpu",
                # By default the collector leaves this process one thread per core it does not
                # give a worker: a single thread on 2 cores. The course keeps every core for the
                # gradient steps and lets the OS share them with the workers.
                num_threads=torch.get_num_threads() if config.pipeline == "course" else None,
            )
            collector.set_seed(seed)
            for data in collector:
                new_frames = data.numel()
                frames += new_frames
                finished = data["next", "done"].squeeze(-1)
                trajectories += int(finished.sum())
                replay.extend(data)
                row = {"batch": batch, "frames": frames, "trajectories": trajectories}
                # The greedy Q-value of the states just collected, computed by the collecting
                # policy: free, where a forward pass on a replay sample would cost one.
                row["value"] = float(data["chosen_action_value"].mean())
                if finished.any() and ("next", "step_count") in data.keys(True):
                    row["train_episode_length"] = float(
                        data["next", "step_count"][finished].float().mean()
                    )
                stored += new_frames
                if stored >= config.init_random_frames and len(replay):
                    for _ in range(config.n_optim):
                        sample = replay.sample().to(device, non_blocking=True)
                        loss, grad_norm = gradient_step(
                            loss_module, optim, target_updater, sample, config.max_grad_norm
                        )
                    row.update(loss=loss, grad_norm=grad_norm)
                model.egreedy.step(new_frames)
                collector.update_policy_weights_()
                row["epsilon"] = float(model.egreedy.eps)
                due = frames // config.eval_every > (frames - new_frames) // config.eval_every
                if batch == 0 or due or frames >= config.total_frames:
                    lengths = episode_lengths(
                        model.actor, eval_env, eval_seeds, config.eval_max_steps
                    )
                    stats = episode_stats(lengths)
                    row.update(eval_mean=stats["mean"], eval_std=stats["std"])
                    if stats["mean"] >= best["eval"]:  # ties go to the later, longer-trained agent
                        best = {"eval": stats["mean"], "frames": frames}
                        best["params"] = flat_params(loss_module.value_network_params)
                row["seconds"] = round(time.monotonic() - start, 2)
                log.write(row)
                batch += 1
                bar.update(new_frames)
                bar.set_postfix(_postfix(log.rows), refresh=False)
                if live is not None and "eval_mean" in row:
                    live.update(log.rows)
                if stop.requested:
                    break
        except KeyboardInterrupt:
            stop.requested = True
        finally:
            interrupted = stop.requested
            if interrupted:
                print(f"Interrupted after {frames} frames: saving what ran so far.")
            bar.close()
            if collector is not None:
                collector.shutdown()
            eval_env.close()
            stop_workers(keep=workers_before)
            save_checkpoint(
                out_dir / CHECKPOINT_FILE,
                target=target,
                mode=mode,
                seed=seed,
                frames=frames,
                batches=batch,
                trajectories=trajectories,
                interrupted=interrupted,
                config=config.to_dict(),
                params=flat_params(loss_module.value_network_params),
                target_params=flat_params(loss_module.target_value_network_params),
                optimizer=optim.state_dict(),
                obs_norm=obs_norm_state_dict,
                epsilon=float(model.egreedy.eps),
                best_params=best["params"],
                best_eval=best["eval"],
                best_frames=best["frames"],
            )
            if log.rows:
                plt.close(plot_training(log.rows, f"{target} ({mode} mode)", out_dir / CURVES_FILE))
    if best["params"] is not None:
        load_params_into(model.actor, best["params"], str(out_dir))
    final_eval = None
    if not interrupted and config.final_episodes > 0:
        final_eval = final_evaluation(out_dir, config, progress)
    return TrainResult(out_dir, log.rows, frames, interrupted, model.actor, final_eval)


def make_optimizer(loss_module: torch.nn.Module, config: Config, device: torch.device):
    """Adam on the loss's trainable parameters; its fused kernel where torch has one.

    The fused and plain paths compute the same update; fused costs one kernel per step rather
    than several per parameter, which matters for a small network.
    """
    try:
        return torch.optim.Adam(
            loss_module.parameters(), lr=config.lr, betas=config.betas, fused=True
        )
    except RuntimeError:  # no fused Adam for this device
        return torch.optim.Adam(loss_module.parameters(), lr=config.lr, betas=config.betas)


def gradient_step(
    loss_module: torch.nn.Module,
    optim: torch.optim.Optimizer,
    target_updater,
    sample,
    max_grad_norm: float,
) -> tuple[float, float]:
    """One DQN update on `sample`: loss, backward, clip, Adam step, soft target update.

    Returns the loss and the gradient norm before clipping.
    """
    loss = loss_module(sample)["loss"]
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(loss_module.parameters(), max_grad_norm)
    optim.step()
    optim.zero_grad(set_to_none=True)
    target_updater.step()
    return loss.item(), grad_norm.item()


def final_evaluation(out_dir: Path, config: Config, progress: bool = True) -> dict:
    """`config.final_episodes` deterministic episodes of the run's agent on the test seeds,
    written to evaluation.json; the same numbers as `python -m helpers evaluate`."""
    if progress:
        print(f"Final evaluation: {config.final_episodes} episodes on seeds {TEST_SEED}+ ...")
    stats = evaluate_checkpoint(
        out_dir / CHECKPOINT_FILE, config.final_episodes, TEST_SEED, config.eval_max_steps
    )
    (out_dir / EVALUATION_FILE).write_text(json.dumps(stats, indent=1))
    if progress:
        print(
            f"Final evaluation: mean {stats['mean']:.1f} steps (std {stats['std']:.1f}, "
            f"min {stats['min']}, max {stats['max']}) over {stats['episodes']} episodes"
        )
    return stats


def _postfix(rows: list[dict]) -> dict:
    """The progress bar's summary: last loss and value, last evaluation."""
    last = rows[-1]
    evals = [r["eval_mean"] for r in rows if not math.isnan(r["eval_mean"])]
    return {
        "loss": f"{last['loss']:.4f}",
        "value": f"{last['value']:.3f}",
        "eval": f"{evals[-1]:.0f}" if evals else "-",
    }
