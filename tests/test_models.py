"""The Q-network, its actor, the exploring policy and functional parameters."""

import pytest
import torch
from tensordict import TensorDict
from torchrl.envs import ExplorationType, set_exploration_type

from helpers.config import Config, config_for_mode
from helpers.envs import make_env
from helpers.models import make_egreedy, make_model, make_qnet, q_values


@pytest.fixture(scope="module")
def env(obs_norm):
    env = make_env(obs_norm=obs_norm, seed=0)
    yield env
    env.close()


@pytest.fixture
def model(env):
    return make_model(env, config_for_mode("smoke"))


def test_actor_writes_the_qvalue_keys(env, model):
    td = model.actor(env.reset())
    assert td["action_value"].shape == (2,)
    assert td["action"].shape == (2,) and td["action"].sum() == 1  # one-hot
    assert td["chosen_action_value"].shape == (1,)
    assert td["chosen_action_value"].item() == td["action_value"].max().item()
    assert td["action"].argmax() == td["action_value"].argmax()


def test_batched_call_shapes(model):
    td = model.actor(TensorDict({"pixels": torch.randn(7, 4, 64, 64)}, [7]))
    assert td["action_value"].shape == (7, 2)
    assert td["chosen_action_value"].shape == (7, 1)


def test_value_head_bias_starts_at_init_bias(model):
    config = config_for_mode("smoke")
    net = model.actor.module[0].module
    assert net.value[-1].bias.item() == config.init_bias


def test_q_values_of_other_params_leave_the_module_alone(model):
    # The functional call notebook 03 uses for the target network: another set of parameters
    # (here a shifted copy) gives other Q-values, and the module's own parameters are untouched.
    target_params = model.params.detach().clone()
    target_params.apply_(lambda t: t.add_(1.0))
    x = torch.randn(2, 4, 64, 64)
    assert not torch.allclose(
        q_values(model.actor, model.params, x), q_values(model.actor, target_params, x)
    )
    torch.testing.assert_close(
        model.actor(TensorDict({"pixels": x}, [2]))["action_value"],
        q_values(model.actor, model.params, x),
    )


def test_epsilon_anneals_to_eps_end_over_eps_frames_then_holds(env):
    # 1.0 -> 0.05 over 2,000 frames of a 10,000-frame run: -0.000475 per frame.
    config = Config(total_frames=10_000, eps_init=1.0, eps_end=0.05, eps_frames=2_000)
    egreedy = make_egreedy(env, config)
    assert egreedy.eps.item() == pytest.approx(1.0)
    egreedy.step(500)
    assert egreedy.eps.item() == pytest.approx(1.0 - 500 * 0.95 / 2_000, abs=1e-4)  # 0.7625
    egreedy.step(1_000)
    assert egreedy.eps.item() == pytest.approx(0.2875, abs=1e-4)  # float32 steps
    egreedy.step(500)
    assert egreedy.eps.item() == pytest.approx(0.05, abs=1e-4)
    egreedy.step(7_000)  # the rest of the run: held at eps_end
    assert egreedy.eps.item() == pytest.approx(0.05, abs=1e-4)


def test_the_course_network_has_the_recipes_shapes(env):
    net = make_qnet(2, init_bias=2.0)
    net(torch.zeros(1, 4, 64, 64))
    convs = [m for m in net.features.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (16, (8, 8), (4, 4)),
        (32, (4, 4), (2, 2)),
    ]
    assert net.features(torch.zeros(1, 4, 64, 64)).shape == (1, 32 * 6 * 6)
    # 4*16*8*8+16 + 16*32*4*4+32 + 2 heads of (1152*256+256) + 256*2+2 + 256*1+1
    assert sum(p.numel() for p in net.parameters()) == 4_112 + 8_224 + 2 * 295_168 + 514 + 257
    assert net.value[-1].bias.item() == 2.0
    tutorial = make_qnet(2, init_bias=2.0, network="three-conv")
    assert tutorial.features(torch.zeros(1, 4, 64, 64)).shape == (1, 64 * 12 * 12)
    with pytest.raises(ValueError, match="two-conv, three-conv"):
        make_qnet(2, 2.0, network="huge")


def test_exploration_only_in_random_mode(env):
    model = make_model(env, config_for_mode("smoke").replace(eps_init=1.0))
    batch = TensorDict({"pixels": torch.randn(400, 4, 64, 64)}, [400])
    greedy = model.actor(batch.clone())["action"]
    explored = model.policy_explore(batch.clone())["action"]
    assert 0.3 < (explored != greedy).any(-1).float().mean() < 0.7
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        assert torch.equal(model.policy_explore(batch.clone())["action"], greedy)


def test_make_model_needs_an_environment():
    with pytest.raises(TypeError, match="make_env"):
        make_model("CartPole-v1", config_for_mode("smoke"))


def test_make_model_needs_normalization_constants():
    env = make_env()
    with pytest.raises(ValueError, match="obs_norm"):
        make_model(env, config_for_mode("smoke"))
    env.close()
