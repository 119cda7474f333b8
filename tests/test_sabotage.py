"""The options notebook 07 ablates and sabotages: each does what it says, on hand-made data."""

import pytest
import torch
from tensordict import TensorDict

from helpers.config import FRAME_STACK, SABOTAGES, Config
from helpers.envs import make_env
from helpers.losses import td0_target
from helpers.models import make_qnet
from helpers.sabotage import FAULTS, sabotage_batch, sabotage_sample


def one_hot(actions: list[list[int]]) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(actions), 2)


def test_next_action_stores_each_step_with_the_action_after_it():
    data = TensorDict({"action": one_hot([[0, 1, 1, 0], [1, 1, 0, 0]])}, [2, 4])
    planted = sabotage_batch(data, "next-action")
    assert planted["action"].argmax(-1).tolist() == [[1, 1, 0, 0], [1, 0, 0, 0]]
    assert data["action"].argmax(-1).tolist() == [[0, 1, 1, 0], [1, 1, 0, 0]]  # not in place
    assert sabotage_batch(data, "") is data


def test_ignore_terminated_bootstraps_through_the_fall():
    sample = TensorDict({"next": {"terminated": torch.tensor([[True], [False]])}}, [2])
    reward, next_value = torch.tensor([[0.1], [0.1]]), torch.tensor([[2.0], [3.0]])
    honest = td0_target(reward, next_value, sample["next", "terminated"], 0.99)
    planted = sabotage_sample(sample.clone(), "ignore-terminated")
    wrong = td0_target(reward, next_value, planted["next", "terminated"], 0.99)
    assert honest.flatten().tolist() == pytest.approx([0.1, 0.1 + 0.99 * 3.0])
    assert wrong.flatten().tolist() == pytest.approx([0.1 + 0.99 * 2.0, 0.1 + 0.99 * 3.0])


def test_every_fault_is_described_and_accepted():
    assert set(FAULTS) == set(SABOTAGES) - {""}
    for fault in FAULTS:
        assert Config(sabotage=fault).sabotage == fault
    with pytest.raises(ValueError, match="sabotage = 'sign' is not one of"):
        Config(sabotage="sign")


def test_one_frame_seen_ignores_the_older_frames_of_the_stack():
    torch.manual_seed(0)
    stacks = torch.rand(2, FRAME_STACK, 64, 64)
    stacks[1, -1] = stacks[0, -1]  # the same newest frame, different older ones
    one, four = make_qnet(2, 0.0, frames_seen=1), make_qnet(2, 0.0)
    q_one, q_four = one(stacks), four(stacks)
    assert torch.allclose(q_one[0], q_one[1], atol=1e-6)
    assert not torch.allclose(q_four[0], q_four[1])
    with pytest.raises(ValueError, match="frames_seen must be 1 to 4"):
        Config(frames_seen=FRAME_STACK + 1)


@pytest.mark.parametrize("scale", [0.1, 1.0])
def test_reward_scale_is_the_reward_each_step_brings(scale):
    constants = {"loc": torch.zeros(FRAME_STACK, 1, 1), "scale": torch.ones(FRAME_STACK, 1, 1)}
    env = make_env(obs_norm=constants, seed=0, reward_scale=scale)
    try:
        step = env.rand_step(env.reset())
    finally:
        env.close()
    assert step["next", "reward"].item() == pytest.approx(scale)


@pytest.mark.parametrize("fault", ["", "ignore-terminated"])
def test_the_update_plants_the_configured_fault_in_each_sample(fault):
    from helpers.loop import make_update

    sample = TensorDict({"next": {"terminated": torch.tensor([[True], [False]])}}, [2])
    seen = []

    def step(loss_module, optim, updater, sample, max_grad_norm):
        seen.append((sample, max_grad_norm))
        return 0.5, 1.0

    update = make_update(None, None, None, Config(sabotage=fault), "cpu", step)
    assert update(sample.clone()) == (0.5, 1.0)
    (got, clip), expected = seen[0], ([False, False] if fault else [True, False])
    assert got["next", "terminated"].flatten().tolist() == expected
    assert clip == Config().max_grad_norm
