"""Notebooks 02 to 05. The exercises' checks: each runs a learner's function on fixed inputs, compares what it
returns with the course's reference, and says in one line what is right or what is wrong. Here:
what every check shares, and the checks of notebooks 02 and 03 (those of 04 and 05 are in
`helpers.learning_checks` and `helpers.loop_check`).

A check prints "✓ ..." when the function is right and raises `CheckFailed` otherwise, naming the
first thing that differs: the type, the shape, the dtype, or a value and its index. A function
left as the exercise copy has it (`raise NotImplementedError()`) is "not written yet".
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tensordict import TensorDictBase

from helpers.normalization import NORM_KEEP_DIMS, NORM_REDUCE_DIMS


class CheckFailed(AssertionError):
    """A learner's function that does not (yet) give the reference's result."""


def fail_check(exercise: str, message: str) -> None:
    __tracebackhide__ = True  # IPython shows the message, not the checker's insides
    raise CheckFailed(f"✗ {exercise}: {message}")


def call_learner(
    exercise: str, function: Callable, *args: object, names: tuple[str, ...] = (), keys=False
) -> object:
    """The learner's function applied to `args`; a blank one is reported as such, and so is
    one that changes a tensor argument in place (or, with `keys`, a TensorDict's keys);
    `names` name the arguments in that message."""
    __tracebackhide__ = True
    kept = [(i, a.clone()) for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
    if keys:
        kept += [(i, a.clone(False)) for i, a in enumerate(args) if isinstance(a, TensorDictBase)]
    try:
        returned = function(*args)
    except NotImplementedError as err:
        # Only the blank's own bare `raise NotImplementedError()`: torch raises subclasses of
        # it (for `1 - bool_tensor`, say), which are the learner's to see.
        if type(err) is not NotImplementedError or err.args:
            raise
        fail_check(
            exercise,
            f"not written yet: replace `raise NotImplementedError()` in {function.__name__}.",
        )
    for i, before in kept:
        after = args[i]
        changed = (
            not torch.equal(after, before)
            if isinstance(before, torch.Tensor)
            else set(after.keys(True)) != set(before.keys(True))
        )
        if changed:
            what = f"`{names[i]}`" if i < len(names) else f"argument {i + 1}"
            fail_check(
                exercise,
                f"your function changed its input {what} in place: write the result into a "
                "tensor of its own (the caller still needs its input).",
            )
    return returned


def same_kind(exercise: str, got: object, expected: torch.Tensor, what: str) -> None:
    """Fail, saying what differs, unless `got` is a tensor of `expected`'s shape and dtype."""
    __tracebackhide__ = True
    if not isinstance(got, torch.Tensor):
        fail_check(exercise, f"{what} is a {type(got).__name__}, expected a torch.Tensor.")
    if got.shape != expected.shape:
        fail_check(
            exercise, f"{what} has shape {tuple(got.shape)}, expected {tuple(expected.shape)}."
        )
    if got.dtype != expected.dtype:
        fail_check(exercise, f"{what} has dtype {got.dtype}, expected {expected.dtype}.")


def matches(got: object, expected: torch.Tensor) -> bool:
    """`got` is a tensor of `expected`'s shape with its values (to float tolerance): used to
    name a known wrong answer before `compare` reports the first difference."""
    return (
        isinstance(got, torch.Tensor)
        and got.shape == expected.shape
        and torch.allclose(got.detach().float(), expected, rtol=1e-4, atol=1e-5)
    )


def compare(exercise: str, got: object, expected: torch.Tensor, what: str = "the result") -> None:
    """Fail, saying what differs, unless `got` is a tensor equal to `expected` (to float tolerance)."""
    __tracebackhide__ = True
    same_kind(exercise, got, expected, what)
    if expected.dtype.is_floating_point:
        close = torch.isclose(got.detach(), expected, rtol=1e-4, atol=1e-5)
    else:
        close = got == expected
    if not bool(close.all()) and got.dim() == 0:
        fail_check(exercise, f"{what} is {got.item():.6g}, expected {expected.item():.6g}.")
    if not bool(close.all()):
        index = tuple(int(i) for i in (~close).nonzero()[0])
        wrong, total = int((~close).sum()), close.numel()
        indexable = what.split()[-1].isidentifier()  # "with eps = 0, action" -> "...action[0]"
        where = f"{what}{list(index)}" if indexable else f"{what}, at {list(index)},"
        fail_check(
            exercise,
            f"{where} is {got[index].item():.6g}, expected {expected[index].item():.6g} "
            f"({wrong} of {total} values differ).",
        )


def passed(exercise: str) -> None:
    print(f"✓ {exercise}: correct.")


# ----- notebook 02 ------------------------------------------------------------------------------
def check_channel_stats(function: Callable) -> None:
    """`function(frames)` of frames [N, 4, H, W] returns (loc, scale), each [4, 1, 1]: the mean
    and standard deviation of each channel of the stack, as `ObservationNorm.init_stats` with
    `reduce_dim=NORM_REDUCE_DIMS`, `keep_dims=NORM_KEEP_DIMS` computes them."""
    __tracebackhide__ = True
    name = "per-channel normalization constants"
    # Few values per channel (6 x 3 x 3 = 54), so that dividing by n instead of n - 1 shows.
    frames = torch.rand(6, 4, 3, 3, generator=torch.Generator().manual_seed(2))
    frames[:, 1] *= 0.5  # channels with other statistics, so a mix-up shows
    out = call_learner(name, function, frames)
    if not isinstance(out, tuple) or len(out) != 2:
        fail_check(name, f"return a tuple (loc, scale), not a {type(out).__name__}.")
    dims = list(NORM_REDUCE_DIMS)
    loc = frames.mean(dim=dims, keepdim=True).squeeze(0)
    scale = frames.std(dim=dims, keepdim=True).squeeze(0)
    assert loc.shape[-len(NORM_KEEP_DIMS) :] == (1, 1)
    for got, want, what in ((out[0], loc, "loc"), (out[1], scale, "scale")):
        if isinstance(got, torch.Tensor) and got.shape != want.shape and got.numel() == 4:
            if matches(got.reshape(want.shape), want):
                fail_check(
                    name,
                    f"{what} has shape {tuple(got.shape)}, expected {tuple(want.shape)}: the "
                    "right values, but keep the reduced dimensions, so that it broadcasts over "
                    "a stack [4, H, W].",
                )
    compare(name, out[0], loc, "loc")
    population = frames.std(dim=dims, keepdim=True, correction=0).squeeze(0)
    if matches(out[1], population):
        fail_check(
            name,
            "scale is the population standard deviation (dividing by n); init_stats "
            "uses the sample one (dividing by n - 1), torch.std's default.",
        )
    compare(name, out[1], scale, "scale")
    passed(name)


# ----- notebook 03 ------------------------------------------------------------------------------
def check_dueling(function: Callable) -> None:
    """`function(value, advantage)` of V [B, 1] and A [B, actions] returns Q [B, actions]."""
    __tracebackhide__ = True
    name = "dueling combination"
    inputs = torch.randn(6, 4, generator=torch.Generator().manual_seed(3))
    value, advantage = inputs[:, :1].clone(), inputs[:, 1:].clone()  # V [6, 1], A [6, 3]
    compare(
        name,
        call_learner(name, function, value, advantage),
        value + advantage - advantage.mean(-1, keepdim=True),
        "Q",
    )
    passed(name)


def check_epsilon_greedy(function: Callable) -> None:
    """`function(greedy, eps, num_actions)` of greedy action indices [B] returns indices [B]:
    each a uniformly random action with probability eps, else the greedy one."""
    __tracebackhide__ = True
    name = "epsilon-greedy choice"
    torch.manual_seed(4)
    n, actions_n = 30_000, 3
    greedy = torch.randint(0, actions_n, (n,))
    compare(
        name, call_learner(name, function, greedy, 0.0, actions_n), greedy, "with eps = 0, action"
    )

    def choose(greedy: torch.Tensor, eps: float) -> torch.Tensor:
        __tracebackhide__ = True
        actions = call_learner(name, function, greedy, eps, actions_n)
        same_kind(name, actions, greedy, f"the result with eps = {eps}")
        if actions.min() < 0 or actions.max() >= actions_n:
            fail_check(name, f"with eps = {eps} some actions are outside 0..{actions_n - 1}.")
        return actions

    for eps in (1.0, 0.3):
        actions = choose(greedy, eps)
        changed = (actions != greedy).float().mean().item()
        expected = eps * 2 / 3  # a random action is the greedy one a third of the time
        if abs(changed - expected) > 0.02:
            fail_check(
                name,
                f"with eps = {eps}, {changed:.0%} of the actions differ from the greedy ones; "
                f"expected about {expected:.0%} (with probability eps, a uniformly random action, "
                "drawn for each state on its own).",
            )
        # Every greedy action 0: each random action must be any of the actions, equally
        # often, and drawn for each state on its own.
        shares = torch.bincount(choose(torch.zeros_like(greedy), eps), minlength=actions_n) / n
        expected = [eps / actions_n + (1 - eps) * (a == 0) for a in range(actions_n)]
        if max(abs(share - e) for share, e in zip(shares.tolist(), expected)) > 0.02:
            fail_check(
                name,
                f"with eps = {eps} and every greedy action 0, the actions are chosen "
                f"{', '.join(f'{x:.0%}' for x in shares.tolist())} of the time, expected about "
                f"{', '.join(f'{x:.0%}' for x in expected)}: each exploring state needs its "
                f"own action, drawn uniformly from all {actions_n}.",
            )
    passed(name)
