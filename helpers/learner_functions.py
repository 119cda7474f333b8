"""Notebooks 04 and 05. Your own functions in the training run: `train(..., yours={...})` checks
the exercises' functions it is given before it starts, then trains with them in place of the
course's own: your double-DQN target (exercise 5) or your λ-returns (exercise 8) inside the
loss, your gradient step (exercise 6) and your loop body (exercise 7) in the loop.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from tensordict import TensorDict
from torchrl.objectives import DQNLoss

from helpers.config import Config
from helpers.envs import make_env
from helpers.exercises import CheckFailed
from helpers.learning_checks import check_gradient_step, check_lambda_returns, check_td0_target
from helpers.loop_check import check_loop_body
from helpers.models import make_model

# Each function `train` takes from you: its exercise, its notebook, the target it serves
# (None: both) and its check.
ROLES = {
    "td0_target": (5, "04_td0", "td0", check_td0_target),
    "gradient_step": (6, "04_td0", None, check_gradient_step),
    "loop_body": (7, "04_td0", None, check_loop_body),
    "lambda_returns": (8, "05_td_lambda", "td-lambda", check_lambda_returns),
}


NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


# The name each notebook gives the function a learner writes for a role.
SOLUTION_NAMES = {
    "td0_target": "double_dqn_target",
    "gradient_step": "gradient_step_by_hand",
    "loop_body": "loop_body_by_hand",
    "lambda_returns": "lambda_returns",
}


class LearnerFunctionError(ValueError):
    """A function of yours that `train` will not train with (a blank, a wrong one)."""


def _actor_and_sample(config: Config) -> tuple:
    """A fresh network and a real sample of `config.batch_size` random steps, for the gradient
    step's check (made before the run, so with plain normalization constants)."""
    env = make_env(obs_norm={"loc": torch.zeros(4, 1, 1), "scale": torch.ones(4, 1, 1)}, seed=0)
    try:
        actor = make_model(env, config).actor
        sample = env.rollout(config.batch_size, break_when_any_done=False)
    finally:
        env.close()
    return actor, sample


def check_yours(yours: dict[str, Callable], target: str, config: Config) -> dict:
    """Run each exercise's check on the function given for it; return what run.json records:
    role -> function name.

    A blank or a wrong function stops the run before it starts, with the check's message.
    """
    for role, function in yours.items():
        if role not in ROLES:
            raise LearnerFunctionError(
                f"train() takes your {', '.join(ROLES)}, not {role!r}: "
                f"yours={{'td0_target': double_dqn_target, ...}}."
            )
        exercise, notebook, serves, check = ROLES[role]
        if serves is not None and serves != target:
            raise LearnerFunctionError(
                f"Your {role} (exercise {exercise}) serves a {serves} run, not this {target} one."
            )
        if not callable(function):
            raise LearnerFunctionError(
                f"yours[{role!r}] is a {type(function).__name__}, not a function."
            )
        if role == "td0_target" and not config.double_dqn:
            raise LearnerFunctionError(
                "This config has double_dqn=False, plain DQN's target; your td0_target is the "
                "double-DQN one (exercise 5): leave double_dqn on, or leave td0_target out."
            )
        try:
            if role == "gradient_step":
                actor, sample = _actor_and_sample(config)
                check(function, actor, config, sample)
            else:
                check(function)
        except CheckFailed as failed:
            what = "is not written yet" if "not written yet" in str(failed) else "is not right yet"
            raise LearnerFunctionError(
                f"Your {function.__name__} (exercise {exercise}, notebook {notebook}) {what}, "
                f"so the run did not start. {str(failed).removeprefix('✗ ')}"
            ) from None
    return {role: getattr(f, "__name__", repr(f)) for role, f in yours.items()}


class YourTargets(torch.nn.Module):
    """The value estimator of torchrl's DQNLoss, made of your target function.

    DQNLoss computes Q(s, a) with the trainable parameters and asks its estimator for the
    targets (`value_estimate`). For TD(λ) it hands over the next states' values (the double-DQN
    ones when `double_dqn`), which your λ-returns turn into targets chunk by chunk. Your TD(0)
    target makes the double-DQN choice itself: it gets the next states' Q-values of both
    networks, which this estimator computes, and the loss is made with double_dqn=False so
    that it does not compute them too.
    """

    def __init__(self, loss: DQNLoss, target: str, config: Config, function: Callable) -> None:
        super().__init__()
        self.target, self.config, self.function = target, config, function
        self.__dict__["loss"] = loss  # (not a submodule: the loss holds this estimator)

    def _next_q(self, tensordict: TensorDict, params: TensorDict) -> torch.Tensor:
        net = self.loss.value_network
        nxt = tensordict.get("next").select(*net.in_keys).clone(False)
        with params.to_module(net, preserve_module_state=False):
            return net(nxt).get("action_value")

    @torch.no_grad()
    def value_estimate(self, tensordict: TensorDict, target_params=None, next_value=None, **kw):
        flag = lambda key: tensordict.get(("next", key)).squeeze(-1)  # noqa: E731
        reward, gamma = tensordict.get(("next", "reward")).squeeze(-1), self.config.gamma
        if self.target == "td0":
            next_q = self._next_q(tensordict, self.loss.value_network_params.data)
            next_q_target = self._next_q(tensordict, target_params)
            targets = self.function(reward, next_q, next_q_target, flag("terminated"), gamma)
        else:  # chunks [B, T]: your λ-returns of the whole batch of chunks at once
            if next_value is None:  # (double_dqn off: the target network's maximum)
                value = self._next_q(tensordict, target_params).max(-1).values
            else:
                value = next_value.squeeze(-1)
            done, terminated = flag("done"), flag("terminated")
            targets = self.function(reward, value, done, terminated, gamma, self.config.lmbda)
        return targets.to(reward.dtype).unsqueeze(-1)


def use_your_target(loss: DQNLoss, target: str, config: Config, function: Callable) -> None:
    """Have `loss` compute its targets with your `function` (td0_target or lambda_returns)."""
    if target == "td0":
        loss.double_dqn = False  # (your target makes the double-DQN choice itself)
    # (What `loss.value_estimator = ...` sets; nn.Module's __setattr__ would register a module
    # under that name instead of calling torchrl's property setter.)
    loss._value_estimator = YourTargets(loss, target, config, function)


def trained_with(names: dict[str, str], target: str) -> str:
    """The line `train` prints: whose functions this `target` run trains with."""
    if not names:
        return "Training with the course's own target, gradient step and loop body."
    yours = [f"{name} (exercise {ROLES[role][0]})" for role, name in names.items()]
    serving = [role for role, (_, _, serves, _) in ROLES.items() if serves in (None, target)]
    rest = "" if set(serving) <= set(names) else "; the course's own for the rest"
    return f"Training with your {', '.join(yours)}{rest} (checked: correct)."


def notebook_solution(role: str) -> Callable:
    """The course notebook's own solution of the exercise behind `role` (the function a learner
    writes there): the code cell that defines it, executed on its own."""
    notebook, name = ROLES[role][1], SOLUTION_NAMES[role]
    cells = json.loads((NOTEBOOKS / f"{notebook}.ipynb").read_text())["cells"]
    sources = ("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    source = next((s for s in sources if f"def {name}(" in s), None)
    if source is None:
        raise LookupError(f"notebooks/{notebook}.ipynb defines no {name}(): was it renamed?")
    namespace = {"torch": torch}
    exec(source, namespace)
    return namespace[name]
