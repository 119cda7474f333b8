"""The learner's own functions in the training run: the loss made with your target equals the
course's, a blank or a wrong function stops the run before anything is written, and a real run
calls yours and records them in run.json."""

import json

import pytest
import torch

from helpers.config import config_for_mode
from helpers.envs import make_env
from helpers.learner_functions import LearnerFunctionError, notebook_solution, use_your_target
from helpers.losses import make_loss
from helpers.models import make_model
from helpers.training import train


@pytest.fixture(scope="module")
def rollout(obs_norm):
    """Real steps of 2 environments, [2, 16], episode ends included, and a network."""
    env = make_env(obs_norm=obs_norm, num_workers=2, seed=3)
    model = make_model(env, config_for_mode("smoke"))
    data = env.rollout(16, break_when_any_done=False)
    env.close()
    data["action"] = torch.nn.functional.one_hot(torch.randint(0, 2, (2, 16)), 2)
    return model, data


@pytest.mark.parametrize("target,role", [("td0", "td0_target"), ("td-lambda", "lambda_returns")])
def test_the_loss_with_your_target_equals_the_courses(rollout, target, role):
    model, data = rollout
    sample = data.reshape(-1) if target == "td0" else data  # transitions, or [B, T] chunks
    config = config_for_mode("smoke")
    course, _ = make_loss(model.actor, config, target)
    yours, _ = make_loss(model.actor, config, target)
    with torch.no_grad():  # a target network that differs from the trainable one
        for loss in (course, yours):
            loss.target_value_network_params.apply_(lambda p: p.mul_(0.9))
    calls = []
    function = notebook_solution(role)
    use_your_target(yours, target, config, lambda *a: calls.append(1) or function(*a))
    expected = course(sample.clone())["loss"]
    got = yours(sample.clone())["loss"]
    assert calls and torch.allclose(got, expected, rtol=1e-5), (got, expected)
    got.backward()  # the gradient flows through Q(s, a) only
    assert all(p.grad is None for p in yours.target_value_network_params.values(True, True))


def blank(reward, next_q, next_q_target, terminated, gamma):
    raise NotImplementedError()


def sign_flipped(reward, next_q, next_q_target, terminated, gamma):
    best = next_q_target.gather(-1, next_q.argmax(-1, keepdim=True)).squeeze(-1)
    return reward - gamma * (~terminated).float() * best


@pytest.mark.parametrize(
    "target,yours,message",
    [
        (
            "td0",
            {"td0_target": blank},
            r"Your blank \(exercise 5, notebook 04_td0\) is not written",
        ),
        ("td0", {"td0_target": sign_flipped}, r"Your sign_flipped \(exercise 5.* is not right yet"),
        ("td0", {"lambda_returns": blank}, "serves a td-lambda run, not this td0 one"),
        ("td0", {"target": blank}, "not 'target'"),
        ("td0", {"gradient_step": 3}, "is a int, not a function"),
    ],
)
def test_a_blank_or_wrong_function_stops_the_run_before_it_starts(tmp_path, target, yours, message):
    out = tmp_path / "run"
    with pytest.raises(LearnerFunctionError, match=message):
        train(target, out, mode="smoke", yours=yours, progress=False)
    assert not out.exists()  # nothing written, no 5-minute run that was doomed


@pytest.mark.slow
def test_a_run_trains_with_your_functions_and_records_them(tmp_path, obs_norm, capsys):
    calls = {"td0_target": 0, "gradient_step": 0, "loop_body": 0}
    target, step, body = (
        notebook_solution("td0_target"),
        notebook_solution("gradient_step"),
        notebook_solution("loop_body"),
    )

    def double_dqn_target(*args):
        calls["td0_target"] += 1
        return target(*args)

    def gradient_step_by_hand(*args):
        calls["gradient_step"] += 1
        return step(*args)

    def loop_body_by_hand(*args):
        calls["loop_body"] += 1
        return body(*args)

    result = train(
        "td0",
        tmp_path / "run",
        mode="smoke",
        obs_norm=obs_norm,
        progress=False,
        yours={
            "td0_target": double_dqn_target,
            "gradient_step": gradient_step_by_hand,
            "loop_body": loop_body_by_hand,
        },
    )
    learning = sum(1 for row in result.rows if row["loss"] == row["loss"])  # batches that learned
    config = config_for_mode("smoke")
    checks = {"td0_target": 1, "gradient_step": 4, "loop_body": 3}  # each check's calls
    assert calls["gradient_step"] == checks["gradient_step"] + learning * config.n_optim
    assert calls["td0_target"] == checks["td0_target"] + learning * config.n_optim
    assert calls["loop_body"] == checks["loop_body"] + len(result.rows)  # once per batch
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["yours"] == {
        "td0_target": "double_dqn_target",
        "gradient_step": "gradient_step_by_hand",
        "loop_body": "loop_body_by_hand",
    }
    assert (
        "Training with your double_dqn_target (exercise 5), gradient_step_by_hand (exercise 6), "
        "loop_body_by_hand (exercise 7) (checked: correct)." in capsys.readouterr().out
    )
