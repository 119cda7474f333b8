"""Notebook 04. The parts of the training loop that `train`, `bench` and notebook 04 share: the collector
that plays, the optimiser and gradient step that learn (loss, backward, clip, Adam step, soft
target update), and the loop's body that puts them together for each collected batch."""

from __future__ import annotations

import functools
import gc
import traceback
from collections.abc import Callable

import torch
from torchrl.collectors import Collector
from torchrl.envs import ExplorationType

from helpers.config import Config
from helpers.envs import make_env
from helpers.run.fork_server import collector_start_method
from helpers.run.workers import children_ignore_interrupts
from helpers.sabotage import sabotage_sample


def learner_threads() -> int:
    """Threads of the gradient steps on a CPU: of torch's threads (one per core, or
    $OMP_NUM_THREADS), one core each is left to the collector's process and the evaluator's.

    On 2 cores one thread learns faster than two (226 against 204 frames/s,
    docs/speed-and-memory.md): two would contend with the collector for the cores.
    """
    return max(1, torch.get_num_threads() - 2)


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


def loop_body(
    data,
    store: Callable,
    sample: Callable,
    update: Callable,
    egreedy,
    collector,
    n_optim: int,
    learning: bool,
) -> list:
    """One turn of the training loop, once the collector has yielded the batch `data`.

    Store the batch (`store(data)`); once `learning` (the memory holds `init_random_frames`),
    take `n_optim` updates, each on a sample drawn just before it (`update(sample())`: a
    gradient step); explore a little less (`egreedy.step` by the batch's frames); give the
    collector the new weights. Returns what each update returned, in order (none before
    learning). Notebook 04's exercise 7 writes it; `train` takes yours in its place.
    """
    store(data)
    results = [update(sample()) for _ in range(n_optim)] if learning else []
    egreedy.step(data.numel())
    collector.update_policy_weights_()
    return results


def make_update(
    loss_module, optim, target_updater, config: Config, device, step: Callable = gradient_step
) -> Callable:
    """The `update(sample)` of `loop_body`: the sample moved to `device`, then one gradient
    step (`step`: the course's `gradient_step`, or yours from notebook 04)."""

    def update(sample) -> tuple[float, float]:
        sample = sample.to(device, non_blocking=True)
        if config.sabotage:  # notebook 07's planted faults (helpers.sabotage); none by default
            sample = sabotage_sample(sample, config.sabotage)
        return step(loss_module, optim, target_updater, sample, config.max_grad_norm)

    return update


def make_collector(
    config: Config, policy, obs_norm: dict, total_frames: int, device: torch.device
) -> Collector:
    """The course's data collector: `config.num_collectors` asynchronous collector processes,
    each stepping `config.num_workers` environments with the exploring `policy`, for
    `total_frames` rounded up to whole batches (what the collector collects anyway).

    Its processes come from the course's fork server (helpers.run.fork_server) and ignore
    Ctrl+C and SIGTERM (`children_ignore_interrupts`): the main process decides when to stop
    and shuts them down.
    """
    batches = -(-total_frames // config.frames_per_batch)  # whole batches, rounded up
    try:
        with collector_start_method(), children_ignore_interrupts():
            return plain_collector(
                config, policy, obs_norm, batches * config.frames_per_batch, device
            )
    except Exception as err:
        # The half-built collector is referenced by the traceback's frames. Left alone, torchrl
        # cleans it up when the interpreter exits, and that cleanup waits forever for a thread
        # that can no longer start: free it now, while it can still clean up.
        traceback.clear_frames(err.__traceback__)
        err.__traceback__ = None
        gc.collect()
        raise RuntimeError(
            f"The collector's process failed to start ({err}). If a script called train(), "
            'put that call under `if __name__ == "__main__":` (worker processes import the '
            "script); otherwise the worker's error is printed above."
        ) from None


def plain_collector(config: Config, policy, obs_norm: dict, total_frames: int, device) -> Collector:
    """The Collector call of `make_collector` (which adds the signal and error handling)."""
    return Collector(
        functools.partial(
            make_env,
            parallel=config.parallel_envs,
            obs_norm=obs_norm,
            num_workers=config.num_workers,
            pipeline=config.pipeline,
            reward_scale=config.reward_scale,
        ),
        policy,
        num_collectors=config.num_collectors,
        sync=False,
        frames_per_batch=config.frames_per_batch,
        total_frames=total_frames,
        exploration_type=ExplorationType.RANDOM,
        device=device,
        storing_device="cpu",
        # The threads this process learns with, as `train` set them (by default the collector
        # would leave it one per core it does not give a worker).
        num_threads=torch.get_num_threads() if config.pipeline == "uint8" else None,
    )
