"""Notebook 06. A trained agent: loaded from a checkpoint to play (notebook 06, `evaluate`, `video`), and
shipped with the course (`python -m helpers ship`, the agents in `checkpoints/`)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torchrl.envs import TransformedEnv
from torchrl.modules import QValueActor

from helpers.config import Config
from helpers.envs import make_env
from helpers.models import make_actor
from helpers.run.checkpoints import (
    AGENT_FILE,
    CHECKPOINT_FILE,
    MANIFEST,
    CheckpointError,
    load_checkpoint,
    load_params_into,
    save_checkpoint,
    write_manifest,
)
from helpers.run.folder import COMMAND_FILE, CURVES_FILE, EVALUATION_FILE, LOG_FILE, RUN_FILE

# What `load_agent` reports of the run that made a checkpoint.
INFO_KEYS = ("target", "mode", "seed", "frames", "interrupted", "best_frames", "best_eval")
# What `ship_run` copies from a run folder beside the agent (the evidence of how it was made);
# command.json too where there is one (a sweep's or a recorded run's).
SHIPPED_RUN_FILES = (RUN_FILE, LOG_FILE, CURVES_FILE, EVALUATION_FILE)


def kept_params(state: dict) -> dict[str, torch.Tensor]:
    """The parameters a run keeps: those its evaluations during training rated best (the last
    ones when it never evaluated)."""
    return state.get("best_params") or state["params"]


@dataclass
class Agent:
    """A trained agent loaded from a checkpoint.

    Attributes:
        policy: the greedy actor; reads `pixels`, writes `action` (and the Q-values).
        obs_norm: the normalization constants it was trained with.
        config: the hyperparameters of its training run.
        info: target, mode, seed and frames of its training run.
    """

    policy: QValueActor
    obs_norm: dict
    config: Config
    info: dict

    def make_env(self, seed: int | None = None, **kwargs: object) -> TransformedEnv:
        """The evaluation environment, normalized with the constants the agent was trained with."""
        kwargs.setdefault("pipeline", self.config.pipeline)
        return make_env(obs_norm=self.obs_norm, seed=seed, **kwargs)


def load_agent(path: str | Path, device: str | torch.device = "cpu") -> Agent:
    """Load the trained policy of a checkpoint written by `helpers.training.train`."""
    state = load_checkpoint(path)
    try:
        config = Config.from_dict(state["config"])
        obs_norm = state["obs_norm"]
        params = kept_params(state)
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path} is not a usable training checkpoint: {err}") from None
    env = make_env(obs_norm=obs_norm)
    try:
        actor = make_actor(env, config.init_bias, device, config.network, config.frames_seen)
    finally:
        env.close()
    load_params_into(actor, params, str(path))
    actor.eval()
    info = {k: state.get(k) for k in INFO_KEYS}
    return Agent(actor, obs_norm, config, info)


def ship_run(run_dir: str | Path, dest: str | Path) -> Path:
    """Make `dest` a shipped agent: its kept parameters as `agent.pt` (a few MB), the run's
    log, curves, settings, final evaluation and command, and a SHA256SUMS manifest."""
    run_dir, dest = Path(run_dir), Path(dest)
    state = load_checkpoint(run_dir / CHECKPOINT_FILE)
    if state.get("interrupted"):
        raise ValueError(
            f"{run_dir} holds an interrupted run: finish it (--resume) before shipping."
        )
    missing = [name for name in SHIPPED_RUN_FILES if not (run_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{run_dir} is not a finished run: it lacks {', '.join(missing)}.")
    names = [*SHIPPED_RUN_FILES, *([COMMAND_FILE] if (run_dir / COMMAND_FILE).is_file() else [])]
    if dest.is_dir() and any(dest.iterdir()) and not (dest / MANIFEST).is_file():
        raise ValueError(
            f"{dest} holds files and no {MANIFEST}, so it is not a shipped agent's folder: "
            "nothing was changed. Choose a new folder, or a shipped agent's to replace it."
        )
    dest.mkdir(parents=True, exist_ok=True)
    (dest / COMMAND_FILE).unlink(missing_ok=True)  # the replaced agent's, if this run has none
    agent = {k: state.get(k) for k in INFO_KEYS}
    agent.update(config=state["config"], obs_norm=state["obs_norm"])
    agent["params"] = kept_params(state)
    save_checkpoint(dest / AGENT_FILE, **agent)
    for name in names:
        shutil.copyfile(run_dir / name, dest / name)
    return write_manifest(dest)
