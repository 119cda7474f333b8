"""No notebook (run tooling). `python -m helpers bench`: measure the course's speed and memory on this machine.

Everything is measured in one run: environment step rates, replay bytes per frame, the
training loop's frames/s for the course's recipe, for the tutorial's hyperparameters on the
course's pipeline and for a tutorial-faithful configuration, gradient steps' samples/s, and
each training run's peak memory (the whole process tree).
"""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import torch
from tensordict import TensorDict
from torchrl.envs.utils import RandomPolicy

from helpers.config import SYSTEM_FIELDS, TUTORIAL, Config, config_for_mode
from helpers.envs import make_base_env, make_env
from helpers.frame_replay import FrameReplay
from helpers.learner_functions import SOLUTION_NAMES
from helpers.loop import gradient_step, learner_threads, make_optimizer
from helpers.losses import make_loss
from helpers.models import make_model
from helpers.normalization import compute_norm_constants, make_normalizer
from helpers.replay import scratch_dir
from helpers.run.folder import LOG_FILE, RUN_FILE, read_json
from helpers.run.logs import read_log

BENCH_FRAMES = 1_024  # frames of each benchmark training run at the tutorial's settings
RECIPE_FRAMES = 4_096  # ... and with the course's recipe, which runs several times faster
# Benchmark runs measure the loop: one short evaluation at each end, no final evaluation.
BENCH_EVAL = dict(eval_every=1_000_000, eval_episodes=1, final_episodes=0)
FULL_BUFFER = config_for_mode("full").buffer_size
# The learner's functions that notebooks 04 and 05 train with, by target (notebook 05 trains
# with your lambda_returns and the course's gradient step and loop body): bench times the
# recipe with the notebooks' solutions of those exercises against the course's own functions.
YOURS = {"td0": ("td0_target", "gradient_step", "loop_body"), "td-lambda": ("lambda_returns",)}


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
    """Raw pixel env vs the transformed env, uint8 (the course's) and float32 (the tutorial's) pipeline; random actions, one
    torch thread, as in a collector's process (torchrl gives each one thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    envs = {
        "raw": make_base_env(),
        "uint8": make_env(obs_norm=obs_norm),
        "float32": make_env(obs_norm=obs_norm, pipeline="float32"),
    }
    try:
        rates = {name: steps_per_second(env, steps, repeats) for name, env in envs.items()}
    finally:
        for env in envs.values():
            env.close()
        torch.set_num_threads(threads)
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
    env = make_env(obs_norm=obs_norm, seed=0)
    model = make_model(env, config)
    rollout = numbered_rollout(env, 1_600, model.policy_explore)
    env.close()
    loss_module, updater = make_loss(model.actor, config, "td-lambda")
    optim = make_optimizer(loss_module, config, torch.device("cpu"))
    threads = torch.get_num_threads()
    torch.set_num_threads(learner_threads())
    try:
        with tempfile.TemporaryDirectory(prefix="dqn-bench-") as tmp, scratch_dir(tmp) as scratch:
            replay = FrameReplay(
                2_000, config.batch_size, make_normalizer(obs_norm), scratch, config.chunk_length
            )
            for row in rollout.split(2 * config.chunk_length):
                replay.extend(row)
            samples = [replay.sample() for _ in range(steps)]

            def step() -> None:
                for s in samples:
                    gradient_step(loss_module, optim, updater, s.clone(), config.max_grad_norm)

            return {
                "sample_ms": _median_ms(lambda: [replay.sample() for _ in range(steps)]) / steps,
                "step_ms": _median_ms(step) / steps,
                "threads": torch.get_num_threads(),
            }
    finally:
        torch.set_num_threads(threads)


def _median_ms(work, repeats: int = 3) -> float:
    """Median wall milliseconds of `work()` over `repeats` calls, after one to warm up."""
    work()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(1_000 * (time.perf_counter() - start))
    return statistics.median(times)


def training_rate(config: Config, target: str, name: str, yours: tuple[str, ...] = ()) -> dict:
    """Train for config.total_frames in a subprocess; frames/s after start-up and peak memory.
    `yours`: the roles (`helpers.learner_functions.ROLES`) to train with the notebooks' own
    solutions of the exercises, as a learner's run of notebook 04 or 05 does."""
    with tempfile.TemporaryDirectory(prefix="dqn-bench-") as tmp:
        out = Path(tmp) / name
        code = (
            "import sys, json; from helpers.config import Config; from helpers.training import train\n"
            "from helpers.learner_functions import notebook_solution\n"
            "if __name__ == '__main__':\n"
            "    c = Config.from_dict(json.loads(sys.argv[1]))\n"
            "    yours = {role: notebook_solution(role) for role in json.loads(sys.argv[3])}\n"
            f"    train({target!r}, sys.argv[2], mode='smoke', config=c, progress=False,\n"
            "          live_plot=False, yours=yours)\n"
        )
        args = [json.dumps(config.to_dict()), str(out), json.dumps(list(yours))]
        proc = subprocess.Popen([sys.executable, "-c", code, *args])
        peak = _peak_memory(proc)
        if proc.returncode:
            raise RuntimeError(f"benchmark run {name} failed with exit code {proc.returncode}")
        rows = read_log(out / LOG_FILE)
        trained_with = read_json(out / RUN_FILE).get("yours", {})
    trained = [r for r in rows if r["loss"] == r["loss"]]  # from the first gradient step on
    first, last = trained[0], trained[-1]
    rate = (last["frames"] - first["frames"]) / (last["seconds"] - first["seconds"])
    return {
        "frames_per_s": rate,
        "peak_memory_mb": peak / 2**20,
        "frames": int(last["frames"]),
        "yours": trained_with,  # what run.json recorded: role -> your function's name
    }


def _peak_memory(proc: subprocess.Popen) -> int:
    """Wait for `proc`, sampling the memory of it and its children; return the peak in bytes.

    PSS (proportional set size) shares each page among the processes that map it, so the
    libraries every worker loads (torch alone is hundreds of MB) count once, not per process.
    """
    peak, root = 0, psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            peak = max(peak, sum(p.memory_full_info().pss for p in tree))
        except psutil.Error:
            pass
        time.sleep(0.5)
    return peak


def run_bench(repeats: int = 1) -> dict:
    """All measurements, with the machine they ran on; training runs repeated `repeats` times
    (medians reported)."""
    obs_norm = compute_norm_constants(200)
    # The tutorial's hyperparameters on both pipelines: only the pipelines differ...
    tutorial = TUTORIAL.replace(total_frames=BENCH_FRAMES, buffer_size=BENCH_FRAMES, **BENCH_EVAL)
    course = tutorial.replace(**{k: getattr(Config(), k) for k in SYSTEM_FIELDS})
    # ...and the course's recipe (full mode), training from its 256th frame.
    recipe = config_for_mode("full").replace(
        total_frames=RECIPE_FRAMES, buffer_size=RECIPE_FRAMES, init_random_frames=256, **BENCH_EVAL
    )
    configs = (("recipe", recipe), ("course", course), ("tutorial", tutorial))
    result = {
        "machine": f"{platform.machine()}, {psutil.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB, torch {torch.__version__}",
        "env": env_rates(obs_norm),
        "replay": bytes_per_frame(obs_norm),
        "optimisation_samples_per_s": optimisation_rate(obs_norm, course),
        "recipe_optimisation_samples_per_s": optimisation_rate(obs_norm, recipe),
        "learner": learner_times(obs_norm, recipe),
        "training": {name: _median_run(config, name, repeats) for name, config in configs},
    }
    # The recipe's TD(lambda) run above is the course's own side of that comparison.
    course_runs = {"td-lambda": result["training"]["recipe"]}
    course_runs["td0"] = _median_run(recipe, "recipe", repeats, "td0")
    result["yours"] = {
        target: {
            "course": course_runs[target],
            "yours": _median_run(recipe, "recipe", repeats, target, YOURS[target]),
        }
        for target in YOURS
    }
    training = result["training"]
    training["speedup"] = training["course"]["frames_per_s"] / training["tutorial"]["frames_per_s"]
    training["recipe_speedup"] = (
        training["recipe"]["frames_per_s"] / training["tutorial"]["frames_per_s"]
    )
    # Each frame is trained on n_optim * batch_size / frames_per_batch times: the loop's bound.
    for name, config, rate in (
        ("course", course, result["optimisation_samples_per_s"]),
        ("recipe", recipe, result["recipe_optimisation_samples_per_s"]),
    ):
        bound = rate / (config.n_optim * config.batch_size / config.frames_per_batch)
        training[name]["fraction_of_optimisation_bound"] = training[name]["frames_per_s"] / bound
    # Where a batch's time goes: the learner's n_optim steps against the loop's measured time.
    learner, frames_per_s = result["learner"], training["recipe"]["frames_per_s"]
    learner["batch_ms"] = recipe.n_optim * (learner["sample_ms"] + learner["step_ms"])
    learner["loop_batch_ms"] = 1_000 * recipe.frames_per_batch / frames_per_s
    return result


def _median_run(
    config: Config, name: str, repeats: int, target: str = "", yours: tuple[str, ...] = ()
) -> dict:
    """The run with the median frames/s of `repeats` training runs (by default the recipe's
    target is TD(lambda), the tutorial's TD(0))."""
    target = target or ("td-lambda" if name == "recipe" else "td0")
    runs = sorted((training_rate(config, target, name, yours) for _ in range(repeats)), key=_rate)
    return {**runs[len(runs) // 2], "runs_frames_per_s": [_rate(r) for r in runs]}


def _rate(run: dict) -> float:
    return run["frames_per_s"]


def format_bench(result: dict) -> str:
    """The measurements as a Markdown table."""
    env, replay, training = result["env"], result["replay"], result["training"]
    learner = result["learner"]
    course, tutorial, recipe = training["course"], training["tutorial"], training["recipe"]
    rows = [
        ("raw env steps/s (1 process)", f"{env['raw_steps_per_s']:.0f}"),
        (
            "transformed env steps/s, uint8 pipeline (the course's)",
            f"{env['transformed_steps_per_s']:.0f} ({env['ratio']:.0%} of raw)",
        ),
        (
            "transformed env steps/s, float32 pipeline (the tutorial's order)",
            f"{env['float32_steps_per_s']:.0f} ({env['float32_ratio']:.0%} of raw)",
        ),
        (
            "replay bytes/step, tutorial (every key, float32)",
            f"{replay['naive_bytes_per_frame']:,}",
        ),
        (
            "replay bytes/step, course (compact)",
            f"{replay['compact_bytes_per_frame']:,.0f} (random play, {replay['random_episode_length']:.1f}-step episodes; "
            f"{replay['compact_bytes_per_slot']:,.0f} per stored frame)",
        ),
        (
            "full mode's 100,000-frame buffer, course / tutorial",
            f"{replay['full_buffer_compact_mb']:,.0f} MB / {replay['full_buffer_naive_mb']:,.0f} MB",
        ),
        (
            "optimisation samples/s, recipe / tutorial's settings",
            f"{result['recipe_optimisation_samples_per_s']:.0f} / {result['optimisation_samples_per_s']:.0f}",
        ),
        (
            "training frames/s, course's recipe",
            f"{recipe['frames_per_s']:.1f} ({recipe['fraction_of_optimisation_bound']:.0%} of its optimisation bound)",
        ),
        (
            "training frames/s, tutorial's settings on the course's pipeline",
            f"{course['frames_per_s']:.1f} ({course['fraction_of_optimisation_bound']:.0%} of the optimisation bound)",
        ),
        ("training frames/s, tutorial-faithful", f"{tutorial['frames_per_s']:.1f}"),
        (
            "recipe: a 32-frame batch in the loop / its gradient steps alone",
            f"{learner['loop_batch_ms']:.0f} ms / {learner['batch_ms']:.0f} ms "
            f"({learner['sample_ms']:.1f} ms sampling + {learner['step_ms']:.1f} ms learning per "
            f"step, {learner['threads']} thread)",
        ),
        (
            "speed-up over tutorial-faithful: course's pipeline / course's recipe",
            f"{training['speedup']:.2f}x / {training['recipe_speedup']:.2f}x",
        ),
        *(
            (
                f"recipe's training frames/s, {target}: with the notebook's own "
                f"{', '.join(SOLUTION_NAMES[role] for role in YOURS[target])} / the course's",
                f"{runs['yours']['frames_per_s']:.1f} / {runs['course']['frames_per_s']:.1f} "
                f"({runs['yours']['frames_per_s'] / runs['course']['frames_per_s']:.0%})",
            )
            for target, runs in result["yours"].items()
        ),
        (
            "peak memory, recipe / course's pipeline / tutorial",
            f"{recipe['peak_memory_mb']:.0f} MB / {course['peak_memory_mb']:.0f} MB / {tutorial['peak_memory_mb']:.0f} MB",
        ),
    ]
    lines = [f"Machine: {result['machine']}", "", "| measure | value |", "|---|---|"]
    return "\n".join(lines + [f"| {k} | {v} |" for k, v in rows])
