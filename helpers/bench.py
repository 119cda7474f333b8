"""`python -m helpers bench`: measure the course's speed and memory on this machine.

Everything is measured in one run: environment step rates, replay bytes per frame, the
training loop's frames/s for the course and for a tutorial-faithful configuration, gradient
steps' samples/s, and each training run's peak memory (the whole process tree).
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

from helpers.config import Config, config_for_mode
from helpers.envs import compute_norm_constants, make_base_env, make_env
from helpers.logs import read_log
from helpers.losses import make_loss
from helpers.models import make_model
from helpers.replay import STORED_KEYS

# The tutorial's own short-run settings (Config's defaults), trained for BENCH_FRAMES frames.
TUTORIAL = Config()
BENCH_FRAMES = 1_024


def steps_per_second(env, steps: int, repeats: int) -> float:
    """Median random-action steps/s over `repeats` rollouts of `steps` steps (after a warm-up)."""
    env.rollout(10, break_when_any_done=False)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        env.rollout(steps, break_when_any_done=False)
        rates.append(steps / (time.perf_counter() - start))
    return statistics.median(rates)


def env_rates(obs_norm: dict, steps: int = 300, repeats: int = 3) -> dict:
    """Raw pixel env vs the course's transformed env, one process, random actions."""
    raw, transformed = make_base_env(), make_env(obs_norm_state_dict=obs_norm)
    try:
        raw_rate = steps_per_second(raw, steps, repeats)
        env_rate = steps_per_second(transformed, steps, repeats)
    finally:
        raw.close()
        transformed.close()
    return {
        "raw_steps_per_s": raw_rate,
        "transformed_steps_per_s": env_rate,
        "ratio": env_rate / raw_rate,
    }


def bytes_per_frame(obs_norm: dict) -> dict:
    """Replay storage per stored frame: everything the tutorial stored vs the course's keys."""
    env = make_env(obs_norm_state_dict=obs_norm)
    model = make_model(env, config_for_mode("smoke"))
    batch = env.rollout(8, model.policy_explore, break_when_any_done=False)
    env.close()

    def size(td: TensorDict) -> int:
        return sum(v.element_size() * v[0].numel() for v in td.values(True, True))

    naive = size(batch.exclude("step_count", ("next", "step_count")))
    return {
        "naive_bytes_per_frame": naive,
        "course_bytes_per_frame": size(batch.select(*STORED_KEYS)),
    }


def optimisation_rate(obs_norm: dict, config: Config, steps: int = 30) -> float:
    """Samples/s of gradient steps alone (loss, backward, clip, Adam, target update)."""
    env = make_env(obs_norm_state_dict=obs_norm)
    model = make_model(env, config)
    env.close()
    loss_module, updater = make_loss(model.actor, config, "td0")
    optim = torch.optim.Adam(loss_module.parameters(), lr=config.lr)
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
        loss_module(batch.clone())["loss"].backward()
        torch.nn.utils.clip_grad_norm_(loss_module.parameters(), config.max_grad_norm)
        optim.step()
        optim.zero_grad()
        updater.step()

    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * n / (time.perf_counter() - start)


def training_rate(config: Config, target: str, name: str) -> dict:
    """Train for config.total_frames in a subprocess; frames/s after start-up and peak memory."""
    with tempfile.TemporaryDirectory(prefix="dqn-bench-") as tmp:
        out = Path(tmp) / name
        code = (
            "import sys, json; from helpers.config import Config; from helpers.training import train\n"
            "if __name__ == '__main__':\n"
            "    c = Config.from_dict(json.loads(sys.argv[1]))\n"
            f"    train({target!r}, sys.argv[2], mode='smoke', config=c, progress=False, live_plot=False)\n"
        )
        proc = subprocess.Popen(
            [sys.executable, "-c", code, json.dumps(config.to_dict()), str(out)]
        )
        peak = _peak_memory(proc)
        if proc.returncode:
            raise RuntimeError(f"benchmark run {name} failed with exit code {proc.returncode}")
        rows = read_log(out / "log.csv")
    trained = [r for r in rows if r["loss"] == r["loss"]]  # from the first gradient step on
    first, last = trained[0], trained[-1]
    rate = (last["frames"] - first["frames"]) / (last["seconds"] - first["seconds"])
    return {"frames_per_s": rate, "peak_memory_mb": peak / 2**20, "frames": int(last["frames"])}


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


def run_bench() -> dict:
    """All measurements, with the machine they ran on."""
    obs_norm = compute_norm_constants(200)
    # Same hyperparameters for both runs (the tutorial's): only the pipelines may differ.
    course = TUTORIAL.replace(total_frames=BENCH_FRAMES, buffer_size=BENCH_FRAMES)
    tutorial = TUTORIAL.replace(total_frames=BENCH_FRAMES, buffer_size=BENCH_FRAMES)
    result = {
        "machine": f"{platform.machine()}, {psutil.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB, torch {torch.__version__}",
        "env": env_rates(obs_norm),
        "replay": bytes_per_frame(obs_norm),
        "optimisation_samples_per_s": optimisation_rate(obs_norm, course),
        "training": {
            "course": training_rate(course, "td0", "course"),
            "tutorial": training_rate(tutorial, "td0", "tutorial"),
        },
    }
    training = result["training"]
    training["speedup"] = training["course"]["frames_per_s"] / training["tutorial"]["frames_per_s"]
    # Each frame is trained on n_optim * batch_size / frames_per_batch times: the loop's bound.
    per_frame = course.n_optim * course.batch_size / course.frames_per_batch
    bound = result["optimisation_samples_per_s"] / per_frame
    training["course"]["fraction_of_optimisation_bound"] = (
        training["course"]["frames_per_s"] / bound
    )
    return result


def format_bench(result: dict) -> str:
    """The measurements as a Markdown table."""
    env, replay, training = result["env"], result["replay"], result["training"]
    rows = [
        ("raw env steps/s (1 process)", f"{env['raw_steps_per_s']:.0f}"),
        (
            "transformed env steps/s",
            f"{env['transformed_steps_per_s']:.0f} ({env['ratio']:.0%} of raw)",
        ),
        ("replay bytes/frame, tutorial (all keys)", f"{replay['naive_bytes_per_frame']:,}"),
        ("replay bytes/frame, course", f"{replay['course_bytes_per_frame']:,}"),
        ("optimisation samples/s", f"{result['optimisation_samples_per_s']:.0f}"),
        (
            "training frames/s, course",
            f"{training['course']['frames_per_s']:.1f} ({training['course']['fraction_of_optimisation_bound']:.0%} of the optimisation bound)",
        ),
        ("training frames/s, tutorial-faithful", f"{training['tutorial']['frames_per_s']:.1f}"),
        ("speed-up, course / tutorial", f"{training['speedup']:.2f}x"),
        (
            "peak memory, course / tutorial",
            f"{training['course']['peak_memory_mb']:.0f} MB / {training['tutorial']['peak_memory_mb']:.0f} MB",
        ),
    ]
    lines = [f"Machine: {result['machine']}", "", "| measure | value |", "|---|---|"]
    return "\n".join(lines + [f"| {k} | {v} |" for k, v in rows])
