"""The eight checks against wrong solutions a learner could plausibly write, each of which must
be caught with its own message, and against correct variants, which must pass."""

import pytest
import torch

from helpers import exercises, learning_checks
from helpers.loop_check import check_loop_body

STORE_LEAVE_OUT = ("pixels", ("next", "pixels"))
STD = {"dim": (0, 2, 3)}


def stats(loc, scale):
    return loc.view(-1, 1, 1), scale.view(-1, 1, 1)


def step(
    loss_module,
    optim,
    target_updater,
    sample,
    clip,
    *,
    zero_first=False,
    clip_it=True,
    update=True,
    zero=True,
    floats=True,
):
    """A gradient step with one of its parts left out or moved."""
    if zero_first:
        optim.zero_grad()
    loss = loss_module(sample)["loss"]
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(loss_module.parameters(), clip if clip_it else 1e9)
    optim.step()
    if zero and not zero_first:
        optim.zero_grad()
    if update:
        target_updater.step()
    return (loss.item(), norm.item()) if floats else (loss, norm)


def target_before_the_step(loss_module, optim, target_updater, sample, clip):
    loss = loss_module(sample)["loss"]
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(loss_module.parameters(), clip)
    target_updater.step()
    optim.step()
    optim.zero_grad()
    return loss.item(), norm.item()


def clip_after_the_step(loss_module, optim, target_updater, sample, clip):
    loss = loss_module(sample)["loss"]
    loss.backward()
    optim.step()
    norm = torch.nn.utils.clip_grad_norm_(loss_module.parameters(), clip)
    optim.zero_grad()
    target_updater.step()
    return loss.item(), norm.item()


def returns_loop(
    reward,
    next_value,
    done,
    terminated,
    gamma,
    lmbda,
    *,
    out=None,
    use_done=True,
    terminal=None,
    mix=None,
):
    """The backward λ-return recursion, with one of its parts changed."""
    returns = torch.zeros_like(reward) if out is None else out
    terminal = terminated if terminal is None else terminal
    steps = reward.shape[-1]
    for t in reversed(range(steps)):
        bootstrap = next_value[..., t]
        if t + 1 < steps:
            a, b = mix or (1 - lmbda, lmbda)
            mixed = a * next_value[..., t] + b * returns[..., t + 1]
            bootstrap = torch.where(done[..., t] & use_done, next_value[..., t], mixed)
        returns[..., t] = reward[..., t] + gamma * (1 - terminal[..., t].float()) * bootstrap
    return returns


def returns_one_chunk(reward, next_value, done, terminated, gamma, lmbda):
    """Right for one chunk [T], written with an `if` that a batch of chunks cannot answer."""
    returns = torch.zeros_like(reward)
    for t in reversed(range(len(reward))):
        bootstrap = next_value[t]
        if not done[t] and t + 1 < len(reward):
            bootstrap = (1 - lmbda) * next_value[t] + lmbda * returns[t + 1]
        returns[t] = reward[t] + gamma * (1 - terminated[t].float()) * bootstrap
    return returns


def returns_chunk_by_chunk(reward, next_value, done, terminated, gamma, lmbda):
    """Right for a batch too: the one-chunk recursion applied to each row in turn."""
    if reward.dim() == 1:
        return returns_one_chunk(reward, next_value, done, terminated, gamma, lmbda)
    rows = zip(reward, next_value, done, terminated)
    return torch.stack([returns_one_chunk(*row, gamma, lmbda) for row in rows])


def body(
    data,
    store,
    sample,
    update,
    egreedy,
    collector,
    n_optim,
    learning,
    *,
    store_first=True,
    gate=True,
    updates=None,
    frames=None,
    weights_first=False,
    one_sample=False,
    last_only=False,
):
    """The loop's body for one batch, with one of its parts changed or moved."""
    if store_first:
        store(data)
    if weights_first:
        collector.update_policy_weights_()
    results = []
    if learning or not gate:
        drawn = sample() if one_sample else None
        for _ in range(n_optim if updates is None else updates):
            results.append(update(drawn if one_sample else sample()))
    if not store_first:
        store(data)
    egreedy.step(data.numel() if frames is None else frames)
    if not weights_first:
        collector.update_policy_weights_()
    return results[-1] if last_only else results


def epsilon_first(data, store, sample, update, egreedy, collector, n_optim, learning):
    """Epsilon stepped before the updates (the weights after them)."""
    store(data)
    egreedy.step(data.numel())
    results = [update(sample()) for _ in range(n_optim)] if learning else []
    collector.update_policy_weights_()
    return results


def body_weights_then_epsilon(data, store, sample, update, egreedy, collector, n_optim, learning):
    """Right: the learning, then the weights and epsilon in the other order, with a for loop."""
    store(data)
    results = []
    if learning:
        for _ in range(n_optim):
            results.append(update(sample()))
    collector.update_policy_weights_()
    egreedy.step(data.numel())
    return results


def one_random_action_for_all(greedy, eps, n):
    return torch.where(torch.rand(greedy.shape) < eps, torch.randint(0, n, ()), greedy)


def with_random(random):
    """An ε-greedy choice whose random actions come from `random(greedy, n)`."""
    return lambda greedy, eps, n: torch.where(
        torch.rand(greedy.shape) < eps, random(greedy, n), greedy
    )


def not_flat_in_time_order(buffer, batch):
    buffer.extend(batch.transpose(0, 1).reshape(-1).exclude(*STORE_LEAVE_OUT))


def worker_by_worker(buffer, batch):
    for row in batch:
        buffer.extend(row.exclude(*STORE_LEAVE_OUT))


def next_frames_from_the_step_itself(buffer, batch):
    flat = batch.reshape(-1).exclude(*STORE_LEAVE_OUT)
    flat["next", "stack"] = flat["stack"].clone()
    buffer.extend(flat)


def first_worker_twice(buffer, batch):
    first = batch[0].exclude(*STORE_LEAVE_OUT)
    buffer.extend(first)
    buffer.extend(first)


def double(reward, next_q, next_q_target, terminated, gamma, chooser="next_q", mask=True):
    choose, value = (next_q, next_q_target) if chooser == "next_q" else (next_q_target, next_q)
    best = value.gather(-1, choose.argmax(-1, keepdim=True)).squeeze(-1)
    return reward + gamma * ((~terminated).float() if mask else 1.0) * best


# (exercise, the wrong solution, what the message must say)
WRONG = {
    "population std": (
        "channel_stats",
        lambda f: stats(f.mean(**STD), f.std(**STD, correction=0)),
        "population standard deviation",
    ),
    "one mean for all channels": (
        "channel_stats",
        lambda f: (f.mean().expand(4, 1, 1), f.std(**STD).view(4, 1, 1)),
        r"loc\[0, 0, 0\] is",
    ),
    "statistics per frame": (
        "channel_stats",
        lambda f: (f.mean(dim=(1, 2, 3)), f.std(dim=(1, 2, 3))),
        r"loc has shape \(6,\), expected \(4, 1, 1\)",
    ),
    "a list": ("channel_stats", lambda f: [f.mean(**STD), f.std(**STD)], "return a tuple"),
    "reduced dimensions dropped": (
        "channel_stats",
        lambda f: (f.mean(**STD), f.std(**STD)),
        r"loc has shape \(4,\), expected \(4, 1, 1\): the right values, but keep",
    ),
    "loc and scale swapped": (
        "channel_stats",
        lambda f: stats(f.std(**STD), f.mean(**STD)),
        r"loc\[0, 0, 0\] is",
    ),
    "mean over the batch": (
        "dueling",
        lambda v, a: v + a - a.mean(),
        r"Q\[0, 0\] is",
    ),
    "no mean": ("dueling", lambda v, a: v + a, r"Q\[0, 0\] is"),
    "max instead of mean": (
        "dueling",
        lambda v, a: v + a - a.max(-1, keepdim=True).values,
        r"Q\[0, 0\] is",
    ),
    "never the last action": (
        "epsilon_greedy",
        with_random(lambda g, n: torch.randint(0, n - 1, g.shape)),
        r"the actions are chosen 50%, 50%, 0% of the time, expected about 33%, 33%, 33%",
    ),
    "one random action for the batch": (
        "epsilon_greedy",
        one_random_action_for_all,
        "each exploring state needs its own action",
    ),
    "not uniform": (
        "epsilon_greedy",
        with_random(lambda g, n: torch.multinomial(torch.tensor([0.5, 0.25, 0.25]), len(g), True)),
        r"the actions are chosen 50%, 25%, 25% of the time",
    ),
    "never the greedy one": (
        "epsilon_greedy",
        with_random(lambda g, n: (g + torch.randint(1, n, g.shape)) % n),
        r"differ from the greedy ones; expected about",
    ),
    "explores with probability 1 - eps": (
        "epsilon_greedy",
        lambda g, eps, n: torch.where(torch.rand(g.shape) > eps, torch.randint(0, n, g.shape), g),
        r"with eps = 0, action\[0\] is",
    ),
    "one coin for the batch": (
        "epsilon_greedy",
        lambda g, eps, n: torch.randint(0, n, g.shape) if torch.rand(()) < eps else g,
        r"with eps = 0.3, (0|67)% of the actions differ",
    ),
    "float actions": (
        "epsilon_greedy",
        lambda g, eps, n: with_random(lambda g, n: torch.randint(0, n, g.shape))(g, eps, n).float(),
        "expected torch.int64",
    ),
    "nothing stored": ("store_transitions", lambda buffer, batch: None, "still empty"),
    "not flattened": (
        "store_transitions",
        lambda buffer, batch: buffer.extend(batch.exclude(*STORE_LEAVE_OUT)),
        r"holds 2 items, expected 32 transitions \(one item per worker's row: make the \[2, 16\]",
    ),
    "float pixels kept": (
        "store_transitions",
        lambda buffer, batch: buffer.extend(batch.reshape(-1)),
        "stores the float32 'pixels'",
    ),
    "frames only": (
        "store_transitions",
        lambda buffer, batch: buffer.extend(batch.reshape(-1).select("stack", ("next", "stack"))),
        "the buffer has no 'action'",
    ),
    "no terminated flag": (
        "store_transitions",
        lambda buffer, batch: buffer.extend(
            batch.reshape(-1).exclude(*STORE_LEAVE_OUT, ("next", "terminated"))
        ),
        r"the buffer has no \('next', 'terminated'\)",
    ),
    "next frames of the step itself": (
        "store_transitions",
        next_frames_from_the_step_itself,
        r"\d+ of the batch's 32 steps are not in the buffer",
    ),
    "the first worker twice": (
        "store_transitions",
        first_worker_twice,
        r"1\d of the batch's 32 steps are not in the buffer",
    ),
    "plain DQN's max": (
        "td0_target",
        lambda r, q, qt, term, g: r + g * (~term).float() * qt.max(-1).values,
        "plain DQN's target",
    ),
    "networks swapped": (
        "td0_target",
        lambda r, q, qt, term, g: double(r, q, qt, term, g, chooser="next_q_target"),
        r"target\[0\] is",
    ),
    "bootstraps past the end": (
        "td0_target",
        lambda r, q, qt, term, g: double(r, q, qt, term, g, mask=False),
        r"wrong in the terminated rows \[1, 4\]: look at how the bootstrap term is removed",
    ),
    "no discount": (
        "td0_target",
        lambda r, q, qt, term, g: double(r, q, qt, term, 1.0),
        r"target\[0\] is",
    ),
    "a column of targets": (
        "td0_target",
        lambda r, q, qt, term, g: double(r, q, qt, term, g).unsqueeze(-1),
        r"target has shape \(8, 1\), expected \(8,\)",
    ),
    "no clipping": (
        "gradient_step",
        lambda *a: step(*a, clip_it=False),
        r"with SGD and max_grad_norm=0.001, the parameters moved as if the gradients were not clipped",
    ),
    "no target update": (
        "gradient_step",
        lambda *a: step(*a, update=False),
        r"with Adam and max_grad_norm=10, step 2's loss is",
    ),
    "gradients never reset": (
        "gradient_step",
        lambda *a: step(*a, zero=False),
        r"with Adam and max_grad_norm=10, the parameters moved as if step 2's gradients were added",
    ),
    "target updated before the step": (
        "gradient_step",
        target_before_the_step,
        r"with Adam and max_grad_norm=10, the parameters moved as if the target network moved before",
    ),
    "clips after the step": (
        "gradient_step",
        clip_after_the_step,
        r"with SGD and max_grad_norm=0.001, the parameters moved as if the gradients were not clipped",
    ),
    "tensors returned": (
        "gradient_step",
        lambda *a: step(*a, floats=False),
        r"as Python floats",
    ),
    "overwrites the rewards": (
        "lambda_returns",
        lambda r, v, d, term, g, lm: returns_loop(r, v, d, term, g, lm, out=r),
        "changed its input `reward` in place",
    ),
    "ignores episode ends": (
        "lambda_returns",
        lambda r, v, d, term, g, lm: returns_loop(r, v, d, term, g, lm, use_done=False),
        r"returns\[5\] is .*step 5 is an episode.s last step, truncated",
    ),
    "no bootstrap at a truncation": (
        "lambda_returns",
        lambda r, v, d, term, g, lm: returns_loop(r, v, d, term, g, lm, terminal=d),
        r"returns\[5\] is .*step 5 is an episode.s last step, truncated",
    ),
    "λ and 1 - λ swapped": (
        "lambda_returns",
        lambda r, v, d, term, g, lm: returns_loop(r, v, d, term, g, lm, mix=(lm, 1 - lm)),
        r"returns\[7\] is .*step 7 is inside an episode",
    ),
    "dueling: advantage centred in place": (
        "dueling",
        lambda v, a: v + a.sub_(a.mean(dim=1, keepdim=True)),
        "changed its input argument 2 in place",
    ),
    "epsilon-greedy: greedy actions overwritten": (
        "epsilon_greedy",
        lambda g, eps, n: g.copy_(
            torch.where(torch.rand(g.shape) < eps, torch.randint(0, n, g.shape), g)
        ),
        "changed its input argument 1 in place",
    ),
    "store: pixels deleted from the batch": (
        "store_transitions",
        lambda buffer, batch: (
            batch.del_("pixels"),
            buffer.extend(batch.reshape(-1).exclude(("next", "pixels"))),
        ),
        "changed its input `batch` in place",
    ),
    "loop body: sampled before storing": (
        "loop_body",
        lambda *a: body(*a, store_first=False),
        "store the batch first",
    ),
    "loop body: learning before init_random_frames": (
        "loop_body",
        lambda *a: body(*a, gate=False),
        "before `learning` is True no update and no sample",
    ),
    "loop body: one update whatever n_optim": (
        "loop_body",
        lambda *a: body(*a, updates=1),
        r"take n_optim updates once learning \(n_optim=3",
    ),
    "loop body: epsilon by one step": (
        "loop_body",
        lambda *a: body(*a, frames=1),
        r"by the batch's frames, 32 here .*egreedy.step\(1,\)",
    ),
    "loop body: weights before the updates": (
        "loop_body",
        lambda *a: body(*a, weights_first=True),
        "the weights before the last update",
    ),
    "loop body: epsilon before the updates": (
        "loop_body",
        epsilon_first,
        "epsilon stepped before the last update .*: the loop's order is store, the updates",
    ),
    "loop body: one sample for every update": (
        "loop_body",
        lambda *a: body(*a, one_sample=True),
        r"draw one sample per update \(n_optim=3, learning=True\): yours drew 1 for 3",
    ),
    "loop body: one sample too many": (
        "loop_body",
        lambda d, store, sample, *a: body(d, store, lambda: (sample(), sample())[1], *a),
        "draw one sample per update",
    ),
    "loop body: returns the last update only": (
        "loop_body",
        lambda *a: body(*a, last_only=True),
        "return a list of what each update returned",
    ),
    "one chunk only (an if on done)": (
        "lambda_returns",
        returns_one_chunk,
        r"right for one chunk, but train\(\) gives a batch of chunks \[B, T\]",
    ),
}

RIGHT = {
    "statistics from a reshape": (
        "channel_stats",
        lambda f: stats(
            f.transpose(0, 1).reshape(4, -1).mean(1), f.transpose(0, 1).reshape(4, -1).std(1)
        ),
    ),
    "std from the variance": (
        "channel_stats",
        lambda f: stats(f.mean(**STD), f.var(**STD).sqrt()),
    ),
    "the mean subtracted first": (
        "dueling",
        lambda v, a: v + (a - a.mean(dim=1, keepdim=True)),
    ),
    "random actions from multinomial": (
        "epsilon_greedy",
        with_random(lambda g, n: torch.multinomial(torch.ones(n), len(g), True)),
    ),
    "random actions from a Bernoulli mask": (
        "epsilon_greedy",
        lambda g, eps, n: torch.where(
            torch.bernoulli(torch.full(g.shape, eps)).bool(), torch.randint(0, n, g.shape), g
        ),
    ),
    "in time order": ("store_transitions", not_flat_in_time_order),
    "worker by worker": ("store_transitions", worker_by_worker),
    "the needed keys only": (
        "store_transitions",
        lambda buffer, batch: buffer.extend(batch.reshape(-1).select(*learning_checks.STORED_KEYS)),
    ),
    "terminal rows with where": (
        "td0_target",
        lambda r, q, qt, term, g: torch.where(term, r, double(r, q, qt, term, g)),
    ),
    "zero_grad first": ("gradient_step", lambda *a: step(*a, zero_first=True)),
    "a clone as the output": (
        "lambda_returns",
        lambda r, v, d, term, g, lm: returns_loop(r, v, d, term, g, lm, out=r.clone()),
    ),
    "chunk by chunk": ("lambda_returns", returns_chunk_by_chunk),
    "loop body: weights, then epsilon": ("loop_body", body_weights_then_epsilon),
}


def run(exercise: str, function, inputs: dict) -> None:
    module = exercises if hasattr(exercises, f"check_{exercise}") else learning_checks
    check = check_loop_body if exercise == "loop_body" else getattr(module, f"check_{exercise}")
    if exercise == "store_transitions":
        check(function, inputs["batch"], inputs["obs_norm"])
    elif exercise == "gradient_step":
        check(function, inputs["model"].actor, inputs["config"], inputs["sample"])
    else:
        check(function)


@pytest.mark.parametrize("case", WRONG)
def test_a_wrong_solution_is_caught_with_its_message(case, exercise_inputs):
    exercise, function, message = WRONG[case]
    with pytest.raises(exercises.CheckFailed, match=message):
        run(exercise, function, exercise_inputs)


@pytest.mark.parametrize("case", RIGHT)
def test_a_correct_variant_passes(case, exercise_inputs, capsys):
    exercise, function = RIGHT[case]
    run(exercise, function, exercise_inputs)
    assert capsys.readouterr().out.strip().endswith(": correct.")
