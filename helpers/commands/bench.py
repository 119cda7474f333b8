"""No notebook (run tooling). `python -m helpers bench`: measure the course's speed and memory on this machine.

Everything is measured in one run: environment step rates, replay bytes per frame, the
training loop's frames/s for the course's recipe, for the tutorial's hyperparameters on the
course's pipeline and for a tutorial-faithful configuration, gradient steps' samples/s, and
each training run's peak memory (the whole process tree).
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import torch

from helpers.commands.bench_pieces import (
    bytes_per_frame,
    env_rates,
    learner_times,
    optimisation_rate,
    your_step_times,
)
from helpers.config import SYSTEM_FIELDS, TUTORIAL, Config, config_for_mode
from helpers.learner_functions import SOLUTION_NAMES, notebook_solution
from helpers.normalization import compute_norm_constants
from helpers.run.folder import LOG_FILE, RUN_FILE, read_json
from helpers.run.logs import read_log

BENCH_FRAMES = 1_024  # frames of each benchmark training run at the tutorial's settings
RECIPE_FRAMES = 4_096  # ... and with the course's recipe, which runs several times faster
# Benchmark runs measure the loop: one short evaluation at each end, no final evaluation.
BENCH_EVAL = dict(eval_every=1_000_000, eval_episodes=1, final_episodes=0)
# The learner's functions that notebooks 04 and 05 train with, by target (notebook 05 trains
# with your lambda_returns and the course's gradient step and loop body): bench times the
# recipe with the notebooks' solutions of those exercises against the course's own functions.
YOURS = {"td0": ("td0_target", "gradient_step", "loop_body"), "td-lambda": ("lambda_returns",)}


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
        # (its output would mix into `bench --json`'s)
        proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.DEVNULL)
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
        # A gradient step with the notebooks' own target and step, against the course's, in turns.
        "your_step_ms": your_step_times(
            obs_norm,
            recipe,
            {t: {r: notebook_solution(r) for r in YOURS[t] if r != "loop_body"} for t in YOURS},
        ),
        "training": {name: _median_run(config, name, repeats) for name, config in configs},
    }
    # The recipe trained with the notebooks' own functions and with the course's, the two runs
    # taking turns, so that whatever else the machine does weighs on both alike.
    result["yours"] = {target: _paired_runs(recipe, repeats, target) for target in YOURS}
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


def _median_run(config: Config, name: str, repeats: int) -> dict:
    """The run with the median frames/s of `repeats` training runs (the recipe's target is
    TD(lambda), the tutorial's TD(0))."""
    target = "td-lambda" if name == "recipe" else "td0"
    return _median_of([training_rate(config, target, name) for _ in range(repeats)])


def _paired_runs(config: Config, repeats: int, target: str) -> dict:
    """`repeats` runs of `target` with the course's functions and as many with the notebooks'
    solutions (`YOURS[target]`), in turns; the median run of each (`_median_of`)."""
    runs = {"course": [], "yours": []}
    for _ in range(repeats):
        runs["course"].append(training_rate(config, target, "recipe"))
        runs["yours"].append(training_rate(config, target, "recipe", YOURS[target]))
    return {side: _median_of(side_runs) for side, side_runs in runs.items()}


def _median_of(runs: list[dict]) -> dict:
    """The run with the median frames/s, with every run's frames/s beside it."""
    runs = sorted(runs, key=_rate)
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
        *(
            (
                f"a {target} gradient step alone, the two taking turns: with the notebook's own "
                f"{', '.join(SOLUTION_NAMES[r] for r in YOURS[target] if r != 'loop_body')} "
                "/ the course's",
                f"{ms['yours']:.1f} ms / {ms['course']:.1f} ms ({ms['course'] / ms['yours']:.0%})",
            )
            for target, ms in result.get("your_step_ms", {}).items()
        ),
        (
            "peak memory, recipe / course's pipeline / tutorial",
            f"{recipe['peak_memory_mb']:.0f} MB / {course['peak_memory_mb']:.0f} MB / {tutorial['peak_memory_mb']:.0f} MB",
        ),
    ]
    lines = [f"Machine: {result['machine']}", "", "| measure | value |", "|---|---|"]
    return "\n".join(lines + [f"| {k} | {v} |" for k, v in rows])
