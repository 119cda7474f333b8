"""Notebooks 04 and 05. Loss utils: DQN losses with TD(0) and TD(lambda) targets (torchrl's DQNLoss) and the soft target update.

Notebooks 04 and 05 write these targets by hand and check them against the versions here.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.modules import QValueActor
from torchrl.objectives import DQNLoss, SoftUpdate, ValueEstimators
from torchrl.objectives.utils import distance_loss
from torchrl.objectives.value.functional import vec_td_lambda_return_estimate

from helpers.config import TARGETS, Config

GAMMA_LAMBDA_MIN = 1e-7  # below this torchrl's vectorized TD(lambda) has an empty filter
# In a sample of chunks [B, T, 1]: step t's next observation is step t + 1's observation (the
# compact replay memory says so where it is true: helpers.frame_replay).
FOLLOWS_KEY = "next_follows"


def check_target(target: str) -> str:
    """Return `target` if it is one of TARGETS, else raise a ValueError that lists them."""
    if target not in TARGETS:
        raise ValueError(f"Unknown target {target!r}: choose one of {', '.join(TARGETS)}.")
    return target


def td0_target(
    reward: torch.Tensor, next_value: torch.Tensor, terminated: torch.Tensor, gamma: float
) -> torch.Tensor:
    """One-step target r + gamma * V(s'), where V(s') counts only if the episode did not terminate.

    A truncated step (CartPole's 500-step limit) still bootstraps: the pole was up.
    """
    return reward + gamma * next_value * (~terminated.bool()).to(next_value.dtype)


def td_lambda_target(
    reward: torch.Tensor,
    next_value: torch.Tensor,
    done: torch.Tensor,
    terminated: torch.Tensor,
    gamma: float,
    lmbda: float,
) -> torch.Tensor:
    """TD(lambda) returns of [B, T, 1] chunks: the time axis is -2, `done` cuts the recursion.

    With gamma * lmbda below 1e-7 the lambda-return is the TD(0) target; torchrl's vectorized
    version drops every term of its filter there and fails, so that case uses `td0_target`.
    """
    if reward.ndim < 3 or reward.shape[-1] != 1:
        raise ValueError(f"TD(lambda) wants [B, T, 1] tensors, got shape {list(reward.shape)}.")
    if gamma * lmbda < GAMMA_LAMBDA_MIN:
        return td0_target(reward, next_value, terminated, gamma)
    return vec_td_lambda_return_estimate(
        gamma, lmbda, next_value, reward, done.bool(), terminated.bool()
    )


class ChunkDQNLoss(DQNLoss):
    """torchrl's DQNLoss, with one forward pass fewer on chunks of consecutive steps.

    With double DQN, DQNLoss runs the online network on the states, then again on the next
    states to choose the next actions. In a chunk, step t's next state is step t + 1's state,
    except where an episode ended: where the sample says so (`FOLLOWS_KEY`), the first pass's
    values serve, and only the other next states (the chunk's last, those after an episode's
    end) go through the network again. The loss is DQNLoss's (tests/test_losses.py), but for
    exact ties between two actions' values, where DQNLoss's one-hot choice takes both and this
    loss the first; a sample without that key gets DQNLoss's own forward.
    """

    def forward(self, tensordict: TensorDictBase) -> TensorDict:
        follows = tensordict.get(FOLLOWS_KEY, None)
        if follows is None or not self.double_dqn or tensordict.ndim != 2:
            return super().forward(tensordict)
        keys, net = self.tensor_keys, self.value_network
        states = tensordict.clone(False)
        with self.value_network_params.to_module(net, preserve_module_state=False):
            q = net(states).get(keys.action_value)  # [B, T, actions], with gradients
        chosen = (q * tensordict.get(keys.action).to(q.dtype)).sum(-1)
        next_states = tensordict.get("next").select(*net.in_keys)
        # The online network's values of the next states: step t + 1's where it follows t.
        next_q = torch.cat([q[:, 1:], q[:, -1:]], 1).detach()
        others = ~follows.squeeze(-1)
        with self.value_network_params.data.to_module(net, preserve_module_state=False):
            next_q[others] = net(next_states[others]).get(keys.action_value)
        with self.target_value_network_params.to_module(net, preserve_module_state=False):
            next_q_target = net(next_states.clone(False)).get(keys.action_value)
        next_value = next_q_target.gather(-1, next_q.argmax(-1, keepdim=True))
        target_value = self.value_estimator.value_estimate(
            states, target_params=self.target_value_network_params, next_value=next_value
        ).squeeze(-1)
        loss = distance_loss(chosen, target_value, self.loss_function)
        return TensorDict(loss=self._reduce_loss(loss, tensordict=tensordict, weights=None))


def make_loss(actor: QValueActor, config: Config, target: str) -> tuple[DQNLoss, SoftUpdate]:
    """torchrl's DQN loss with a TD(0) or TD(lambda) target, and its soft updater.

    `config.loss_function` ("smooth_l1": Huber, or "l2") and `config.double_dqn` (the online
    network chooses the next action, the target network values it) pick the loss's variant.

    The target network is a delayed copy of `actor`'s parameters held by the loss
    (`loss.target_value_network_params`); `SoftUpdate.step()` moves it by `tau`.
    """
    check_target(target)
    loss = (DQNLoss if target == "td0" else ChunkDQNLoss)(
        actor,
        loss_function=config.loss_function,
        delay_value=True,
        double_dqn=config.double_dqn,
    )
    if target == "td0" or config.gamma * config.lmbda < GAMMA_LAMBDA_MIN:
        loss.make_value_estimator(ValueEstimators.TD0, gamma=config.gamma)
    else:
        loss.make_value_estimator(ValueEstimators.TDLambda, gamma=config.gamma, lmbda=config.lmbda)
    return loss, SoftUpdate(loss, tau=config.tau)
