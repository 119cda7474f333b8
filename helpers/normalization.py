"""Notebook 02. The normalization constants (notebook 02): computed from random play with `init_stats`,
saved with the view of the frame they belong to, loaded back, or computed when missing."""

from __future__ import annotations

from pathlib import Path

import torch
from torchrl.envs import Compose

from helpers.envs import STACK_KEY, FrameNorm, check_norm_constants, make_env
from helpers.machine import output_dir

NORM_REDUCE_DIMS = (-1, -2, -4)  # average over width, height and time...
NORM_KEEP_DIMS = (-1, -2)  # ...keeping size-1 width and height: loc/scale are [4, 1, 1]
NORM_FILE = "obs_norm.pt"  # where notebook 02 saves the constants, in the outputs folder
# Saved with the constants: which view of the frame they were computed on, so that a file made
# before the pipeline changed is recomputed rather than used.
NORM_VIEW = "rows 160-319, uint8 resize then grey"


def compute_norm_constants(num_iter: int = 1_000, seed: int | None = 0) -> dict:
    """Run a random policy for `num_iter` steps and return the ObservationNorm state dict."""
    env = make_env(seed=seed)
    try:
        with torch.random.fork_rng():
            if seed is not None:
                torch.manual_seed(seed)  # the random actions too, leaving the caller's RNG alone
            env.transform[-1].init_stats(
                num_iter=num_iter,
                reduce_dim=list(NORM_REDUCE_DIMS),
                cat_dim=0,
                keep_dims=NORM_KEEP_DIMS,
            )
        return {k: v.clone() for k, v in env.transform[-1].state_dict().items()}
    finally:
        env.close()


def save_norm_constants(state_dict: dict, path: str | Path) -> Path:
    """Save the normalization constants to `path` (a small torch file)."""
    check_norm_constants(state_dict)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({**state_dict, "view": NORM_VIEW}, path)
    return path


def load_norm_constants(path: str | Path) -> dict:
    """Load constants saved by `save_norm_constants`; a missing file names the notebook that makes it."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"No normalization constants at {path}. Run notebook 02_normalization first, "
            "or compute them with helpers.normalization.compute_norm_constants()."
        )
    state_dict = torch.load(path, weights_only=True)
    check_norm_constants(state_dict)
    return state_dict


def course_norm_constants(num_iter: int = 1_000) -> dict:
    """The constants notebook 02 saved in the outputs folder; when that file is missing or was
    made for an older pipeline, say so, compute them (`num_iter` random steps) and save them."""
    path = output_dir() / NORM_FILE
    if path.exists():
        state_dict = load_norm_constants(path)
        if state_dict.get("view") == NORM_VIEW:
            print(f"Normalization constants loaded from {path}")
            return state_dict
        print(f"{path} was computed on an older view of the frame: computing the constants now.")
    else:
        print(f"{path} not found (notebook 02_normalization makes it): computing them now.")
    state_dict = compute_norm_constants(num_iter)
    save_norm_constants(state_dict, path)
    return state_dict


def make_normalizer(obs_norm: dict) -> Compose:
    """uint8 stacks under `stack` -> normalized float `pixels`, for obs and next obs.

    The transform that ends the environment's pipeline, so a rebuilt stack is bit for bit the
    observation the policy saw while collecting.
    """
    return Compose(
        FrameNorm(obs_norm, [STACK_KEY, ("next", STACK_KEY)], ["pixels", ("next", "pixels")])
    )
