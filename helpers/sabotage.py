"""No notebook teaches it: notebook 07's "find the bug" trains with these faults. Faults planted on purpose (`Config.sabotage`).

Each fault is one a DQN's author can make by accident. The course trains with none of them; a
run with `--set sabotage=NAME` plants one, so that its curves can be read for the fault's
signature. They act here, at the two points where data enters the learning, and nowhere else:
the batch the collector hands over (`sabotage_batch`) and the sample a gradient step learns
from (`sabotage_sample`).
"""

from __future__ import annotations

from tensordict import TensorDictBase

# What each fault does, in the words notebook 07 uses.
FAULTS = {
    "ignore-terminated": "the target bootstraps through the pole's fall, as if the episode went on",
    "next-action": "each step is stored with the action of the step after it",
}


def sabotage_batch(data: TensorDictBase, fault: str) -> TensorDictBase:
    """The collected batch as the replay memory stores it, with `fault` planted.

    "next-action": step t of each environment is stored with the action taken at step t + 1
    (the last step of the batch keeps its own).
    """
    if fault == "next-action":
        data = data.clone()
        action = data["action"]  # [environments, time, actions]: time is the last batch dim
        action[..., :-1, :] = action[..., 1:, :].clone()
    return data


def sabotage_sample(sample: TensorDictBase, fault: str) -> TensorDictBase:
    """A replayed sample as the loss sees it, with `fault` planted.

    "ignore-terminated": no step counts as terminated, so the target adds gamma * V(s') after
    the pole has fallen as after any other step (`done` still ends a lambda-return's chunk).
    """
    if fault == "ignore-terminated":
        sample["next", "terminated"] = sample["next", "terminated"].clone().zero_()
    return sample
