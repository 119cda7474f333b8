"""Every notebook (its first cell). Where the course runs: the device, the outputs folder, and the banner every notebook prints."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import torch

from helpers.commands.timings import time_line
from helpers.config import MODE_VARIABLE, Config, config_for_mode, get_mode

OUTPUT_VARIABLE = "DQN_COURSE_OUTPUT_DIR"
DEVICE_VARIABLE = "DQN_COURSE_DEVICE"


def get_device(preferred: str | torch.device | None = None) -> torch.device:
    """Pick CUDA, then Apple MPS, then CPU; `preferred` (or $DQN_COURSE_DEVICE) overrides."""
    preferred = preferred or os.environ.get(DEVICE_VARIABLE) or None
    if preferred is not None:
        return check_device(preferred)
    if torch.cuda.is_available():
        return torch.device("cuda:0")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def check_device(name: str | torch.device) -> torch.device:
    """`name` as a torch device, refused with what to do when this machine has none such."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"Unknown device {name!r} (set by DQN_COURSE_DEVICE or device=): use cpu, cuda or mps."
        ) from None
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "mps": torch.backends.mps.is_available(),
    }
    if not available.get(device.type, False):
        raise ValueError(
            f"Device {name!r} is not available on this machine: unset DQN_COURSE_DEVICE to let "
            "the course choose, or use cpu."
        )
    return device


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Torch's intra-op threads set to `threads` for the block, then set back."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def output_dir(*parts: str) -> Path:
    """Where the course writes what it makes: $DQN_COURSE_OUTPUT_DIR, else `outputs/`, made
    if missing; `parts` name a folder inside it, which is not made here.

    `outputs/` sits at the root of the repository when `helpers` is installed from
    a checkout (`pip install -e .`), and in the current folder otherwise.
    """
    root = os.environ.get(OUTPUT_VARIABLE)
    if root:
        base = Path(root)
    else:
        repo = Path(__file__).resolve().parent.parent
        base = repo / "outputs" if (repo / "pyproject.toml").exists() else Path("outputs")
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        where = f"${OUTPUT_VARIABLE} ({root})" if root else str(base)
        raise ValueError(
            f"Cannot make the outputs folder {base} ({err.strerror}): point {where} at a "
            "folder you can write to, or unset it."
        ) from None
    return base.joinpath(*parts)  # (made by whatever writes there: a refused run leaves none)


# The settings each notebook's own cells use (a test keeps these equal to the `config.NAME` in
# each notebook); the training notebooks' `train` uses every setting, so they show them all.
NOTEBOOK_SETTINGS: dict[str, tuple[str, ...]] = {
    "01_environment": ("eval_max_steps",),
    "02_normalization": ("norm_init_iter", "eval_max_steps"),
    "03_model": (
        "norm_init_iter",
        "network",
        "init_bias",
        "eps_end",
        "annealing_frames",
        "total_frames",
    ),
    "04_td0": ("all",),
    "05_td_lambda": ("all",),
    "06_video": ("gamma", "eval_max_steps"),
    "07_experiments": ("all",),
}


def _settings_lines(config: Config, names: tuple[str, ...], width: int = 96) -> list[str]:
    """`name=value` pairs, several to a line."""
    lines, line = [], " "
    for name in names:
        pair = f" {name}={getattr(config, name)}"
        if len(line) + len(pair) > width:
            lines.append(line)
            line = " "
        line += pair
    return [*lines, line]


def setup_banner(
    mode: str | None = None, config: Config | None = None, notebook: str | None = None
) -> str:
    """The text the first cell of every notebook prints: versions, mode, device, how long the
    `notebook` takes (from `helpers.commands.timings`), and the settings it uses (`NOTEBOOK_SETTINGS`;
    every setting when no notebook is named)."""
    mode = get_mode(mode)
    config = config or config_for_mode(mode)
    packages = ["torch", "torchvision", "torchrl", "tensordict", "gymnasium"]
    lines = [
        " ".join([f"python {platform.python_version()}"] + [f"{n} {version(n)}" for n in packages])
    ]
    lines += [f"mode: {mode}  (change it with {MODE_VARIABLE}=smoke|workshop|full)"]
    lines += [f"device: {get_device()}   outputs: {output_dir()}"]
    lines += [time_line(notebook, mode)] if notebook else []
    every = tuple(field.name for field in dataclasses.fields(config))
    names = NOTEBOOK_SETTINGS.get(notebook, ("all",)) if notebook else ("all",)
    if names == ("all",):
        lines += [f"settings ({config.preset} preset; the run uses them all):"]
        names = every
    else:
        lines += [f"settings this notebook uses ({config.preset} preset; print(config) shows all):"]
    return "\n".join(lines + _settings_lines(config, names))
