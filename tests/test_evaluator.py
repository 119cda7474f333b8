"""The evaluator process: the same episodes as an evaluation in the training's own process,
snapshots that wait their turn, a perfect evaluation confirmed on more episodes, and no
evaluation after a perfect one."""

import math

import pytest
import torch
from tensordict import TensorDict

from helpers.config import config_for_mode
from helpers.envs import make_env
from helpers.evaluation import (
    EVAL_SEED,
    batched_episode_lengths,
    cannot_reach,
    episode_lengths,
    evaluation_lengths,
    side_by_side,
)
from helpers.models import make_model
from helpers.run.checkpoints import flat_params
from helpers.run.evaluator import Evaluations, Evaluator
from helpers.run.logs import CsvLog, read_log

pytestmark = pytest.mark.slow  # left out of the quick lane (make check)


def test_snapshots_come_back_in_order_with_the_lengths_of_a_local_evaluation(obs_norm):
    config = config_for_mode("smoke").replace(eval_episodes=3, eval_max_steps=60)
    env = make_env(obs_norm=obs_norm)
    actor = make_model(env, config).actor
    snapshots = {}
    for frames in (32, 64):
        torch.manual_seed(frames)  # two different agents
        snapshots[frames] = {
            k: torch.randn_like(v) for k, v in flat_params(TensorDict.from_module(actor)).items()
        }
    with Evaluator(config, obs_norm) as evaluator:
        for frames, params in snapshots.items():
            evaluator.submit(frames, params)
        results = evaluator.results(wait=True)
        assert evaluator.pending == []
    seeds = list(range(EVAL_SEED, EVAL_SEED + 3))
    expected = []
    for frames, params in snapshots.items():
        with torch.no_grad():
            TensorDict.from_module(actor).update_(TensorDict(params).unflatten_keys("."))
        expected.append((frames, episode_lengths(actor, env, seeds, 60)))
    env.close()
    assert results == expected
    assert not evaluator.process.is_alive()


def setup(obs_norm, tmp_path, max_steps: int, frames: list[int]):
    """A smoke config with 2 evaluation episodes of up to `max_steps`, an untrained agent's
    parameters, and a log with a row at each of `frames`."""
    config = config_for_mode("smoke").replace(eval_episodes=2, eval_max_steps=max_steps)
    env = make_env(obs_norm=obs_norm)
    params = flat_params(TensorDict.from_module(make_model(env, config).actor))
    env.close()
    log = CsvLog(tmp_path / "log.csv")
    for i, at in enumerate(frames):
        log.write({"batch": i, "frames": at})
    return config, params, log, {"eval": float("-inf"), "frames": 0, "params": None}


def test_a_perfect_evaluation_plays_more_episodes_until_one_falls_short(obs_norm):
    """The limit is set to the shortest of the first two episodes: both reach it, and the
    confirmation goes on, two episodes side by side, until the first that ends below it."""
    config = config_for_mode("smoke").replace(eval_episodes=2, confirm_episodes=30)
    env, envs = make_env(obs_norm=obs_norm), make_env(obs_norm=obs_norm, num_workers=2)
    torch.manual_seed(0)
    actor = make_model(env, config).actor
    seeds = list(range(EVAL_SEED, EVAL_SEED + 32))
    free = episode_lengths(actor, env, seeds, 500)  # each seed's episode, uncut, one by one
    limit = min(free[:2])
    short = next(i for i, n in enumerate(free) if n < limit)  # the first to fall short
    assert 2 <= short < 31, free  # (precondition: a confirmation that ends inside the 30)
    lengths = evaluation_lengths(actor, envs, config.replace(eval_max_steps=limit))
    assert lengths == [min(n, limit) for n in free[: short + 1]]
    # Below the limit at once: only the evaluation's own episodes; with none to confirm: no more.
    assert evaluation_lengths(actor, envs, config.replace(eval_max_steps=500)) == free[:2]
    at_limit = config.replace(eval_max_steps=limit, confirm_episodes=0)
    assert evaluation_lengths(actor, envs, at_limit) == [limit, limit]
    # Once the training has collected its last frame, a perfect evaluation is not confirmed.
    ended = config.replace(eval_max_steps=limit)
    assert evaluation_lengths(actor, envs, ended, ended=lambda: True) == [limit, limit]
    env.close()
    envs.close()


@pytest.mark.parametrize("pipeline", ["uint8", "float32"])
def test_episodes_played_side_by_side_last_as_long_as_one_by_one(obs_norm, pipeline):
    """Seven seeds in a batch of eight environments (one spare), against the same seeds one
    by one: the same lengths, short ones and ones cut at the step limit alike, in the
    course's pipeline and in the tutorial's (whose observations have other keys)."""
    config = config_for_mode("smoke").replace(pipeline=pipeline)
    env = make_env(obs_norm=obs_norm, pipeline=pipeline)
    envs = make_env(obs_norm=obs_norm, pipeline=pipeline, num_workers=8)
    torch.manual_seed(1)
    actor = make_model(env, config).actor
    seeds = list(range(EVAL_SEED + 40, EVAL_SEED + 47))
    free = episode_lengths(actor, env, seeds, 500)
    assert len(set(free)) > 2  # (precondition: episodes of several lengths)
    cut = sorted(set(free))[1]  # (the shortest episodes end before it, the others are cut)
    assert batched_episode_lengths(actor, envs, seeds, 500) == free
    assert batched_episode_lengths(actor, envs, seeds, cut) == [min(n, cut) for n in free]
    with pytest.raises(ValueError, match="9 seeds for a batch of 8"):
        batched_episode_lengths(actor, envs, list(range(9)))
    env.close()
    envs.close()


def test_seeds_are_cut_into_the_fewest_even_groups_of_at_most_ten():
    assert side_by_side(list(range(20))) == [list(range(0, 10)), list(range(10, 20))]
    assert [len(g) for g in side_by_side(list(range(26)))] == [9, 9, 8]
    assert [len(g) for g in side_by_side(list(range(91)))] == [10] * 1 + [9] * 9
    assert [len(g) for g in side_by_side(list(range(41)))] == [9, 8, 8, 8, 8]
    assert sum(side_by_side(list(range(7))), []) == list(range(7))


def test_an_evaluation_can_no_longer_reach_the_best_once_every_episode_left_at_the_limit_falls_short():
    # 20 episodes of up to 500 steps, the best so far 490: 9,800 steps in all to reach it.
    assert not cannot_reach([300], 20, 500, 490.0)  # 300 + 19 x 500 = 9,800: a tie, go on
    assert cannot_reach([299], 20, 500, 490.0)  # 9,799 steps at most: below the best
    assert not cannot_reach([500] * 19 + [300], 20, 500, 490.0)  # its mean is 490
    assert cannot_reach([500] * 19 + [299], 20, 500, 490.0)  # 489.95
    assert not cannot_reach([8], 20, 500, -math.inf)  # the run's first evaluation
    assert cannot_reach([499], 20, 500, 500.0)  # only a perfect evaluation reaches 500


def test_an_evaluation_stops_once_it_cannot_beat_the_best_so_far(obs_norm):
    """An untrained agent's episodes are short, and its five episodes, played side by side,
    end shortest first. With the best set just above what the shortest and 4 perfect ones
    would make, the evaluation stops when the shortest ends; with the best a tie of those,
    it goes on to the second shortest, which cannot tie it with 3 perfect ones."""
    config = config_for_mode("smoke").replace(eval_episodes=5, eval_max_steps=500)
    env, envs = make_env(obs_norm=obs_norm), make_env(obs_norm=obs_norm, num_workers=5)
    torch.manual_seed(0)
    actor = make_model(env, config).actor
    free = episode_lengths(actor, env, list(range(EVAL_SEED, EVAL_SEED + 5)), 500)
    assert max(free) < 500  # (precondition: an untrained agent fails every episode)
    first, second = sorted(free)[:2]
    tie_after_one = (first + 4 * 500) / 5
    stopped = evaluation_lengths(actor, envs, config, to_beat=tie_after_one + 0.1)
    assert stopped == [n for n in free if n == first]  # (in seed order)
    assert evaluation_lengths(actor, envs, config, to_beat=tie_after_one) == [
        n for n in free if n <= second
    ]
    # Two rounds of two (a batch of two environments): a best that the first two episodes and
    # two perfect ones miss by 0.1 ends the evaluation with the first round, even when both of
    # its episodes end on the same step.
    pairs = make_env(obs_norm=obs_norm, num_workers=2)
    four = config.replace(eval_episodes=4)
    after_two = (free[0] + free[1] + 2 * 500) / 4 + 0.1
    assert evaluation_lengths(actor, pairs, four, to_beat=after_two) == free[:2]
    pairs.close()
    # A best that all five episodes tie, or none so far: every episode is played.
    assert evaluation_lengths(actor, envs, config, to_beat=sum(free) / 5) == free
    assert evaluation_lengths(actor, envs, config) == free
    env.close()
    envs.close()


def test_a_snapshot_that_cannot_beat_the_best_is_logged_with_the_episodes_it_played(
    obs_norm, tmp_path
):
    config, params, log, best = setup(obs_norm, tmp_path, 500, [32])
    config = config.replace(eval_episodes=20)  # (played side by side: the shortest end first)
    # a best that an untrained agent cannot beat
    best = {"eval": 499.0, "frames": 0, "params": params}
    with Evaluator(config, obs_norm) as evaluator:
        evaluations = Evaluations(log, evaluator, best, max_steps=500)
        evaluations.add(32, params)
        assert evaluations.collect(wait=True)
    [row] = read_log(tmp_path / "log.csv")
    # Stopped when the shortest episodes of its first round of ten ended: with 19 perfect
    # ones, the shortest cannot make 499.
    env = make_env(obs_norm=obs_norm)
    actor = make_model(env, config).actor
    with torch.no_grad():
        TensorDict.from_module(actor).update_(TensorDict(params).unflatten_keys("."))
    first_round = episode_lengths(actor, env, list(range(EVAL_SEED, EVAL_SEED + 10)), 500)
    env.close()
    shortest = min(first_round)
    assert row["eval_played"] == first_round.count(shortest) and row["eval_mean"] == shortest
    assert evaluations.best is best  # and not kept


def test_a_busy_evaluator_gets_only_the_newest_waiting_snapshot(obs_norm, tmp_path):
    config, params, log, best = setup(obs_norm, tmp_path, 100, [32, 64, 96])
    with Evaluator(config, obs_norm) as evaluator:
        evaluations = Evaluations(log, evaluator, best, max_steps=100)
        for frames in (32, 64, 96):  # the first is being evaluated while the others fall due
            evaluations.add(frames, params)
        assert evaluator.pending == [32] and evaluations.waiting == 96
        assert evaluations.collect(wait=True)
    rows = read_log(tmp_path / "log.csv")
    assert [r["frames"] for r in rows if not math.isnan(r["eval_mean"])] == [32, 96]
    assert evaluations.best["frames"] == 96  # a tie goes to the longer-trained


def test_no_snapshot_is_evaluated_after_a_perfect_one(obs_norm, tmp_path):
    # 5 steps: every episode of any agent reaches the limit (CartPole lasts 8 steps or more)
    config, params, log, best = setup(obs_norm, tmp_path, 5, [32, 64])
    with Evaluator(config, obs_norm) as evaluator:
        evaluations = Evaluations(log, evaluator, best, max_steps=5)
        evaluations.add(32, params)
        evaluations.collect(wait=True)
        assert evaluations.perfect and evaluations.best["frames"] == 32
        evaluations.add(64, params)
        assert evaluator.pending == [] and evaluations.waiting is None
    rows = read_log(tmp_path / "log.csv")
    assert rows[0]["eval_mean"] == 5 and math.isnan(rows[1]["eval_mean"])


def test_once_the_training_has_ended_a_perfect_evaluation_is_not_confirmed(obs_norm, tmp_path):
    # 5 steps: every episode reaches the limit, and 100,000 episodes to confirm would take
    # the evaluator about 20 minutes; told that the training has ended, it sends its 2 episodes.
    config, params, log, best = setup(obs_norm, tmp_path, 5, [32])
    with Evaluator(config.replace(confirm_episodes=100_000), obs_norm) as evaluator:
        evaluator.submit(32, params)
        evaluator.training_ended()
        [(frames, lengths)] = evaluator.results(wait=True)
    assert frames == 32 and lengths == [5, 5]


def test_the_evaluator_exits_when_the_training_process_dies_outright(tmp_path):
    import subprocess
    import sys
    import time

    import psutil

    pid_file = tmp_path / "evaluator.pid"
    code = (
        "import os, sys\n"
        "from helpers.config import config_for_mode\n"
        "from helpers.run.evaluator import Evaluator\n"
        "from helpers.normalization import compute_norm_constants\n"
        "if __name__ == '__main__':\n"
        "    e = Evaluator(config_for_mode('smoke'), compute_norm_constants(20))\n"
        f"    open({str(pid_file)!r}, 'w').write(str(e.process.pid))\n"
        "    os._exit(9)  # as if killed: nothing is told to stop\n"
    )
    script = tmp_path / "dies.py"
    script.write_text(code)
    # (no pipes: the evaluator would hold them open, and waiting for them would wait for it)
    subprocess.run([sys.executable, str(script)], stdout=subprocess.DEVNULL, timeout=120)
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 30
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the orphaned evaluator is still running"
        time.sleep(0.2)


def test_an_error_in_the_evaluation_process_reaches_the_training_with_its_traceback(obs_norm):
    import pytest

    from helpers.run.evaluator import EvaluatorError

    config = config_for_mode("smoke")
    with Evaluator(config, obs_norm) as evaluator:
        evaluator.submit(32, {"no such parameter": torch.zeros(1)})
        with pytest.raises(EvaluatorError, match="(?s)evaluation process failed.*Traceback"):
            evaluator.results(wait=True)
        assert evaluator.process.is_alive()  # (so that it is not reported as killed)
    assert not evaluator.process.is_alive()
