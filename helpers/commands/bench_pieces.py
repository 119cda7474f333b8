"""No notebook (run tooling). The parts of `python -m helpers bench` that time one piece of the
loop alone: environment steps, replay bytes per step, gradient steps and drawing samples."""

from __future__ import annotations

import contextlib
import copy
import statistics
import tempfile
import time
from collections.abc import Iterator

import torch
from tensordict import TensorDict
from torchrl.envs.utils import RandomPolicy

from helpers.config import Config, config_for_mode
from helpers.envs import make_base_env, make_env
from helpers.frame_replay import FrameReplay
from helpers.learner_functions import use_your_target
from helpers.loop import gradient_step, learner_threads, make_optimizer
from helpers.losses import make_loss
from helpers.machine import torch_threads
from helpers.models import make_model
from helpers.normalization import make_normalizer
from helpers.replay import scratch_dir

FULL_BUFFER = config_for_mode("full").buffer_size  # bytes_per_frame sizes full mode's memory


def steps_per_second(env, steps: int, repeats: int) -> float:
    """Median random-action steps/s over `repeats` rollouts of `steps` steps (after a warm-up).

    The actions come from a policy, as in a collector, not from `env.rand_action` (which a
    TransformedEnv routes through its transforms: a cost the training loop never pays).
    """
    policy = RandomPolicy(env.action_spec)
    env.rollout(10, policy, break_when_any_done=False)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        env.rollout(steps, policy, break_when_any_done=False)
        rates.append(steps / (time.perf_counter() - start))
    return statistics.median(rates)


def env_rates(obs_norm: dict, steps: int = 300, repeats: int = 3) -> dict:
    """Raw pixel env vs the transformed env, uint8 (the course's) and float32 (the tutorial's)
    pipelines; random actions, one torch thread, as in a collector's process (torchrl gives
    each one thread)."""
    envs = {
        "raw": make_base_env(),
        "uint8": make_env(obs_norm=obs_norm),
        "float32": make_env(obs_norm=obs_norm, pipeline="float32"),
    }
    try:
        with torch_threads(1):
            rates = {name: steps_per_second(env, steps, repeats) for name, env in envs.items()}
    finally:
        for env in envs.values():
            env.close()
    return {
        "raw_steps_per_s": rates["raw"],
        "transformed_steps_per_s": rates["uint8"],
        "ratio": rates["uint8"] / rates["raw"],
        "float32_steps_per_s": rates["float32"],
        "float32_ratio": rates["float32"] / rates["raw"],
    }


def numbered_rollout(env, steps: int, policy=None):
    """`steps` steps of `env` (random actions without `policy`), episodes numbered as a
    collector's trajectory ids would be, ready for `FrameReplay.extend`."""
    rollout = env.rollout(steps, policy, break_when_any_done=False)
    done = rollout["next", "done"].squeeze(-1).long()
    rollout["collector", "traj_ids"] = torch.cumsum(done, 0) - done
    return rollout


def bytes_per_frame(obs_norm: dict, capacity: int = 1_000, steps: int = 1_500) -> dict:
    """Replay storage per stored step: the tutorial's (every key of a collected step, float32
    stacks) against the course's compact memory, filled by random play until it wraps."""
    env = make_env(obs_norm=obs_norm, pipeline="float32", seed=0)
    model = make_model(env, config_for_mode("smoke"))
    batch = env.rollout(8, model.policy_explore, break_when_any_done=False)
    env.close()
    tutorial_keys = batch.exclude("step_count", ("next", "step_count"))  # it had no counter
    naive = sum(v[0].numel() * v.element_size() for v in tutorial_keys.values(True, True))
    env = make_env(obs_norm=obs_norm, seed=0)
    with tempfile.TemporaryDirectory(prefix="dqn-bench-") as tmp, scratch_dir(tmp) as scratch:
        replay = FrameReplay(capacity, 32, make_normalizer(obs_norm), scratch)
        rollout = numbered_rollout(env, steps)
        for row in rollout.split(100):  # batches of 100 steps, episodes crossing them
            replay.extend(row)
        per_slot, per_step = replay.nbytes() / capacity, replay.bytes_per_step()
        episode = replay.steps_written / (replay.written - replay.steps_written)
    env.close()
    return {
        "naive_bytes_per_frame": naive,
        "compact_bytes_per_slot": per_slot,
        "compact_bytes_per_frame": per_step,
        "random_episode_length": episode,
        "full_buffer_compact_mb": FULL_BUFFER * per_slot / 1e6,
        "full_buffer_naive_mb": FULL_BUFFER * naive / 1e6,
    }


def optimisation_rate(obs_norm: dict, config: Config, steps: int = 10) -> float:
    """Median samples/s of gradient steps alone (loss, backward, clip, Adam, target update)."""
    env = make_env(obs_norm=obs_norm)
    model = make_model(env, config)
    env.close()
    loss_module, updater = make_loss(model.actor, config, "td0")
    optim = make_optimizer(loss_module, config, torch.device("cpu"))
    n = config.batch_size
    flags = torch.zeros(n, 1, dtype=torch.bool)
    batch = TensorDict(
        {
            "pixels": torch.randn(n, 4, 64, 64),
            "action": torch.nn.functional.one_hot(torch.randint(2, (n,)), 2),
            "next": {
                "pixels": torch.randn(n, 4, 64, 64),
                "reward": torch.ones(n, 1),
                "done": flags,
                "terminated": flags,
            },
        },
        [n],
    )

    def step() -> None:
        gradient_step(loss_module, optim, updater, batch.clone(), config.max_grad_norm)

    for _ in range(3):
        step()
    rates = []
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        rates.append(steps * n / (time.perf_counter() - start))
    return statistics.median(rates)


def learner_times(obs_norm: dict, config: Config, steps: int = 20) -> dict:
    """Where a TD(lambda) gradient step's time goes, with the learner's threads: drawing and
    normalizing a sample of chunks from a compact memory of random play, then the step itself
    (loss, backward, clip, Adam, target update). Milliseconds, medians of 3 rounds."""
    model, rollout = _random_play(obs_norm, config)
    step = _step_function(model.actor, config, "td-lambda", {})
    with (
        torch_threads(learner_threads()),
        _filled_memory(obs_norm, config, rollout, "td-lambda") as replay,
    ):
        samples = [replay.sample() for _ in range(steps)]
        return {
            "sample_ms": _median_ms(lambda: [replay.sample() for _ in range(steps)]) / steps,
            "step_ms": _median_ms(lambda: [step(s.clone()) for s in samples]) / steps,
            "threads": torch.get_num_threads(),
        }


def _median_ms(work, repeats: int = 3) -> float:
    """Median wall milliseconds of `work()` over `repeats` calls, after one to warm up."""
    work()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(1_000 * (time.perf_counter() - start))
    return statistics.median(times)


def your_step_times(obs_norm: dict, config: Config, yours: dict, rounds: int = 5) -> dict:
    """A gradient step's milliseconds with the notebooks' own functions against the course's,
    for each target in `yours` (target -> {role: function}), on the same samples of random
    play and on the learner's threads. The two take turns, round after round, so that whatever
    else the machine does weighs on both alike; medians over `rounds`. The function behind each
    role (`helpers.learner_functions.ROLES`) is used as `train` uses it."""
    model, rollout = _random_play(obs_norm, config)
    result = {}
    for target, functions in yours.items():
        steps = {
            "course": _step_function(model.actor, config, target, {}),
            "yours": _step_function(model.actor, config, target, functions),
        }
        with (
            torch_threads(learner_threads()),
            _filled_memory(obs_norm, config, rollout, target) as replay,
        ):
            samples = [replay.sample() for _ in range(10)]
            times = {name: [] for name in steps}
            for _ in range(rounds):
                for name, step in steps.items():
                    work = lambda step=step, samples=samples: [step(s.clone()) for s in samples]  # noqa: E731
                    times[name].append(_median_ms(work, 1) / len(samples))
        result[target] = {name: statistics.median(t) for name, t in times.items()}
    return result


def _random_play(obs_norm: dict, config: Config) -> tuple:
    """A fresh model of `config` and 1,600 steps it played exploring, numbered as a collector
    numbers its trajectories (what the gradient-step timings draw their samples from)."""
    env = make_env(obs_norm=obs_norm, seed=0)
    model = make_model(env, config)
    rollout = numbered_rollout(env, 1_600, model.policy_explore)
    env.close()
    return model, rollout


@contextlib.contextmanager
def _filled_memory(obs_norm: dict, config: Config, rollout, target: str) -> Iterator[FrameReplay]:
    """A compact memory in a temporary folder, sampling as `target`'s training does, holding
    `rollout` stored in collected rows of two chunks."""
    chunks = None if target == "td0" else config.chunk_length
    with tempfile.TemporaryDirectory(prefix="dqn-bench-") as tmp, scratch_dir(tmp) as scratch:
        replay = FrameReplay(2_000, config.batch_size, make_normalizer(obs_norm), scratch, chunks)
        for row in rollout.split(2 * config.chunk_length):
            replay.extend(row)
        yield replay


def _step_function(actor, config: Config, target: str, yours: dict):
    """One gradient step on a sample, as `train` takes it with `yours` (role -> function) in
    place of the course's target and gradient step, on a copy of `actor`'s network."""
    loss_module, updater = make_loss(copy.deepcopy(actor), config, target)
    your_target = yours.get("td0_target" if target == "td0" else "lambda_returns")
    if your_target is not None:
        use_your_target(loss_module, target, config, your_target)
    optim = make_optimizer(loss_module, config, torch.device("cpu"))
    step = yours.get("gradient_step", gradient_step)
    return lambda sample: step(loss_module, optim, updater, sample, config.max_grad_norm)
