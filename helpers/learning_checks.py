"""Notebooks 04 and 05. The checks of the exercises that `train` can learn with: storing a
batch, the TD(0) target, the gradient step (notebook 04) and the λ-returns (notebook 05). The
loop body's check is `helpers.loop_check`; what every check shares is `helpers.exercises`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from copy import deepcopy
from types import SimpleNamespace

import torch
from tensordict import TensorDictBase
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
from torchrl.modules import QValueActor

from helpers.config import Config
from helpers.envs import STACK_KEY
from helpers.exercises import call_learner, compare, fail_check, matches, passed, same_kind
from helpers.loop import gradient_step, make_optimizer
from helpers.losses import make_loss, td0_target, td_lambda_target
from helpers.normalization import make_normalizer

# ----- notebook 04 ------------------------------------------------------------------------------
# What a stored transition must hold (besides the float pixels, rebuilt when sampling).
STORED_KEYS = (STACK_KEY, ("next", STACK_KEY), "action", ("next", "reward"))
STORED_KEYS += (("next", "terminated"), ("next", "done"))


def _rows(data: TensorDictBase) -> list[bytes]:
    """Each transition of flat `data` as bytes of its STORED_KEYS, to match transitions in
    any order."""
    parts = [data[key].reshape(data.shape[0], -1).to(torch.float64) for key in STORED_KEYS]
    return [row.numpy().tobytes() for row in torch.cat(parts, dim=1)]


def check_store_transitions(function: Callable, batch: TensorDictBase, obs_norm: dict) -> None:
    """`function(buffer, batch)` stores a collected [workers, time] batch in a TorchRL
    `TensorDictReplayBuffer` as single transitions, in any order, without the float `pixels`
    (the buffer's transform rebuilds them from the uint8 `stack` when it samples)."""
    __tracebackhide__ = True
    name = "storing transitions"
    steps = batch.numel()
    buffer = TensorDictReplayBuffer(
        storage=LazyTensorStorage(2 * steps),
        batch_size=steps,
        transform=make_normalizer(obs_norm),
    )
    batch = batch.clone()  # (the caller's stays as it was, whatever the function does)
    call_learner(name, function, buffer, batch, names=("buffer", "batch"), keys=True)
    if len(buffer) == 0:
        fail_check(name, "the buffer is still empty after your function: nothing was stored.")
    if len(buffer) != steps:
        why = (
            f" (one item per worker's row: make the {list(batch.batch_size)} batch one item "
            "per step)"
        )
        fail_check(
            name,
            f"after one batch of {list(batch.batch_size)} steps the buffer holds {len(buffer)} "
            f"items, expected {steps} transitions{why if len(buffer) == batch.shape[0] else ''}.",
        )
    stored = buffer.storage[:]
    for key in ("pixels", ("next", "pixels")):
        if key in stored.keys(include_nested=True):
            fail_check(
                name,
                f"the buffer stores the float32 {key!r} (4 times the bytes of the uint8 frames): "
                f"leave it out; the buffer's transform rebuilds it when sampling.",
            )
    for key in STORED_KEYS:
        if key not in stored.keys(include_nested=True):
            fail_check(name, f"the buffer has no {key!r}: store every key but the float pixels.")
        if stored[key].shape[1:] != batch[key].shape[2:]:
            fail_check(
                name,
                f"the stored {key!r} has shape {tuple(stored[key].shape)}, expected "
                f"{(steps, *batch[key].shape[2:])}: one row per step.",
            )
    flat = batch.reshape(-1)
    collected, kept = _rows(flat), _rows(stored)
    missing = sum((Counter(collected) - Counter(kept)).values())  # (steps can repeat exactly)
    if missing:
        fail_check(
            name,
            f"{missing} of the batch's {steps} steps are not in the buffer as they were "
            "collected (each stored transition must be one step, with its own next step).",
        )
    where = {row: i for i, row in enumerate(collected)}
    found = [where[row] for row in kept]
    sample = buffer.sample()
    reference = flat[torch.tensor([found[i] for i in sample["index"].tolist()])]
    for key in ("pixels", ("next", "pixels")):
        compare(name, sample[key], reference[key], f"sample[{key!r}]")
    passed(name)


def check_td0_target(function: Callable) -> None:
    """`function(reward, next_q, next_q_target, terminated, gamma)` of [B] rewards, [B, actions]
    next-state Q-values (trainable and target parameters) and [B] bool flags returns the
    double-DQN targets [B]."""
    __tracebackhide__ = True
    name = "double-DQN TD(0) target"
    generator = torch.Generator().manual_seed(5)
    reward = torch.rand(8, generator=generator)
    next_q = torch.randn(8, 2, generator=generator)
    # The target network disagrees with the trainable one on the best action in 6 of 8 rows,
    # so that plain DQN's max (or the networks' roles swapped) shows in most rows.
    next_q_target = torch.randn(8, 2, generator=generator).abs()
    best = next_q.argmax(-1)
    disagree = torch.arange(8) < 6
    next_q_target[torch.arange(8), best] *= torch.where(disagree, -1.0, 1.0)
    next_q_target[torch.arange(8), 1 - best] *= torch.where(disagree, 1.0, -1.0)
    terminated = torch.tensor([False, True, False, False, True, False, False, False])
    next_value = next_q_target.gather(-1, best.unsqueeze(-1)).squeeze(-1)
    expected = td0_target(reward, next_value, terminated, 0.9)
    got = call_learner(name, function, reward, next_q, next_q_target, terminated, 0.9)
    plain = td0_target(reward, next_q_target.max(-1).values, terminated, 0.9)
    if matches(got, plain):
        fail_check(
            name,
            "this is plain DQN's target, the maximum of the target network's values: in "
            "double DQN one network chooses the next action and the other one values it.",
        )
    same_kind(name, got, expected, "target")
    differ = ~torch.isclose(got.detach().float(), expected, rtol=1e-4, atol=1e-5)
    if differ.any() and torch.equal(differ, terminated):
        fail_check(
            name,
            f"right where the episode goes on, wrong in the terminated rows "
            f"{terminated.nonzero().flatten().tolist()}: look at how the bootstrap term is "
            "removed where the pole fell.",
        )
    compare(name, got, expected, "target")
    passed(name)


def _two_steps(
    name: str, step: Callable, actor: QValueActor, config: Config, sample, sgd: bool, clip: float
):
    """Two steps of `step` from a fixed state: what each returned, and the loss module after."""
    __tracebackhide__ = True
    torch.manual_seed(7)
    loss_module, target_updater = make_loss(deepcopy(actor), config, "td0")
    with torch.no_grad():  # a target that differs from the trainable parameters
        loss_module.target_value_network_params.apply_(lambda p: p.add_(0.01 * torch.randn_like(p)))
    if sgd:
        optim = torch.optim.SGD(loss_module.parameters(), lr=0.1)
    else:
        optim = make_optimizer(loss_module, config, torch.device("cpu"))
    args = (loss_module, optim, target_updater)
    returned = [call_learner(name, step, *args, sample.clone(), clip) for _ in range(2)]
    return returned, loss_module


def check_gradient_step(function: Callable, actor: QValueActor, config: Config, sample) -> None:
    """`function(loss_module, optim, target_updater, sample, max_grad_norm)` does one DQN update
    and returns (loss, grad_norm) as floats: two of them, from the same state on `sample`, must
    leave the same trainable and target parameters as `helpers.loop.gradient_step`, the step
    that `train` takes. Once with train's optimizer and clipping; once with plain SGD and a
    clip below the gradients' norm, because scaling every gradient hardly changes Adam's step
    and would not show a missing clip."""
    __tracebackhide__ = True
    name = "one gradient step"
    for sgd, clip in ((False, config.max_grad_norm), (True, 1e-3)):
        got, mine = _two_steps(name, function, actor, config, sample, sgd, clip)
        expected, reference = _two_steps(name, gradient_step, actor, config, sample, sgd, clip)
        setting = f"with {'SGD' if sgd else 'Adam'} and max_grad_norm={clip:g}"
        wrong_steps = {} if _same_params(mine, reference) else _STEP_MISTAKES
        for mistake, (step, message) in wrong_steps.items():
            if mistake == "no clip" and not sgd:  # (Adam's step hides a missing clip)
                continue
            wrong = _two_steps(name, step, actor, config, sample, sgd, clip)[1]
            if _same_params(mine, wrong):
                fail_check(name, f"{setting}, the parameters moved {message}")
        for i, ((loss, norm), (ref_loss, ref_norm)) in enumerate(zip(got, expected)):
            if not isinstance(loss, float) or not isinstance(norm, float):
                fail_check(name, "return (loss, grad_norm) as Python floats (tensor.item()).")
            for value, ref, what in ((loss, ref_loss, "loss"), (norm, ref_norm, "grad_norm")):
                what = f"{setting}, step {i + 1}'s {what}"
                compare(name, torch.tensor(value), torch.tensor(ref), what)
        for params in ("value_network_params", "target_value_network_params"):
            ours, theirs = (
                getattr(mine, params).flatten_keys("."),
                getattr(reference, params).flatten_keys("."),
            )
            for key in theirs.keys():
                what = f"{setting}, after two steps, {params}[{key!r}]"
                compare(name, ours[key].data, theirs[key].data, what)
    passed(name)


class _NoReset:
    """An optimizer whose zero_grad does nothing: each backward() adds to the last gradients."""

    def __init__(self, optim: torch.optim.Optimizer) -> None:
        self.step, self.zero_grad = optim.step, lambda set_to_none=True: None


class _TargetFirst:
    """An optimizer that moves the target network before its own step (and a target updater
    that then does nothing): the target update done too early."""

    def __init__(self, optim: torch.optim.Optimizer, target_updater) -> None:
        self.zero_grad = optim.zero_grad
        self.step = lambda: (target_updater.step(), optim.step())


# Mistakes of exercise 6 the check names: a step that makes each, and what to say of it.
_STEP_MISTAKES = {
    "no clip": (
        lambda loss, optim, target, sample, clip: gradient_step(
            loss, optim, target, sample, math.inf
        ),
        "as if the gradients were not clipped: clip them after backward() and before "
        "optim.step(), which uses them.",
    ),
    "no reset": (
        lambda loss, optim, target, sample, clip: gradient_step(
            loss, _NoReset(optim), target, sample, clip
        ),
        "as if step 2's gradients were added to step 1's: backward() accumulates into .grad, "
        "so reset them (optim.zero_grad()) once each step has used them.",
    ),
    "target first": (
        lambda loss, optim, target, sample, clip: gradient_step(
            loss, _TargetFirst(optim, target), SimpleNamespace(step=lambda: None), sample, clip
        ),
        "as if the target network moved before optim.step(): update it after, so that it "
        "follows the parameters this step learned.",
    ),
}


def _same_params(mine, other) -> bool:
    """The two loss modules' trainable parameters are equal (to float tolerance)."""
    ours = mine.value_network_params.flatten_keys(".")
    theirs = other.value_network_params.flatten_keys(".")
    return all(matches(ours[key].data, theirs[key].data) for key in theirs.keys())


# ----- notebook 05 ------------------------------------------------------------------------------
def check_lambda_returns(function: Callable) -> None:
    """`function(reward, next_value, done, terminated, gamma, lmbda)` of tensors whose last axis
    is time (one chunk [T], or a batch of chunks [B, T], as `train` calls it) returns the
    λ-returns, as TorchRL's `vec_td_lambda_return_estimate` computes them (through
    `helpers.losses.td_lambda_target`, which the course's loss uses)."""
    __tracebackhide__ = True
    name = "λ-returns"
    generator = torch.Generator().manual_seed(6)
    reward, next_value = (
        torch.rand(3, 9, generator=generator),
        torch.randn(3, 9, generator=generator),
    )
    terminated = torch.zeros(3, 9, dtype=torch.bool)
    terminated[0, 2] = terminated[2, 6] = True
    done = terminated.clone()
    done[0, 5] = done[1, 3] = True  # truncated steps: done, not terminated
    batch = (x.unsqueeze(-1) for x in (reward, next_value, done, terminated))  # [B, T, 1]
    expected = td_lambda_target(*batch, 0.9, 0.7).squeeze(-1)
    inputs = {"reward": reward, "next_value": next_value, "done": done, "terminated": terminated}
    # One chunk first, where the recursion is easiest to get right and its errors to read
    chunk = {key: value[0].clone() for key, value in inputs.items()}
    got = call_learner(name, function, *chunk.values(), 0.9, 0.7, names=tuple(chunk))
    same_kind(name, got, expected[0], "returns")
    differ = ~torch.isclose(got.detach(), expected[0], rtol=1e-4, atol=1e-5)
    if differ.any():
        t = int(differ.nonzero()[-1])  # the latest: the recursion carries an error backwards
        kind = "terminated" if chunk["terminated"][t] else "truncated" if chunk["done"][t] else ""
        step = f"an episode's last step, {kind}" if kind else "inside an episode"
        step = "the chunk's last step" if t == len(differ) - 1 and not kind else step
        fail_check(
            name,
            f"on a chunk of {len(differ)} steps with done = "
            f"{chunk['done'].int().tolist()} and terminated = "
            f"{chunk['terminated'].int().tolist()}, returns[{t}] is {got[t].item():.6g}, "
            f"expected {expected[0][t].item():.6g}: step {t} is {step} "
            f"({int(differ.sum())} of {len(differ)} values differ).",
        )
    try:
        got = call_learner(name, function, *inputs.values(), 0.9, 0.7, names=tuple(inputs))
    except RuntimeError as err:
        if "ambiguous" not in str(err):
            raise
        fail_check(
            name,
            "right for one chunk, but train() gives a batch of chunks [B, T] at once, and an "
            "`if` on one step's flag cannot decide for all chunks: each chunk needs its own "
            "choice at each step (Hint 2 names the tools).",
        )
    compare(name, got, expected, "returns of a batch of chunks [B, T]")
    passed(name)
