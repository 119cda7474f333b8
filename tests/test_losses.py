"""TD(0) and TD(lambda) targets against values computed by hand, and DQNLoss against them."""

import pytest
import torch
from tensordict import TensorDict
from torchrl.objectives import DQNLoss, ValueEstimators

from helpers.config import config_for_mode
from helpers.envs import make_env
from helpers.losses import (
    FOLLOWS_KEY,
    ChunkDQNLoss,
    check_target,
    make_loss,
    td0_target,
    td_lambda_target,
)
from helpers.models import make_model, q_values


def btf(values):
    """A [B=1, T, 1] tensor from a list over time."""
    return torch.as_tensor(values).view(1, -1, 1)


def test_td0_target_by_hand():
    reward = torch.tensor([0.1, 0.1, 0.1])
    next_value = torch.tensor([2.0, 3.0, 4.0])
    terminated = torch.tensor([False, True, False])
    # 0.1 + 0.9 * 2 = 1.9; terminated: 0.1; 0.1 + 0.9 * 4 = 3.7
    torch.testing.assert_close(
        td0_target(reward, next_value, terminated, 0.9), torch.tensor([1.9, 0.1, 3.7])
    )


def test_td0_truncation_still_bootstraps():
    # A truncated step is done but not terminated: the target keeps gamma * V(s').
    target = td0_target(torch.tensor([0.1]), torch.tensor([5.0]), torch.tensor([False]), 0.99)
    torch.testing.assert_close(target, torch.tensor([0.1 + 0.99 * 5.0]))


def test_td_lambda_by_hand_with_termination_inside_the_chunk():
    # t=0..3, terminated at t=1, new episode from t=2; gamma=0.5, lambda=0.5.
    reward = btf([1.0, 1.0, 1.0, 1.0])
    next_value = btf([4.0, 8.0, 2.0, 6.0])
    done = btf([False, True, False, False])
    terminated = btf([False, True, False, False])
    # t=3 (chunk end): 1 + 0.5 * 6 = 4
    # t=2: 1 + 0.5 * (0.5 * 2 + 0.5 * 4) = 2.5
    # t=1 (terminated): 1
    # t=0: 1 + 0.5 * (0.5 * 4 + 0.5 * 1) = 2.25
    expected = btf([2.25, 1.0, 2.5, 4.0])
    torch.testing.assert_close(
        td_lambda_target(reward, next_value, done, terminated, 0.5, 0.5), expected
    )


def test_td_lambda_by_hand_with_truncation():
    reward = btf([1.0, 1.0, 1.0])
    next_value = btf([4.0, 8.0, 2.0])
    done = btf([False, True, False])  # truncated at t=1: done, not terminated
    terminated = btf([False, False, False])
    # t=2: 1 + 0.5 * 2 = 2; t=1: 1 + 0.5 * 8 = 5 (bootstraps, no recursion into t=2)
    # t=0: 1 + 0.5 * (0.5 * 4 + 0.5 * 5) = 3.25
    torch.testing.assert_close(
        td_lambda_target(reward, next_value, done, terminated, 0.5, 0.5), btf([3.25, 5.0, 2.0])
    )


def test_lambda_zero_equals_td0():
    torch.manual_seed(0)
    reward, next_value = torch.rand(3, 7, 1), torch.rand(3, 7, 1)
    terminated = torch.rand(3, 7, 1) < 0.2
    done = terminated | (torch.rand(3, 7, 1) < 0.2)
    torch.testing.assert_close(
        td_lambda_target(reward, next_value, done, terminated, 0.9, 0.0),
        td0_target(reward, next_value, terminated, 0.9),
    )


def test_lambda_one_gamma_one_sums_rewards_to_the_end():
    reward = btf([1.0, 2.0, 3.0])
    next_value = btf([10.0, 10.0, 0.0])
    done = btf([False, False, True])
    terminated = btf([False, False, True])
    torch.testing.assert_close(
        td_lambda_target(reward, next_value, done, terminated, 1.0, 1.0), btf([6.0, 5.0, 3.0])
    )


def test_gamma_zero_is_the_reward():
    reward = btf([0.1, 0.2])
    out = td_lambda_target(
        reward, btf([9.0, 9.0]), btf([False, False]), btf([False, False]), 0.0, 0.95
    )
    torch.testing.assert_close(out, reward)


def test_td_lambda_refuses_two_dimensional_tensors():
    flat = torch.zeros(2, 5)
    with pytest.raises(ValueError, match=r"\[B, T, 1\]"):
        td_lambda_target(flat, flat, flat.bool(), flat.bool(), 0.9, 0.9)


def test_unknown_target():
    with pytest.raises(ValueError, match="td0, td-lambda"):
        check_target("td2")


@pytest.mark.parametrize("double_dqn,loss_function", [(True, "smooth_l1"), (False, "l2")])
@pytest.mark.parametrize("target,shape", [("td0", (12,)), ("td-lambda", (3, 5))])
def test_dqn_loss_equals_the_hand_written_loss(obs_norm, target, shape, double_dqn, loss_function):
    torch.manual_seed(0)
    config = config_for_mode("smoke").replace(double_dqn=double_dqn, loss_function=loss_function)
    env = make_env(obs_norm=obs_norm)
    model = make_model(env, config)
    env.close()
    loss_module, _ = make_loss(model.actor, config, target)
    # Far enough from the trainable parameters that the two networks prefer different actions.
    loss_module.target_value_network_params.apply_(lambda p: p.add_(0.5 * torch.randn_like(p)))
    done = torch.rand(*shape, 1) < 0.3
    terminated = done & (torch.rand(*shape, 1) < 0.5)
    batch = TensorDict(
        {
            "pixels": torch.randn(*shape, 4, 64, 64),
            "action": torch.nn.functional.one_hot(torch.randint(2, shape), 2),
            "next": {
                "pixels": torch.randn(*shape, 4, 64, 64),
                "reward": torch.full((*shape, 1), 0.1),
                "done": done,
                "terminated": terminated,
            },
        },
        batch_size=shape,
    )
    q = (q_values(model.actor, model.params, batch["pixels"]) * batch["action"]).sum(
        -1, keepdim=True
    )
    with torch.no_grad():
        next_pixels = batch["next", "pixels"]
        next_q_target = q_values(model.actor, loss_module.target_value_network_params, next_pixels)
        online_choice = q_values(model.actor, model.params, next_pixels).argmax(-1, keepdim=True)
    double_v = next_q_target.gather(-1, online_choice)
    max_v = next_q_target.max(-1, keepdim=True).values
    assert (double_v != max_v).any(), "the test needs samples where the two targets differ"
    next_v = double_v if double_dqn else max_v
    reward = batch["next", "reward"]
    if target == "td0":
        y = td0_target(reward, next_v, terminated, config.gamma)
    else:
        y = td_lambda_target(reward, next_v, done, terminated, config.gamma, config.lmbda)
    error = q - y.detach()
    if loss_function == "l2":
        expected = (error**2).mean()
    else:  # Huber with a threshold of 1
        expected = torch.where(error.abs() <= 1, 0.5 * error**2, error.abs() - 0.5).mean()
    torch.testing.assert_close(loss_module(batch)["loss"], expected)


@pytest.mark.parametrize("double_dqn", [True, False])
def test_the_chunk_loss_equals_dqn_loss_and_its_gradients(obs_norm, double_dqn):
    """On chunks of consecutive steps, where step t's next state is step t + 1's state but
    where an episode ended, ChunkDQNLoss (one forward pass fewer) gives DQNLoss's loss and
    gradients; without FOLLOWS_KEY it is DQNLoss."""
    torch.manual_seed(0)
    config = config_for_mode("smoke").replace(double_dqn=double_dqn)
    env = make_env(obs_norm=obs_norm)
    model = make_model(env, config)
    env.close()
    noise = lambda p: p.add_(0.5 * torch.randn_like(p))  # noqa: E731 (choices that differ)
    with torch.no_grad():
        model.params.apply_(noise)
    chunk, plain = (
        make_loss(model.actor, config, "td-lambda")[0],
        make_loss(model.actor, config, "td0")[0],
    )
    assert type(chunk) is ChunkDQNLoss and type(plain) is DQNLoss
    plain.make_value_estimator(ValueEstimators.TDLambda, gamma=config.gamma, lmbda=config.lmbda)
    chunk.target_value_network_params.apply_(noise)
    plain.target_value_network_params.update_(chunk.target_value_network_params)
    chunks, steps = 4, 6
    states = torch.randn(chunks, steps + 1, 4, 64, 64)  # each chunk's states and last next state
    done = torch.zeros(chunks, steps, 1, dtype=torch.bool)
    ends = torch.tensor([[0, 2], [1, 4], [2, 0], [3, 1], [3, 3], [0, 4]])
    done[ends[:, 0], ends[:, 1]] = True
    terminated = done.clone()
    terminated[ends[:3, 0], ends[:3, 1]] = False  # three truncations: their next states count
    next_pixels = states[:, 1:].clone()
    next_pixels[done.squeeze(-1)] = torch.randn(len(ends), 4, 64, 64)  # episodes' ends
    truncated = (done & ~terminated).squeeze(-1)
    with torch.no_grad():
        choice = q_values(model.actor, model.params, next_pixels[truncated]).argmax(-1)
        following = q_values(model.actor, model.params, states[:, 1:][truncated]).argmax(-1)
    assert (choice != following).any(), "the test needs an end where the two choices differ"
    follows = ~done
    follows[:, -1] = False
    batch = TensorDict(
        {
            "pixels": states[:, :-1],
            "action": torch.nn.functional.one_hot(torch.randint(2, (chunks, steps)), 2),
            FOLLOWS_KEY: follows,
            "next": {
                "pixels": next_pixels,
                "reward": torch.full((chunks, steps, 1), 0.1),
                "done": done,
                "terminated": terminated,
            },
        },
        batch_size=(chunks, steps),
    )
    losses = [module(batch.clone())["loss"] for module in (chunk, plain)]
    torch.testing.assert_close(losses[0], losses[1])
    grads = [torch.autograd.grad(loss, list(model.params.values(True, True))) for loss in losses]
    for ours, theirs in zip(*grads):
        torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(chunk(batch.exclude(FOLLOWS_KEY))["loss"], losses[1])


def test_dqn_loss_with_lambda_zero_is_td0(obs_norm):
    config = config_for_mode("smoke").replace(lmbda=0.0)
    env = make_env(obs_norm=obs_norm)
    model = make_model(env, config)
    env.close()
    flags = torch.zeros(2, 3, 1, dtype=torch.bool)
    batch = TensorDict(
        {
            "pixels": torch.randn(2, 3, 4, 64, 64),
            "action": torch.nn.functional.one_hot(torch.randint(2, (2, 3)), 2),
            "next": {
                "pixels": torch.randn(2, 3, 4, 64, 64),
                "reward": torch.ones(2, 3, 1),
                "done": flags,
                "terminated": flags,
            },
        },
        batch_size=[2, 3],
    )
    lam, _ = make_loss(model.actor, config, "td-lambda")
    td0, _ = make_loss(model.actor, config, "td0")
    torch.testing.assert_close(lam(batch.clone())["loss"], td0(batch.clone())["loss"])


def test_gradient_steps_fit_a_fixed_batch_to_its_targets(obs_norm):
    """The network learns: on a fixed batch of terminal transitions the target is the reward
    alone (no bootstrap), so 150 of the loop's gradient steps drive Q(s, a) to the rewards."""
    from helpers.loop import gradient_step, make_optimizer

    torch.manual_seed(0)
    config = config_for_mode("smoke")
    env = make_env(obs_norm=obs_norm)
    model = make_model(env, config)
    env.close()
    loss_module, target_updater = make_loss(model.actor, config, "td0")
    optim = make_optimizer(loss_module, config, torch.device("cpu"))
    n = 16
    action = torch.randint(2, (n,))
    reward = torch.linspace(-1.0, 1.0, n).unsqueeze(-1)  # a different target for every row
    batch = TensorDict(
        {
            "pixels": torch.randn(n, 4, 64, 64),
            "action": torch.nn.functional.one_hot(action, 2),
            "next": {
                "pixels": torch.randn(n, 4, 64, 64),
                "reward": reward,
                "done": torch.ones(n, 1, dtype=torch.bool),
                "terminated": torch.ones(n, 1, dtype=torch.bool),
            },
        },
        batch_size=(n,),
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(
        1
    )  # (as train's learner: 2 threads on a busy 2-core CPU wait on each other)
    try:
        first, _ = gradient_step(loss_module, optim, target_updater, batch, config.max_grad_norm)
        for _ in range(150):
            last, _ = gradient_step(loss_module, optim, target_updater, batch, config.max_grad_norm)
    finally:
        torch.set_num_threads(threads)
    # Before: Q starts near init_bias = 2, 1 to 3 away from rewards in [-1, 1]: Huber loss ~1.5.
    assert first > 1.0
    assert last < first / 100
    with torch.no_grad():
        q = q_values(model.actor, model.params, batch["pixels"]).gather(-1, action.view(-1, 1))
    torch.testing.assert_close(q, reward, atol=0.05, rtol=0)
