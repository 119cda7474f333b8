"""The evaluator process: the same episodes as an evaluation in the training's own process,
snapshots that wait their turn, a perfect evaluation confirmed on more episodes, and no
evaluation after a perfect one."""

import math

import pytest
import torch
from tensordict import TensorDict

from helpers.config import config_for_mode
from helpers.envs import make_env
from helpers.evaluation import EVAL_SEED, cannot_reach, episode_lengths, evaluation_lengths
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
    confirmation goes on, episode by episode, until the first that ends below it."""
    config = config_for_mode("smoke").replace(eval_episodes=2, confirm_episodes=30)
    env = make_env(obs_norm=obs_norm)
    torch.manual_seed(0)
    actor = make_model(env, config).actor
    seeds = list(range(EVAL_SEED, EVAL_SEED + 32))
    free = episode_lengths(actor, env, seeds, 500)  # each seed's episode, uncut
    limit = min(free[:2])
    short = next(i for i, n in enumerate(free) if n < limit)  # the first to fall short
    assert 2 <= short < 31, free  # (precondition: a confirmation that ends inside the 30)
    lengths = evaluation_lengths(actor, env, config.replace(eval_max_steps=limit))
    assert lengths == [min(n, limit) for n in free[: short + 1]]
    # Below the limit at once: only the evaluation's own episodes; with none to confirm: no more.
    assert evaluation_lengths(actor, env, config.replace(eval_max_steps=500)) == free[:2]
    at_limit = config.replace(eval_max_steps=limit, confirm_episodes=0)
    assert evaluation_lengths(actor, env, at_limit) == [limit, limit]
    # Once the training has collected its last frame, a perfect evaluation is not confirmed.
    ended = config.replace(eval_max_steps=limit)
    assert evaluation_lengths(actor, env, ended, ended=lambda: True) == [limit, limit]
    env.close()


def test_an_evaluation_can_no_longer_reach_the_best_once_every_episode_left_at_the_limit_falls_short():
    # 20 episodes of up to 500 steps, the best so far 490: 9,800 steps in all to reach it.
    assert not cannot_reach([300], 20, 500, 490.0)  # 300 + 19 x 500 = 9,800: a tie, go on
    assert cannot_reach([299], 20, 500, 490.0)  # 9,799 steps at most: below the best
    assert not cannot_reach([500] * 19 + [300], 20, 500, 490.0)  # its mean is 490
    assert cannot_reach([500] * 19 + [299], 20, 500, 490.0)  # 489.95
    assert not cannot_reach([8], 20, 500, -math.inf)  # the run's first evaluation
    assert cannot_reach([499], 20, 500, 500.0)  # only a perfect evaluation reaches 500


def test_an_evaluation_stops_once_it_cannot_beat_the_best_so_far(obs_norm):
    """An untrained agent's episodes are short: with the best set so that the first episode
    and 4 perfect ones would tie it, the evaluation stops after the second episode."""
    config = config_for_mode("smoke").replace(eval_episodes=5, eval_max_steps=500)
    env = make_env(obs_norm=obs_norm)
    torch.manual_seed(0)
    actor = make_model(env, config).actor
    free = episode_lengths(actor, env, list(range(EVAL_SEED, EVAL_SEED + 5)), 500)
    assert max(free) < 500  # (precondition: an untrained agent fails every episode)
    tie_after_one = (free[0] + 4 * 500) / 5
    assert evaluation_lengths(actor, env, config, to_beat=tie_after_one) == free[:2]
    # A best that all five episodes tie, or none so far: every episode is played.
    assert evaluation_lengths(actor, env, config, to_beat=sum(free) / 5) == free
    assert evaluation_lengths(actor, env, config) == free
    env.close()


def test_a_snapshot_that_cannot_beat_the_best_is_logged_with_the_episodes_it_played(
    obs_norm, tmp_path
):
    config, params, log, best = setup(obs_norm, tmp_path, 500, [32])
    # a best that an untrained agent cannot beat
    best = {"eval": 499.0, "frames": 0, "params": params}
    with Evaluator(config, obs_norm) as evaluator:
        evaluations = Evaluations(log, evaluator, best, max_steps=500)
        evaluations.add(32, params)
        assert evaluations.collect(wait=True)
    [row] = read_log(tmp_path / "log.csv")
    assert row["eval_played"] == 1 and row["eval_mean"] < 499  # stopped after its first episode
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
