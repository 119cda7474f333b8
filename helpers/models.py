"""Notebook 03. Model utils: the dueling CNN Q-network, its Q-value actor, the exploring policy and parameters."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule, TensorDictSequential
from torch import nn
from torchrl.envs import EnvBase
from torchrl.modules import DuelingCnnDQNet, EGreedyModule, QValueActor

from helpers.config import FRAME_STACK, Config

# The networks, by name (Config.network). Both are torchrl's DuelingCnnDQNet: convolutions,
# then an advantage head and a value head, each an MLP.
NETWORKS: dict[str, dict[str, dict]] = {
    # The course's: two convolutions (a 64x64 frame -> 32 x 6 x 6 features) and one hidden layer
    # of 256 per head: about 0.6 M parameters, under 5 MFLOP a frame.
    "two-conv": dict(
        cnn=dict(num_cells=[16, 32], kernel_sizes=[8, 4], strides=[4, 2], activation_class=nn.ReLU),
        mlp=dict(depth=1, num_cells=[256], activation_class=nn.ReLU),
    ),
    # The tutorial's: three convolutions and two hidden layers of 64 per head, with ELU.
    "three-conv": dict(
        cnn=dict(
            num_cells=[32, 64, 64],
            kernel_sizes=[6, 4, 3],
            strides=[2, 2, 1],
            activation_class=nn.ELU,
        ),
        mlp=dict(depth=2, num_cells=[64, 64], activation_class=nn.ELU),
    ),
}
CNN_KWARGS = NETWORKS["two-conv"]["cnn"]  # the course network's convolutions (notebook 03)
MLP_KWARGS = NETWORKS["two-conv"]["mlp"]  # ... and each head's MLP


@dataclass
class Model:
    """What `make_model` returns.

    Attributes:
        actor: greedy Q-value actor; reads `pixels`, writes `action_value`, `action` and
            `chosen_action_value`.
        policy_explore: `actor` followed by epsilon-greedy exploration (used to collect data).
        params: the trainable parameters of `actor`, as a TensorDict (the same tensors).
            (The target network's copy lives in the loss module: `helpers.losses.make_loss`.)
    """

    actor: QValueActor
    policy_explore: TensorDictSequential
    params: TensorDict

    @property
    def egreedy(self) -> EGreedyModule:
        """The exploration module, whose `eps` buffer holds the current epsilon."""
        return self.policy_explore[-1]


def check_network(network: str) -> str:
    """Return `network` if it is one of NETWORKS, else raise a ValueError that lists them."""
    if network not in NETWORKS:
        raise ValueError(f"Unknown network {network!r}: choose one of {', '.join(NETWORKS)}.")
    return network


class NewestFrames(nn.Module):
    """Keeps the newest `count` frames of a [..., FRAME_STACK, H, W] stack (Config.frames_seen)."""

    def __init__(self, count: int) -> None:
        super().__init__()
        self.count = count

    def forward(self, stack: torch.Tensor) -> torch.Tensor:
        """The stack's last `count` frames (the newest), on the frame axis -3."""
        return stack[..., -self.count :, :, :]


def make_qnet(
    num_actions: int, init_bias: float, network: str = "two-conv", frames_seen: int = FRAME_STACK
) -> DuelingCnnDQNet:
    """A dueling network (`NETWORKS[network]`): CNN features, then advantage and value MLP heads.

    With `frames_seen` below FRAME_STACK its convolutions see only the newest frames of each
    stack (notebook 07 measures what the older ones are worth).
    """
    kwargs = NETWORKS[check_network(network)]
    net = DuelingCnnDQNet(num_actions, 1, dict(kwargs["cnn"]), dict(kwargs["mlp"]))
    # The value head's last bias starts at init_bias: a first guess at Q that speeds up learning.
    net.value[-1].bias.data.fill_(init_bias)
    if frames_seen < FRAME_STACK:
        net.features = nn.Sequential(NewestFrames(frames_seen), net.features)
    return net


def make_actor(
    env: EnvBase,
    init_bias: float = 2.0,
    device: str | torch.device = "cpu",
    network: str = "two-conv",
    frames_seen: int = FRAME_STACK,
) -> QValueActor:
    """A greedy QValueActor for `env`, with its lazy layers initialised on a fake batch."""
    net = make_qnet(env.action_spec.shape[-1], init_bias, network, frames_seen).to(device)
    actor = QValueActor(net, in_keys=["pixels"], spec=env.action_spec).to(device)
    # Lazy layers learn their input sizes from the first batch: feed one made of zeros.
    try:
        fake = env.fake_tensordict()
    except RuntimeError as err:
        raise ValueError(
            "The environment's ObservationNorm has no constants yet: build it with "
            "make_env(obs_norm=...) (see notebook 02)."
        ) from err
    with torch.no_grad():
        actor(fake.to(device))
    return actor


def make_egreedy(env: EnvBase, config: Config, device: str | torch.device = "cpu") -> EGreedyModule:
    """Epsilon-greedy exploration annealed linearly from eps_init to eps_end over
    `config.annealing_frames` frames (`eps_frames`, or the whole run), then held at eps_end."""
    return EGreedyModule(
        env.action_spec,
        eps_init=float(config.eps_init),
        eps_end=float(config.eps_end),
        annealing_num_steps=config.annealing_frames,
        device=device,
    )


def make_model(env: EnvBase, config: Config, device: str | torch.device = "cpu") -> Model:
    """Build the actor, its exploring policy and its trainable parameters.

    Args:
        env: an environment built by `helpers.envs.make_env` (gives specs and a fake batch).
        config: hyperparameters (`network`, `frames_seen`, `init_bias`, `eps_init`, `eps_end`,
            `eps_frames`).
        device: where the network lives.
    """
    if not isinstance(env, EnvBase):
        raise TypeError(
            f"make_model needs a torchrl environment (make_env()), got {type(env).__name__}."
        )
    actor = make_actor(env, config.init_bias, device, config.network, config.frames_seen)
    if config.pipeline == "uint8" and torch.device(device).type == "cpu":
        # Convolutions run about 10% faster on a CPU with channels-last weights (measured
        # here; not measured on a GPU, so left alone there). The values are the same.
        nn.Module.to(actor, memory_format=torch.channels_last)  # (TensorDictModule.to lacks it)
    policy_explore = TensorDictSequential(actor, make_egreedy(env, config, device))
    return Model(actor, policy_explore, TensorDict.from_module(actor))


def q_values(actor: TensorDictModule, params: TensorDict, pixels: torch.Tensor) -> torch.Tensor:
    """Q-values of `pixels` computed with the parameters `params` (a functional call)."""
    with params.to_module(actor):
        return actor(TensorDict({"pixels": pixels}, batch_size=pixels.shape[:-3]))["action_value"]
