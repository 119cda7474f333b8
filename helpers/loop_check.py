"""Notebook 04. Exercise 7's check: the training loop's body, judged by the calls it makes and their order.

The learner's `loop_body(data, store, sample, update, egreedy, collector, n_optim, learning)`
is run with stand-ins that record every call (a store, a sampler, an update, epsilon and the
collector), on a real collected-batch shape, and its calls are compared with the course's
`helpers.loop.loop_body`: store first, then `n_optim` updates each on the sample drawn just
before it (none before learning), then epsilon by the batch's frames and the collector's
weights, once each.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tensordict import TensorDict

from helpers.exercises import call_learner, fail_check, passed


class _Calls:
    """Stand-ins for the loop's parts, recording what the body does with them."""

    def __init__(self) -> None:
        self.log: list[tuple] = []
        self.results: list[tuple[float, float]] = []
        self.samples = 0

    def store(self, data) -> None:
        self.log.append(("store", data))

    def sample(self) -> str:
        self.samples += 1
        token = f"sample {self.samples}"
        self.log.append(("sample", token))
        return token

    def update(self, sample) -> tuple[float, float]:
        self.log.append(("update", sample))
        self.results.append((0.5 / len(self.log), 1.0))  # (a different pair each time)
        return self.results[-1]

    def step(self, frames: int = 1) -> None:  # (egreedy.step)
        self.log.append(("epsilon", frames))

    def update_policy_weights_(self) -> None:  # (collector.update_policy_weights_)
        self.log.append(("weights",))


def _one_turn(name: str, function: Callable, n_optim: int, learning: bool) -> None:
    __tracebackhide__ = True
    data = TensorDict({"action": torch.zeros(2, 16, 2)}, [2, 16])  # [workers, time]: 32 frames
    calls = _Calls()
    parts = (calls.store, calls.sample, calls.update, calls, calls)
    got = call_learner(name, function, data, *parts, n_optim, learning)
    setting = f"(n_optim={n_optim}, learning={learning})"
    kinds = [c[0] for c in calls.log]
    stores = [c for c in calls.log if c[0] == "store"]
    if len(stores) != 1 or stores[0][1] is not data:
        fail_check(
            name, f"store the collected batch `data` once per turn {setting}: {len(stores)} calls."
        )
    if kinds[0] != "store":
        fail_check(name, f"store the batch first {setting}: the first call was {kinds[0]}.")
    updates = kinds.count("update")
    if not learning and (updates or calls.samples):
        fail_check(
            name,
            f"before `learning` is True no update and no sample {setting}: the memory does not "
            f"hold init_random_frames yet; yours sampled {calls.samples} times.",
        )
    if learning and updates != n_optim:
        fail_check(name, f"take n_optim updates once learning {setting}, yours took {updates}.")
    if calls.samples != updates:
        fail_check(
            name,
            f"draw one sample per update {setting}: yours drew {calls.samples} for {updates}.",
        )
    for i, call in enumerate(calls.log):
        if call[0] == "update" and calls.log[i - 1] != ("sample", call[1]):
            fail_check(
                name,
                f"each update learns from the sample drawn just before it {setting}: update "
                f"{kinds[: i + 1].count('update')} got {call[1]!r}.",
            )
    epsilon = [c for c in calls.log if c[0] == "epsilon"]
    if len(epsilon) != 1 or epsilon[0][1] != data.numel():
        fail_check(
            name,
            f"epsilon goes down once per turn by the batch's frames, {data.numel()} here "
            f"{setting}: yours called egreedy.step{tuple(c[1] for c in epsilon)}.",
        )
    if kinds.count("weights") != 1:
        fail_check(name, f"give the collector the new weights once per turn {setting}.")
    last_update = max((i for i, k in enumerate(kinds) if k == "update"), default=0)
    late = [k for k in kinds[: last_update + 1] if k in ("epsilon", "weights")]
    if late:
        why = {
            "epsilon": "the loop's order is store, the updates, then ε and the weights",
            "weights": "the collector must play the next batch with what this turn learned",
        }[late[0]]
        what = "epsilon stepped" if late[0] == "epsilon" else "the weights"
        fail_check(name, f"{what} before the last update {setting}: {why}.")
    expected = calls.results
    if not isinstance(got, list) or got != expected:
        fail_check(
            name,
            f"return a list of what each update returned, in order {setting} (the log "
            f"reads the last one): expected {expected}, got {got!r}.",
        )


def check_loop_body(function: Callable) -> None:
    """`function(data, store, sample, update, egreedy, collector, n_optim, learning)` makes the
    calls of `helpers.loop.loop_body`, in its order, and returns what the updates returned."""
    __tracebackhide__ = True
    name = "the loop body"
    for n_optim, learning in ((3, True), (1, True), (2, False)):
        _one_turn(name, function, n_optim, learning)
    passed(name)
