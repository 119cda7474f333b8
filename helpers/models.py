"""Model utils: the dueling CNN Q-network, its Q-value actor, the exploring policy and parameters."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule, TensorDictSequential
from torch import nn
from torchrl.envs import EnvBase
from torchrl.modules import DuelingCnnDQNet, EGreedyModule, QValueActor

from helpers.config import Config

CNN_KWARGS = dict(
    num_cells=[32, 64, 64],  # output channels of the three convolutions
    kernel_sizes=[6, 4, 3],
    strides=[2, 2, 1],
    activation_class=nn.ELU,
)
MLP_KWARGS = dict(depth=2, num_cells=[64, 64], activation_class=nn.ELU)


@dataclass
class Model:
    """What `make_model` returns.

    Attributes:
        actor: greedy Q-value actor; reads `pixels`, writes `action_value`, `action` and
            `chosen_action_value`.
        policy_explore: `actor` followed by epsilon-greedy exploration (used to collect data).
        params: the trainable parameters of `actor`, as a TensorDict (the same tensors).
        target_params: a detached copy of `params`, updated slowly during training.
    """

    actor: QValueActor
    policy_explore: TensorDictSequential
    params: TensorDict
    target_params: TensorDict

    @property
    def egreedy(self) -> EGreedyModule:
        """The exploration module, whose `eps` buffer holds the current epsilon."""
        return self.policy_explore[-1]


def make_qnet(num_actions: int, init_bias: float) -> DuelingCnnDQNet:
    """The tutorial's dueling network: CNN features, then advantage and value MLP heads."""
    net = DuelingCnnDQNet(num_actions, 1, dict(CNN_KWARGS), dict(MLP_KWARGS))
    # The value head's last bias starts at init_bias: a first guess at Q that speeds up learning.
    net.value[-1].bias.data.fill_(init_bias)
    return net


def make_actor(
    env: EnvBase, init_bias: float = 2.0, device: str | torch.device = "cpu"
) -> QValueActor:
    """A greedy QValueActor for `env`, with its lazy layers initialised on a fake batch."""
    net = make_qnet(env.action_spec.shape[-1], init_bias).to(device)
    actor = QValueActor(net, in_keys=["pixels"], spec=env.action_spec).to(device)
    # Lazy layers learn their input sizes from the first batch: feed one made of zeros.
    try:
        fake = env.fake_tensordict()
    except RuntimeError as err:
        raise ValueError(
            "The environment's ObservationNorm has no constants yet: build it with "
            "make_env(obs_norm_state_dict=...) (see notebook 02)."
        ) from err
    with torch.no_grad():
        actor(fake.to(device))
    return actor


def make_egreedy(env: EnvBase, config: Config, device: str | torch.device = "cpu") -> EGreedyModule:
    """Epsilon-greedy exploration annealed from eps_init to eps_end over the run's frames."""
    return EGreedyModule(
        env.action_spec,
        eps_init=float(config.eps_init),
        eps_end=float(config.eps_end),
        annealing_num_steps=config.total_frames,
        device=device,
    )


def make_model(env: EnvBase, config: Config, device: str | torch.device = "cpu") -> Model:
    """Build the actor, its exploring policy, and trainable and target parameters.

    Args:
        env: an environment built by `helpers.envs.make_env` (gives specs and a fake batch).
        config: hyperparameters (`init_bias`, `eps_init`, `eps_end`, `total_frames`).
        device: where the network lives.
    """
    if not isinstance(env, EnvBase):
        raise TypeError(
            f"make_model needs a torchrl environment (make_env()), got {type(env).__name__}."
        )
    actor = make_actor(env, config.init_bias, device)
    if config.pipeline == "course" and torch.device(device).type == "cpu":
        # Convolutions run about 10% faster on a CPU with channels-last weights (measured
        # here; not measured on a GPU, so left alone there). The values are the same.
        nn.Module.to(actor, memory_format=torch.channels_last)  # (TensorDictModule.to lacks it)
    policy_explore = TensorDictSequential(actor, make_egreedy(env, config, device))
    params = TensorDict.from_module(actor)
    target_params = params.detach().clone()
    return Model(actor, policy_explore, params, target_params)


def q_values(actor: TensorDictModule, params: TensorDict, pixels: torch.Tensor) -> torch.Tensor:
    """Q-values of `pixels` computed with the parameters `params` (a functional call)."""
    with params.to_module(actor):
        return actor(TensorDict({"pixels": pixels}, batch_size=pixels.shape[:-3]))["action_value"]
