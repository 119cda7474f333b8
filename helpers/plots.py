"""Notebooks 04 and 05. Plot utils: the six training panels, the TD(0) vs TD(lambda) comparison and a live curve."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from helpers.run.logs import column

RANDOM_POLICY_STEPS = 22  # a random policy keeps CartPole up for about 22 steps
EVAL_LABEL = "evaluation: mean episode length"


def eval_axes(ax, xlabel: str = "frames collected", title: str = "", legend: bool = True) -> None:
    """The style every evaluation-curve panel shares: the random policy's line, the labels,
    and (with `legend`) the legend."""
    ax.axhline(RANDOM_POLICY_STEPS, color="grey", ls="--", lw=1, label="random policy")
    ax.set(xlabel=xlabel, ylabel=EVAL_LABEL, title=title)
    if legend:
        ax.legend(loc="upper left")


def plot_training(rows: list[dict], title: str = "", path: str | Path | None = None) -> Figure:
    """The tutorial's six panels: evaluation by frames and by trajectories, loss, value,
    gradient norm and training episode length."""
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    panels = [(axes[0, 0], "frames", "frames collected")]
    panels += [(axes[0, 1], "trajectories", "training trajectories")]
    for ax, x, xlabel in panels:
        _eval_curve(ax, rows, x, label="evaluation (mean ± std)")
        eval_axes(ax, xlabel)
    for ax, name in zip(axes[0, 2:].tolist() + axes[1].tolist(), ["loss", "value", "grad_norm"]):
        ax.plot(column(rows, "frames", name), column(rows, name, name))
        ax.set(xlabel="frames collected", title=name.replace("_", " "))
    length = "train_episode_length"
    axes[1, 2].plot(column(rows, "frames", length), column(rows, length, length), ".", alpha=0.5)
    axes[1, 2].set(xlabel="frames collected", title="training episode length")
    fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=80)
    return fig


def plot_comparison(runs: dict[str, list[dict]], path: str | Path | None = None) -> Figure:
    """Evaluation episode length of several runs, by frames and by trajectories, on one figure."""
    fig, axes = plt.subplots(1, 2, figsize=(14, 5))
    for name, rows in runs.items():
        for ax, x in zip(axes, ["frames", "trajectories"]):
            _eval_curve(ax, rows, x, label=name)
    for ax, xlabel in zip(axes, ["frames collected", "training trajectories collected"]):
        eval_axes(ax, xlabel)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=80)
    return fig


def _eval_curve(ax, rows: list[dict], x: str, label: str | None = None) -> None:
    """The evaluations' mean episode length against `x`, with a band of one standard deviation."""
    xs, mean = column(rows, x, "eval_mean"), column(rows, "eval_mean", "eval_mean")
    std = column(rows, "eval_std", "eval_mean")
    (line,) = ax.plot(xs, mean, ".-", label=label)
    low = [m - s for m, s in zip(mean, std)]
    high = [m + s for m, s in zip(mean, std)]
    ax.fill_between(xs, low, high, color=line.get_color(), alpha=0.2)


class LiveCurve:
    """A learning curve that redraws in place in a notebook while training runs."""

    def __init__(self) -> None:
        from IPython.display import display

        self.fig, self.ax = plt.subplots(figsize=(7, 3.5))
        plt.close(self.fig)  # shown through the display handle only
        self.handle = display(self.fig, display_id=True)

    def update(self, rows: list[dict]) -> None:
        self.ax.clear()
        _eval_curve(self.ax, rows, "frames")
        eval_axes(self.ax, legend=False)
        self.handle.update(self.fig)


def in_notebook() -> bool:
    """True inside a Jupyter kernel (where a live plot can be drawn)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def progress_postfix(rows: list[dict]) -> dict:
    """The progress bar's summary: last loss and value, last evaluation."""
    last = rows[-1]
    evals = [r["eval_mean"] for r in rows if not math.isnan(r["eval_mean"])]
    return {  # (no loss before the first gradient step)
        "loss": "-" if math.isnan(last["loss"]) else f"{last['loss']:.4f}",
        "value": f"{last['value']:.3f}",
        "eval": f"{evals[-1]:.0f}" if evals else "-",
    }
