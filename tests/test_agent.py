"""Loading trained agents, evaluating them and filming them (uses a real smoke training run)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import imageio.v2 as imageio
import pytest
import torch
from clitools import cli
from tensordict import TensorDict

from helpers.agents import SHIPPED_RUN_FILES, load_agent, ship_run
from helpers.config import config_for_mode
from helpers.evaluation import (
    EVAL_SEED,
    TEST_SEED,
    episode_length,
    episode_stats,
    evaluate_checkpoint,
    play_episode,
)
from helpers.machine import torch_threads
from helpers.run.checkpoints import AGENT_FILE, SHIPPED_DIR, CheckpointError
from helpers.video import RAW_KEY, keep_raw_frames, write_video

pytestmark = pytest.mark.slow  # left out of the quick lane (make check)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("agent")
    result = cli(
        "train", "--target", "td-lambda", "--mode", "smoke", "--frames", "128", "--out", str(out)
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return out / "checkpoint.pt"


def test_loaded_agent_reproduces_the_trained_greedy_actions(tmp_path, obs_norm):
    from helpers.training import train

    result = train(
        "td0",
        tmp_path / "run",
        mode="smoke",
        config=config_for_mode("smoke").replace(total_frames=96),
        obs_norm=obs_norm,
        progress=False,
        live_plot=False,
    )
    agent = load_agent(result.checkpoint_path)
    pixels = torch.randn(64, 4, 64, 64)
    trained = result.actor(TensorDict({"pixels": pixels}, [64]))
    loaded = agent.policy(TensorDict({"pixels": pixels}, [64]))
    torch.testing.assert_close(loaded["action_value"], trained["action_value"])
    assert torch.equal(loaded["action"], trained["action"])
    env = agent.make_env()
    first = play_episode(result.actor, env, max_steps=50, seed=3)
    second = play_episode(agent.policy, env, max_steps=50, seed=3)
    env.close()
    assert torch.equal(first["action"], second["action"])
    assert agent.info["target"] == "td0" and agent.info["frames"] == 96


def test_agent_env_uses_the_training_constants(checkpoint):
    agent = load_agent(checkpoint)
    env = agent.make_env(seed=0)
    norm = env.transform[-1]
    torch.testing.assert_close(norm.loc, agent.obs_norm["loc"])
    episode = play_episode(agent.policy, env, max_steps=20, seed=0)
    env.close()
    assert "action" in episode.keys() and episode["pixels"].shape[1:] == (4, 64, 64)


def test_evaluate_json_is_consistent(checkpoint):
    result = cli(
        "evaluate", "--checkpoint", str(checkpoint), "--episodes", "3", "--seed", "5", "--json"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    stats = json.loads(result.stdout)
    lengths = stats["lengths"]
    assert stats["episodes"] == len(lengths) == 3
    assert stats["min"] == min(lengths) and stats["max"] == max(lengths)
    assert stats["mean"] == pytest.approx(sum(lengths) / 3)
    assert stats["min"] <= stats["mean"] <= stats["max"] and stats["std"] >= 0
    again = json.loads(
        cli(
            "evaluate", "--checkpoint", str(checkpoint), "--episodes", "3", "--seed", "5", "--json"
        ).stdout
    )
    assert again["lengths"] == lengths, "deterministic episodes with the same seeds differ"


def test_evaluation_seeds_and_workers(checkpoint):
    # Episode i is played on seed seed+i whatever the number of processes sharing them.
    one = evaluate_checkpoint(checkpoint, episodes=4, seed=7, workers=1)
    with torch_threads(2):  # (this process plays its share with one, then sets them back)
        two = evaluate_checkpoint(checkpoint, episodes=4, seed=7, workers=2)
        assert torch.get_num_threads() == 2
    assert one["lengths"] == two["lengths"]
    agent = load_agent(checkpoint)
    env = agent.make_env()
    by_hand = [play_episode(agent.policy, env, seed=s).numel() for s in (7, 8, 9, 10)]
    # (the evaluations count steps without keeping them: the same lengths, cut ones included)
    cut = min(by_hand) - 1
    counted = [episode_length(agent.policy, env, cut, s) for s in (7, 8)]
    kept = [play_episode(agent.policy, env, cut, s).numel() for s in (7, 8)]
    env.close()
    assert one["lengths"] == by_hand
    assert counted == kept == [cut, cut]
    assert TEST_SEED - EVAL_SEED >= 1_000  # the two seed sets never overlap at these sizes


def test_episode_stats_by_hand():
    stats = episode_stats([10, 20, 60])
    assert (stats["mean"], stats["min"], stats["max"]) == (30, 10, 60)
    assert stats["std"] == pytest.approx((((20**2) + (10**2) + (30**2)) / 3) ** 0.5)  # 21.60


def test_shipped_run_checks_its_manifest(checkpoint, tmp_path):
    run = shutil.copytree(checkpoint.parent, tmp_path / "run")
    (run / "command.json").write_text('{"command": "test", "rc": 0, "wall_seconds": 1}')
    dest = tmp_path / "shipped"
    manifest = ship_run(run, dest)
    names = sorted(line.split()[1] for line in manifest.read_text().splitlines())
    assert names == sorted(["agent.pt", "command.json", *SHIPPED_RUN_FILES])
    agent = load_agent(dest / "agent.pt")
    torch.testing.assert_close(
        agent.policy(TensorDict({"pixels": torch.zeros(1, 4, 64, 64)}, [1]))["action_value"],
        load_agent(checkpoint).policy(TensorDict({"pixels": torch.zeros(1, 4, 64, 64)}, [1]))[
            "action_value"
        ],
    )
    assert (dest / "agent.pt").stat().st_size < 5e6  # no optimizer state, no target network
    data = bytearray((dest / "agent.pt").read_bytes())
    data[-100] ^= 1
    (dest / "agent.pt").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="changed since it was shipped"):
        load_agent(dest / "agent.pt")
    shutil.copyfile(checkpoint, dest / "mine.pt")
    with pytest.raises(CheckpointError, match="not listed"):
        load_agent(dest / "mine.pt")


def test_the_agent_is_the_best_evaluated_parameters(checkpoint, tmp_path):
    state = torch.load(checkpoint, weights_only=True)
    bias = next(k for k in state["params"] if k.endswith("value.2.bias"))
    state["best_params"] = {k: v.clone() for k, v in state["params"].items()}
    state["best_params"][bias].fill_(123.0)  # the kept agent differs from the last parameters
    path = tmp_path / "best.pt"
    torch.save(state, path)
    agent = load_agent(path)
    loaded = dict(agent.policy.named_parameters())
    assert [v.item() for k, v in loaded.items() if k.endswith("value.2.bias")] == [123.0]
    state["interrupted"] = True  # a run stopped early is not shipped
    run = shutil.copytree(checkpoint.parent, tmp_path / "run")
    torch.save(state, run / "checkpoint.pt")
    (run / "command.json").write_text('{"command": "test", "rc": 0, "wall_seconds": 1}')
    with pytest.raises(ValueError, match="interrupted run"):
        ship_run(run, tmp_path / "shipped")


@pytest.mark.parametrize("target", ["td-lambda", "td0"])
def test_shipped_agents_replay_their_recorded_episodes(target):
    folder = SHIPPED_DIR / target
    if not folder.exists():
        pytest.fail(f"no shipped agent in {folder}")
    recorded = json.loads((folder / "evaluation.json").read_text())
    again = evaluate_checkpoint(folder / AGENT_FILE, episodes=2, seed=recorded["seed"], workers=1)
    assert again["lengths"] == recorded["lengths"][:2]


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_video_has_a_frame_per_step_at_render_size(checkpoint, tmp_path, suffix):
    out = tmp_path / f"agent{suffix}"
    result = cli(
        "video",
        "--checkpoint",
        str(checkpoint),
        "--out",
        str(out),
        "--max-steps",
        "40",
        "--fps",
        "20",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    steps = int(result.stdout.split("(")[-1].split()[0])
    assert str(out) in result.stdout and 1 <= steps <= 40
    frames = imageio.mimread(out, memtest=False)
    assert len(frames) == steps
    assert frames[0].shape[:2] == (400, 600)
    assert max(f.std() for f in frames) > 0  # real pictures, not blank frames


def test_rlrender_films_a_course_checkpoint_as_the_course_plays_it(checkpoint, tmp_path):
    """TorchRL's `rlrender` command, with the course's factories, plays the same greedy episode
    as `play_episode` on that seed: as many steps, a frame of each state, the raw frames."""
    out, seed, limit = tmp_path / "agent.gif", TEST_SEED, 30
    agent = load_agent(checkpoint)
    env = agent.make_env()
    steps = play_episode(agent.policy, env, max_steps=limit, seed=seed).numel()
    env.close()
    result = subprocess.run(
        [str(Path(sys.executable).parent / "rlrender"), "--ckpt", str(checkpoint)]
        + ["--policy", "helpers.video:agent_policy", "--env", "helpers.video:agent_env"]
        + ["--pixel-key", RAW_KEY, "--render-backend", "pixels", "--no-auto-load-policy"]
        + ["--out", str(out), "--max-steps", str(limit), "--seed", str(seed)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    metadata = json.loads(Path(f"{out}.metadata.json").read_text())
    trajectory = metadata["trajectories"][0]
    assert (trajectory["num_steps"], trajectory["num_frames"]) == (steps, steps + 1)
    frames = imageio.mimread(out, memtest=False)  # (Pillow merges identical neighbours)
    assert 2 <= len(frames) <= steps + 1
    assert frames[0].shape[:2] == (400, 600) and max(f.std() for f in frames) > 0


def test_raw_frames_are_kept_next_to_the_observation(checkpoint):
    agent = load_agent(checkpoint)
    env = keep_raw_frames(agent.make_env())
    episode = play_episode(agent.policy, env, max_steps=10, seed=1)
    env.close()
    assert episode[RAW_KEY].shape == (episode.numel(), 400, 600, 3)
    assert episode[RAW_KEY].dtype == torch.uint8


def test_write_video_refuses_other_formats(tmp_path):
    with pytest.raises(ValueError, match=".mp4 or .gif"):
        write_video(torch.zeros(2, 8, 8, 3, dtype=torch.uint8), tmp_path / "a.avi")


def test_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="Train one first"):
        load_agent(tmp_path / "none.pt")
    result = cli("evaluate", "--checkpoint", str(tmp_path / "none.pt"))
    assert result.returncode == 2 and "No checkpoint" in result.stderr


def test_truncated_checkpoint(checkpoint, tmp_path):
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(checkpoint.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_agent(bad)


def test_foreign_file(tmp_path):
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="not a checkpoint of this course"):
        load_agent(foreign)


def test_a_checkpoint_cannot_run_code(tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"format": "pixel-dqn-course/1", "payload": Exploit()}, evil)
    with pytest.raises(CheckpointError, match="holds Python objects") as err:
        load_agent(evil)
    assert "weights_only=False" not in str(err.value)  # never the advice to load it anyway
    assert not (tmp_path / "pwned").exists()


def test_parameters_that_diverged_are_refused(checkpoint, tmp_path):
    state = torch.load(checkpoint, weights_only=True)
    key = next(iter(state["params"]))
    for name in ("params", "best_params"):
        if state.get(name):
            state[name][key] = torch.full_like(state[name][key], float("nan"))
    diverged = tmp_path / "nan.pt"
    torch.save(state, diverged)
    with pytest.raises(CheckpointError, match="not finite numbers"):
        load_agent(diverged)
    result = cli("evaluate", "--checkpoint", str(diverged), "--episodes", "1")
    assert result.returncode == 2 and result.stderr.count("\n") == 1


def test_a_checkpoint_with_a_setting_of_the_wrong_type_is_refused(checkpoint, tmp_path):
    state = torch.load(checkpoint, weights_only=True)
    state["config"]["init_bias"] = "x"
    bad = tmp_path / "bad.pt"
    torch.save(state, bad)
    with pytest.raises(CheckpointError, match="init_bias = 'x' should be of type float"):
        load_agent(bad)


def test_video_into_a_missing_folder_is_refused(checkpoint, tmp_path):
    result = cli("video", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "no/x.mp4"))
    assert result.returncode == 2 and "does not exist" in result.stderr
    assert not (tmp_path / "no").exists()


class Exploit:
    def __reduce__(self):
        return (open, ("pwned-by-checkpoint", "w"))


def test_other_architecture_is_refused(checkpoint, tmp_path):
    state = torch.load(checkpoint, weights_only=True)
    key = next(k for k in state["params"] if k.endswith("weight"))
    for name in ("params", "best_params"):  # the kept agent is best_params when there is one
        if state.get(name):
            state[name][key] = torch.zeros(3, 3)
    other = tmp_path / "other.pt"
    torch.save(state, other)
    with pytest.raises(CheckpointError, match="different network architecture"):
        load_agent(other)
