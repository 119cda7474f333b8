"""Checkpoint utils: save a training run's state, and load a trained agent safely (weights only)."""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from tensordict import TensorDict
from torchrl.envs import TransformedEnv
from torchrl.modules import QValueActor

from helpers.config import Config
from helpers.envs import make_env
from helpers.models import make_actor

FORMAT = "pixel-dqn-course/1"
# What `load_agent` reports of the run that made a checkpoint.
INFO_KEYS = ("target", "mode", "seed", "frames", "interrupted", "best_frames", "best_eval")
MANIFEST = "SHA256SUMS"  # beside shipped agents: `sha256sum -c SHA256SUMS` checks them too
CHECKPOINT_FILE = "checkpoint.pt"  # a training run's full state, in its run folder
AGENT_FILE = "agent.pt"  # a shipped agent: the kept parameters, settings and constants only
# The agents shipped with the course (`checkpoints/td-lambda/agent.pt`, ...), in a checkout.
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "checkpoints"
# What `ship_run` copies from a run folder beside the agent (the evidence of how it was made).
SHIPPED_RUN_FILES = ("run.json", "log.csv", "curves.png", "evaluation.json", "command.json")


class CheckpointError(ValueError):
    """A file that is not a usable checkpoint of this course."""


class CheckpointSaveError(OSError):
    """A checkpoint that could not be written (full disk, read-only folder)."""


def save_checkpoint(path: str | Path, **state: object) -> Path:
    """Write `state` (tensors, numbers, strings, dicts) to `path` atomically.

    The file is first written next to `path` and then renamed, so an interrupted or failed
    save (a full disk) never leaves a truncated checkpoint in place of a good one.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save({"format": FORMAT, **state}, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:  # torch reports a full disk as a RuntimeError
        tmp.unlink(missing_ok=True)
        raise CheckpointSaveError(
            f"Could not write {path} (is the disk full or the folder read-only? {err}). "
            "The checkpoint saved there before is unchanged: free some space, then --resume."
        ) from None
    return path


# What a training run's checkpoint holds besides the parameters: `training_state` writes it,
# `restore_training` reads it back, `load_agent` reads the kept parameters.
COUNTERS = ("frames", "batches", "trajectories")


def training_state(
    *,
    run: dict,
    counters: dict,
    loss_module: torch.nn.Module,
    optim: torch.optim.Optimizer,
    obs_norm: dict,
    epsilon: float,
    best: dict,
    finished: bool,
) -> dict:
    """Everything `--resume` needs to go on, and `load_agent` to play: the run's description
    (target, mode, seed, config), counters, online and target parameters, Adam's moments,
    epsilon, normalization constants and the best-evaluated parameters."""
    return dict(
        target=run["target"],
        mode=run["mode"],
        seed=run["seed"],
        config=run["config"],
        **{k: counters[k] for k in COUNTERS},
        interrupted=not finished,
        params=flat_params(loss_module.value_network_params),
        target_params=flat_params(loss_module.target_value_network_params),
        optimizer=optim.state_dict(),
        obs_norm=obs_norm,
        epsilon=float(epsilon),
        best_params=best["params"],
        best_eval=best["eval"],
        best_frames=best["frames"],
    )


def restore_training(
    state: dict,
    actor: QValueActor,
    loss_module: torch.nn.Module,
    optim: torch.optim.Optimizer,
    egreedy: torch.nn.Module,
    source: str,
) -> tuple[dict, dict]:
    """Put a checkpoint's parameters (checked like an agent's: `load_params_into`), target
    parameters, Adam state and epsilon back in place; return its counters and its best
    evaluation (as `training_state` takes them)."""
    device = next(loss_module.parameters()).device
    load_params_into(actor, state["params"], source)
    target = loss_module.target_value_network_params.flatten_keys(".")
    with torch.no_grad():
        target.update_(TensorDict(state["target_params"], batch_size=[]).to(device))
    optim.load_state_dict(state["optimizer"])
    egreedy.eps.fill_(state["epsilon"])
    best = {"eval": state["best_eval"], "frames": state["best_frames"], "params": None}
    if state.get("best_params") is not None:
        best["params"] = {k: v.to(device) for k, v in state["best_params"].items()}
    return {k: state[k] for k in COUNTERS}, best


def flat_params(params: TensorDict) -> dict[str, torch.Tensor]:
    """A parameter TensorDict as a plain {"a.b.c": tensor} dict that loads with weights_only."""
    return {k: v.detach().cpu().clone() for k, v in params.flatten_keys(".").items()}


def sha256(path: str | Path) -> str:
    """The SHA-256 of a file, in hex."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: str | Path) -> Path:
    """Write `folder/SHA256SUMS` for every other file in `folder` (the `sha256sum` format)."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name != MANIFEST)
    lines = [f"{sha256(p)}  {p.name}\n" for p in files]
    (folder / MANIFEST).write_text("".join(lines))
    return folder / MANIFEST


def check_manifest(path: str | Path) -> None:
    """Refuse a file that sits beside a SHA256SUMS manifest and does not match it.

    Files without a manifest beside them (the learner's own runs) are not checked.
    """
    path = Path(path)
    manifest = path.parent / MANIFEST
    if not manifest.is_file():
        return
    expected = dict(
        reversed(line.split(maxsplit=1)) for line in manifest.read_text().splitlines() if line
    )
    if path.name not in expected:
        raise CheckpointError(
            f"{path} is not listed in {manifest}: only the shipped files may sit there. "
            "Move your own checkpoints elsewhere."
        )
    if sha256(path) != expected[path.name]:
        raise CheckpointError(
            f"{path} has changed since it was shipped (its SHA-256 differs from {manifest}). "
            f"Restore it with `git checkout -- {path}`."
        )


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint with `weights_only=True` (it can never run code) and check its format.

    A shipped agent (a SHA256SUMS manifest beside it) must also match its manifest.
    """
    path = Path(path)
    if path.is_dir():  # a run folder, or a shipped agent's folder
        path = next((path / n for n in (CHECKPOINT_FILE, AGENT_FILE) if (path / n).is_file()), path)
    if not path.is_file():
        raise FileNotFoundError(
            f"No checkpoint at {path}. Train one first (notebook 04/05 or "
            "`python -m helpers train`), or use one from checkpoints/."
        )
    check_manifest(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, OSError) as err:
        if "Unsupported global" in str(err):  # a pickle of objects that could run code
            raise CheckpointError(
                f"{path} holds Python objects, not only tensors and numbers: refused. Course "
                "checkpoints load with weights_only=True, which cannot run code; do not load "
                "this file any other way unless you trust where it came from."
            ) from None
        # torch's text for unpickling errors advises weights_only=False: leave it out.
        detail = "" if isinstance(err, pickle.UnpicklingError) else f": {err}"
        raise CheckpointError(
            f"{path} is not a readable checkpoint (truncated, corrupt or not a torch file){detail}"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a checkpoint of this course (expected format {FORMAT!r})."
        )
    return state


def load_params_into(actor: QValueActor, flat: dict[str, torch.Tensor], source: str) -> None:
    """Copy saved parameters into `actor`, refusing a file made for another architecture."""
    params = TensorDict.from_module(actor).flatten_keys(".")
    expected = {k: tuple(v.shape) for k, v in params.items()}
    found = {k: tuple(v.shape) for k, v in flat.items()}
    if expected != found:
        diff = sorted(set(expected.items()) ^ set(found.items()))[:4]
        raise CheckpointError(
            f"{source} was made with a different network architecture than this course's "
            f"(first differences: {diff})."
        )
    _check_finite(flat, source)
    with torch.no_grad():
        params.update_(TensorDict(flat, batch_size=[]))


def _check_finite(flat: dict[str, torch.Tensor], source: str) -> None:
    """Refuse parameters with NaN or infinite values (a run that diverged)."""
    bad = [k for k, v in flat.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(
            f"{source} holds parameters that are not finite numbers (NaN or inf, in {bad[0]}): "
            "the run that wrote it diverged. Use another checkpoint or train again."
        )


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
        actor = make_actor(env, config.init_bias, device, config.network)
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
    dest.mkdir(parents=True, exist_ok=True)
    agent = {k: state.get(k) for k in INFO_KEYS}
    agent.update(config=state["config"], obs_norm=state["obs_norm"])
    agent["params"] = kept_params(state)
    save_checkpoint(dest / AGENT_FILE, **agent)
    for name in SHIPPED_RUN_FILES:
        shutil.copyfile(run_dir / name, dest / name)
    return write_manifest(dest)
