"""The benchmark's measurements that can be checked by hand (speeds are reported, not asserted)."""

import subprocess
import sys

import pytest

from helpers.commands.bench import YOURS, format_bench, training_rate
from helpers.commands.bench_pieces import bytes_per_frame, your_step_times
from helpers.config import config_for_mode
from helpers.learner_functions import notebook_solution

pytestmark = pytest.mark.slow  # left out of the quick lane (make check)


def test_replay_bytes_per_step_by_hand(obs_norm):
    sizes = bytes_per_frame(obs_norm)
    pixels = 4 * 64 * 64 * 4  # a float32 stack of 4 frames of 64x64
    # pixels and next pixels, a one-hot int64 action, the float Q-values and the chosen one,
    # a float reward, three bool flags at the root and three under "next"
    assert sizes["naive_bytes_per_frame"] == 2 * pixels + 2 * 8 + 2 * 4 + 4 + 4 + 6
    # one uint8 frame, int32 links to the previous and next frame, a uint8 action index,
    # a float reward and two bool flags per stored frame
    slot = 64 * 64 + 4 + 4 + 1 + 4 + 1 + 1
    assert sizes["compact_bytes_per_slot"] == slot
    # an episode of L steps takes L + 1 frames: its frames and the final next frame
    length = sizes["random_episode_length"]
    assert 8 < length < 60  # a random policy lasts about 22 steps
    assert abs(sizes["compact_bytes_per_frame"] - slot * (length + 1) / length) < 1
    assert sizes["full_buffer_compact_mb"] == 100_000 * slot / 1e6


def test_format_bench_names_the_machine():
    result = {
        "machine": "test machine",
        "env": {
            "raw_steps_per_s": 500.0,
            "transformed_steps_per_s": 400.0,
            "ratio": 0.8,
            "float32_steps_per_s": 300.0,
            "float32_ratio": 0.6,
        },
        "replay": {
            "naive_bytes_per_frame": 131110,
            "compact_bytes_per_slot": 4111,
            "compact_bytes_per_frame": 4290.5,
            "random_episode_length": 22.9,
            "full_buffer_compact_mb": 411.1,
            "full_buffer_naive_mb": 13111.0,
        },
        "optimisation_samples_per_s": 700.0,
        "recipe_optimisation_samples_per_s": 2000.0,
        "learner": {
            "sample_ms": 5.25,
            "step_ms": 31.0,
            "threads": 1,
            "batch_ms": 108.75,
            "loop_batch_ms": 128.0,
        },
        "training": {
            "recipe": {
                "frames_per_s": 150.0,
                "peak_memory_mb": 1500.0,
                "fraction_of_optimisation_bound": 0.6,
            },
            "course": {
                "frames_per_s": 50.0,
                "peak_memory_mb": 3000.0,
                "fraction_of_optimisation_bound": 0.5,
            },
            "tutorial": {"frames_per_s": 40.0, "peak_memory_mb": 3100.0},
            "speedup": 1.25,
            "recipe_speedup": 3.75,
        },
        "yours": {
            "td0": {"course": {"frames_per_s": 200.0}, "yours": {"frames_per_s": 190.0}},
            "td-lambda": {"course": {"frames_per_s": 180.0}, "yours": {"frames_per_s": 144.0}},
        },
        "your_step_ms": {"td0": {"course": 45.0, "yours": 50.0}},
    }
    text = format_bench(result)
    assert "test machine" in text and "1.25x / 3.75x" in text and "80% of raw" in text
    assert "150.0 (60% of its optimisation bound)" in text and "2000 / 700" in text
    assert "128 ms / 109 ms (5.2 ms sampling + 31.0 ms learning per step, 1 thread)" in text
    assert "131,110" in text and "4,290" in text and "411 MB / 13,111 MB" in text
    assert (
        "own double_dqn_target, gradient_step_by_hand, loop_body_by_hand / the course's "
        "| 190.0 / 200.0 (95%) |" in text
    )
    assert (
        "td-lambda: with the notebook's own lambda_returns / the course's | 144.0 / 180.0 (80%)"
        in text
    )
    assert (
        "td0 gradient step alone, the two taking turns: with the notebook's own "
        "double_dqn_target, gradient_step_by_hand / the course's | 50.0 ms / 45.0 ms (90%)" in text
    )


def test_the_step_timing_takes_turns_with_the_function_it_was_given(obs_norm):
    """your_step_times really steps with the learner's function: each of its 10 samples a round,
    and once more each to warm up."""
    calls = []

    def counted_target(*args):
        calls.append(1)
        return notebook_solution("td0_target")(*args)

    config = config_for_mode("smoke")
    times = your_step_times(obs_norm, config, {"td0": {"td0_target": counted_target}}, rounds=2)
    assert len(calls) == 2 * 2 * 10
    assert set(times) == {"td0"} and all(ms > 0 for ms in times["td0"].values())


@pytest.mark.slow
def test_a_benchmark_run_trains_with_the_notebooks_functions():
    """bench's side-by-side run really trains with the notebooks' solutions: run.json says so."""
    config = config_for_mode("smoke").replace(total_frames=256, init_random_frames=64)
    run = training_rate(config, "td0", "yours", YOURS["td0"])
    assert run["yours"] == {
        "td0_target": "double_dqn_target",
        "gradient_step": "gradient_step_by_hand",
        "loop_body": "loop_body_by_hand",
    }
    assert run["frames"] == 256 and run["frames_per_s"] > 0


def test_torchrl_logs_go_to_stderr_so_json_output_stays_json():
    # `bench --json | jq` reads stdout: torchrl's INFO lines (collector start-up) must not be there.
    code = "import helpers; from torchrl._utils import logger; logger.info('hello from torchrl')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and "hello from torchrl" in result.stderr
