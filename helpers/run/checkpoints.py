"""No notebook (run tooling; notebook 06 loads its agent with `helpers.agents`). Checkpoint utils: save a training run's state, and load a trained agent safely (weights only).

TorchRL 0.14 ships `torchrl.checkpoint.Checkpoint`: registered components saved as a folder or a
ZIP archive with a manifest, published with an atomic replace, state dicts loaded with
`weights_only=True`. The course keeps its own single-file format for what that lacks here: a
shipped agent is one `agent.pt` whose SHA256SUMS manifest `sha256sum -c` also checks (TorchRL's
manifest records no content hashes), and a save cut short by Ctrl+C, SIGTERM or a dead worker
leaves the previous checkpoint byte for byte and no partial file (`save_checkpoint`).
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import torch
from tensordict import TensorDict
from torchrl.modules import QValueActor

FORMAT = "pixel-dqn-course/1"
MANIFEST = "SHA256SUMS"  # beside shipped agents: `sha256sum -c SHA256SUMS` checks them too
CHECKPOINT_FILE = "checkpoint.pt"  # a training run's full state, in its run folder
AGENT_FILE = "agent.pt"  # a shipped agent: the kept parameters, settings and constants only
# The agents shipped with the course (`checkpoints/td-lambda/agent.pt`, ...), in a checkout.
SHIPPED_DIR = Path(__file__).resolve().parents[2] / "checkpoints"


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
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if not isinstance(err, (OSError, RuntimeError)):  # torch: a full disk is a RuntimeError
            raise  # an interruption (Ctrl+C, a worker's death): the run saves again as it stops
        raise CheckpointSaveError(
            f"Could not write {path} (is the disk full or the folder read-only? {err}). "
            "The checkpoint saved there before is unchanged: free some space, then --resume."
        ) from None
    return path


# What a training run's checkpoint holds besides the parameters: `training_state` writes it,
# `restore_training` reads it back, `load_agent` reads the kept parameters.
COUNTERS = ("frames", "batches", "trajectories")


def counters_after(row: dict) -> dict:
    """The run's counters once `row` is in the log: a checkpoint saved with them agrees with
    the log (rows read back from the file hold floats)."""
    return {
        "frames": int(row["frames"]),
        "batches": int(row["batch"]) + 1,
        "trajectories": int(row["trajectories"]),
    }


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
    replay: dict | None,
) -> dict:
    """Everything `--resume` needs to go on, and `load_agent` to play: the run's description
    (target, mode, seed, config), counters, online and target parameters, Adam's moments,
    epsilon, normalization constants, the best-evaluated parameters and the state of the
    replay memory kept in the run folder (`FrameReplay.state_dict`; None when not kept)."""
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
        replay=replay,
    )


def restore_training(
    state: dict,
    actor: QValueActor,
    loss_module: torch.nn.Module,
    optim: torch.optim.Optimizer,
    egreedy: torch.nn.Module,
    source: str,
) -> tuple[dict, dict, dict | None]:
    """Put a checkpoint's parameters (checked like an agent's: `load_params_into`), target
    parameters, Adam state and epsilon back in place; return its counters, its best
    evaluation and its replay memory's state (as `training_state` takes them)."""
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
    return {k: state[k] for k in COUNTERS}, best, state.get("replay")


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
    expected = read_manifest(manifest)
    if path.name not in expected:
        raise CheckpointError(
            f"{path} is not listed in {manifest}: only the shipped files may sit there. "
            "Move your own checkpoints elsewhere."
        )
    if sha256(path) != expected[path.name]:
        raise CheckpointError(
            f"{path} does not match its SHA-256 in {manifest}: one of the two has changed since "
            f"it was shipped. Restore both with `git checkout -- {path.parent}`."
        )


def read_manifest(manifest: Path) -> dict[str, str]:
    """A SHA256SUMS file as {file name: hex digest}; `sha256sum -b`'s "*name" is read too."""
    expected = {}
    for number, line in enumerate(manifest.read_text(errors="replace").splitlines(), 1):
        digest, _, name = line.partition(" ")
        name = name.lstrip(" ").removeprefix("*")
        if not line.strip():
            continue
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest) or not name:
            raise CheckpointError(
                f"{manifest}, line {number}, is not a SHA-256 line (HEX  NAME). Restore the "
                f"file with `git checkout -- {manifest}`."
            )
        expected[name] = digest
    return expected


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
    except Exception as err:  # an unpickler fed any bytes fails in many ways
        if "unsupported global" in str(err).lower():  # a pickle of objects that could run code
            raise CheckpointError(
                f"{path} holds Python objects, not only tensors and numbers: refused. Course "
                "checkpoints load with weights_only=True, which cannot run code; do not load "
                "this file any other way unless you trust where it came from."
            ) from None
        # torch's text for unpickling errors advises weights_only=False: leave it out.
        plain = isinstance(err, (pickle.UnpicklingError, KeyError))
        detail = "" if plain else f": {err}".splitlines()[0]
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


def not_finite(flat: dict[str, torch.Tensor]) -> list[str]:
    """The names of the parameters holding NaN or infinite values (a run that diverged)."""
    return [k for k, v in flat.items() if v.is_floating_point() and not torch.isfinite(v).all()]


def _check_finite(flat: dict[str, torch.Tensor], source: str) -> None:
    """Refuse parameters with NaN or infinite values (a run that diverged)."""
    bad = not_finite(flat)
    if bad:
        raise CheckpointError(
            f"{source} holds parameters that are not finite numbers (NaN or inf, in {bad[0]}): "
            "the run that wrote it diverged. Use another checkpoint or train again."
        )
