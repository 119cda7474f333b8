"""The benchmark's measurements that can be checked by hand (speeds are reported, not asserted)."""

from helpers.bench import bytes_per_frame, format_bench


def test_course_replay_bytes_per_frame_by_hand(obs_norm):
    sizes = bytes_per_frame(obs_norm)
    pixels = 4 * 64 * 64 * 4  # a float32 stack of 4 frames of 64x64
    # pixels and next pixels, a one-hot int64 action, a float reward, three bool flags
    assert sizes["course_bytes_per_frame"] == 2 * pixels + 2 * 8 + 4 + 3
    # the tutorial also kept the Q-values the policy computed while collecting
    assert sizes["naive_bytes_per_frame"] == sizes["course_bytes_per_frame"] + 2 * 4 + 4 + 3


def test_format_bench_names_the_machine():
    result = {
        "machine": "test machine",
        "env": {"raw_steps_per_s": 500.0, "transformed_steps_per_s": 400.0, "ratio": 0.8},
        "replay": {"naive_bytes_per_frame": 131110, "course_bytes_per_frame": 131095},
        "optimisation_samples_per_s": 700.0,
        "training": {
            "course": {
                "frames_per_s": 50.0,
                "peak_memory_mb": 3000.0,
                "fraction_of_optimisation_bound": 0.5,
            },
            "tutorial": {"frames_per_s": 40.0, "peak_memory_mb": 3100.0},
            "speedup": 1.25,
        },
    }
    text = format_bench(result)
    assert "test machine" in text and "1.25x" in text and "80% of raw" in text and "131,110" in text
