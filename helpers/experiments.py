"""Notebook 07. Ablations: the recipe with one ingredient taken out, their reference bands, and a room's runs drawn over them.

Each ablation is one `Config` change (the `--set NAME=VALUE` of the command line). Its reference
runs are a sweep in `results/ablations/NAME/`, made with
`python -m helpers sweep --mode workshop --seeds 3 4 5 --set SETTING --out results/ablations/NAME`:
the same training seeds as three of the recipe's runs of the same weeks, which they are
measured against, kept beside them in `results/ablations/recipe/` (seeds 3 to 10).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from helpers.config import MAX_STEPS, SYSTEM_FIELDS, Config, config_for_mode, get_mode
from helpers.results import (
    RESULTS_DIR,
    finish_figure,
    load_runs,
    percentile,
    plot_band,
    reference_runs,
)
from helpers.run.folder import LOG_FILE, RUN_FILE, read_json
from helpers.run.logs import column, read_log

ABLATIONS_DIR = RESULTS_DIR.parent / "ablations"
RECIPE_RUNS_DIR = ABLATIONS_DIR / "recipe"  # the recipe's runs the ablations are measured against
TARGET = "td-lambda"  # every ablation changes the recipe of notebook 05


@dataclass(frozen=True)
class Ablation:
    """One ingredient taken out: what changes, and what we expected before running it."""

    title: str
    setting: str  # NAME=VALUE, as for `--set`
    hypothesis: str


ABLATIONS: dict[str, Ablation] = {
    "lambda-0": Ablation(
        "one-step targets on the same chunks (λ = 0)",
        "lmbda=0.0",
        "The λ-return carries a reward back over several steps at once, so with λ = 0 values "
        "spread more slowly and the agent learns later. Same chunks, same way of sampling "
        "them: this is the fair TD(0) control.",
    ),
    "no-double-dqn": Ablation(
        "plain DQN's max instead of double DQN",
        "double_dqn=false",
        "The max over noisy Q-values is biased upwards (van Hasselt et al. 2016): the value "
        "curve climbs higher and the evaluations are less steady.",
    ),
    "squared-error": Ablation(
        "squared error instead of Huber",
        "loss_function=l2",
        "With rewards of 0.1 a TD error beyond 1 is rare, and below 1 Huber is half the squared "
        "error: the squared error doubles the gradient, and otherwise changes little.",
    ),
    "epsilon-from-0.1": Ablation(
        "ε starts at 0.1 (the tutorial's) instead of 1.0",
        "eps_init=0.1",
        "The untrained network plays nearly the same short episode every time, so the memory "
        "fills with little variety and learning starts later.",
    ),
    "no-target-network": Ablation(
        "no target network (τ = 1)",
        "tau=1.0",
        "The target moves with every gradient step, so the network chases its own estimates: "
        "less stable learning (Mnih et al. 2015).",
    ),
    "slow-target-network": Ablation(
        "a slow target network (τ = 0.005)",
        "tau=0.005",
        "The target lags about 200 gradient steps behind instead of 25: steadier, but values "
        "travel more slowly, so 60,000 frames may not be enough.",
    ),
    "one-frame": Ablation(
        "one frame instead of a stack of four",
        "frames_seen=1",
        "One frame shows where the pole is, not which way it moves: the agent cannot tell a "
        "pole falling from one recovering, and scores far lower.",
    ),
    "one-gradient-step": Ablation(
        "one gradient step per batch instead of three",
        "n_optim=1",
        "A third of the updates on the same data: slower learning per frame.",
    ),
    "no-reward-scaling": Ablation(
        "rewards of 1 instead of 0.1",
        "reward_scale=1.0",
        "Values ten times larger: TD errors beyond 1 become common, where Huber's gradient "
        "stops growing, and the first guess of the value head (2) is far off.",
    ),
}


def check_ablation(name: str) -> Ablation:
    """The ablation called `name`, or a ValueError that lists them."""
    if name not in ABLATIONS:
        raise ValueError(f"Unknown ablation {name!r}: choose one of {', '.join(ABLATIONS)}.")
    return ABLATIONS[name]


def ablation_config(name: str, mode: str | None = None) -> Config:
    """The recipe of `mode` with the ablation's one change."""
    return config_for_mode(get_mode(mode)).with_settings([check_ablation(name).setting])


def ablation_runs(name: str, root: str | Path = ABLATIONS_DIR) -> list[dict]:
    """The ablation's finished reference runs (maybe none yet)."""
    check_ablation(name)
    return load_runs(Path(root) / name) if (Path(root) / name).is_dir() else []


def recipe_runs() -> list[dict]:
    """The workshop recipe's TD(lambda) runs that each ablation is set against: made in the
    same weeks as the ablations' runs, on their training seeds and more."""
    return reference_runs("workshop", TARGET, runs=load_runs(RECIPE_RUNS_DIR))


def _row(title: str, setting: str, runs: list[dict]) -> str:
    setting = setting or "—"
    if not runs:
        return f"| {title} | `{setting}` | not run yet | | | |"
    means = sorted(r["final"]["mean"] for r in runs)
    seeds = ", ".join(str(r["seed"]) for r in sorted(runs, key=lambda r: r["seed"]))
    minutes = [r["minutes"] for r in runs]
    return (
        f"| {title} | `{setting}` | {seeds} | {', '.join(f'{m:.1f}' for m in means)} "
        f"| {percentile(means, 50):.1f} | {min(minutes):.1f}–{max(minutes):.1f} |"
    )


def ablation_table(root: str | Path = ABLATIONS_DIR, runs: list[dict] | None = None) -> str:
    """A markdown table of the workshop recipe's TD(λ) runs and each ablation's: training seeds,
    final means over 100 test episodes (lowest first), their median and the wall minutes."""
    recipe = recipe_runs() if runs is None else reference_runs("workshop", TARGET, runs=runs)
    lines = [
        "| ablation | setting | training seeds | final means | median | minutes |",
        "|---|---|---|---|---|---|",
        _row("the recipe (none)", "", recipe),
    ]
    for name, ablation in ABLATIONS.items():
        lines.append(_row(ablation.title, ablation.setting, ablation_runs(name, root)))
    return "\n".join(lines)


def measured_answer(name: str, root: str | Path = ABLATIONS_DIR) -> str:
    """What the ablation's reference runs measured, seed by seed against the recipe's runs on
    the same seeds, and how many fall below the lowest of all the recipe's runs."""
    ablation = check_ablation(name)
    runs = sorted(ablation_runs(name, root), key=lambda r: r["seed"])
    if not runs:
        return f"Measured: no reference runs of {name} yet; yours is the first measurement."
    recipe = {r["seed"]: r["final"]["mean"] for r in recipe_runs()}
    if not recipe:
        return f"Measured: the recipe's workshop runs are missing from {RECIPE_RUNS_DIR}."
    pairs = [
        f"seed {r['seed']}: {r['final']['mean']:.1f}"
        + (f" (recipe {recipe[r['seed']]:.1f})" if r["seed"] in recipe else "")
        for r in runs
    ]
    lowest = min(recipe.values())
    below = sum(r["final"]["mean"] < lowest for r in runs)
    episodes = sorted({r["final"]["episodes"] for r in runs})
    return (
        f"Measured with {ablation.setting}, over {'/'.join(map(str, episodes))} test episodes: "
        f"{'; '.join(pairs)}. "
        f"{below} of {len(runs)} below the lowest of the recipe's {len(recipe)} runs "
        f"({lowest:.1f})."
    )


def _curve(ax, rows: list[dict], label: str, style: str = "k.-") -> None:
    frames, means = column(rows, "frames", "eval_mean"), column(rows, "eval_mean", "eval_mean")
    ax.plot(frames, means, style, label=label)


def plot_ablation(name: str, rows: list[dict] | None = None, title: str = "") -> Figure:
    """The recipe's band and the ablation's (workshop mode), and a run's curve (`rows`) on top."""
    ablation = check_ablation(name)
    fig, ax = plt.subplots(figsize=(8, 4))
    recipe = recipe_runs()
    if recipe:
        plot_band(ax, recipe, "recipe")
    runs = ablation_runs(name)
    if runs:
        plot_band(ax, runs, ablation.setting)
    if rows:
        _curve(ax, rows, "your run")
    return finish_figure(fig, ax, title or f"{ablation.title}, workshop mode")


def plot_all_ablations(root: str | Path = ABLATIONS_DIR) -> Figure:
    """One small panel per ablation that has reference runs: its band over the recipe's."""
    measured = {name: ablation_runs(name, root) for name in ABLATIONS}
    measured = {name: runs for name, runs in measured.items() if runs}
    if not measured:
        raise ValueError(f"No ablation has reference runs in {root} yet.")
    columns = min(3, len(measured))
    rows = -(-len(measured) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.2 * rows), squeeze=False)
    recipe = recipe_runs()
    for ax, (name, runs) in zip(axes.flat, measured.items()):
        if recipe:
            plot_band(ax, recipe, "recipe", color="grey")
        plot_band(ax, runs, ABLATIONS[name].setting, color="tab:red")
        ax.set_ylim(0, MAX_STEPS + 20)
        ax.set(title=ABLATIONS[name].title, xlabel="frames collected")
    for ax in list(axes.flat)[len(measured) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize="small")
    fig.tight_layout()
    return fig


def changes_from_recipe(run: dict) -> dict:
    """What a run (`run` as in run.json: its "mode" and "config") changed in its mode's recipe,
    setting by setting; settings of how the work runs (SYSTEM_FIELDS) do not count."""
    fields = Config.__dataclass_fields__
    settings = Config.from_dict({k: v for k, v in run["config"].items() if k in fields}).to_dict()
    recipe = config_for_mode(run["mode"]).to_dict()
    return {k: v for k, v in settings.items() if v != recipe[k] and k not in SYSTEM_FIELDS}


def ablation_of(run: dict) -> str | None:
    """The ablation a run is (`run` as in run.json), or None for the recipe or any other
    change."""
    changes = changes_from_recipe(run)
    for name in ABLATIONS:
        ablated = {"mode": run["mode"], "config": ablation_config(name, run["mode"]).to_dict()}
        if changes == changes_from_recipe(ablated):
            return name
    return None


def _pool_group(run: dict) -> str:
    """The panel of `pool_runs` a run goes in: its ablation, "recipe", or "other"."""
    return ablation_of(run) or ("recipe" if not changes_from_recipe(run) else "other")


def pool_runs(folder: str | Path, path: str | Path | None = None) -> Figure:
    """Every TD(lambda) run folder under `folder` (a room's runs, gathered in one place), drawn
    over the workshop band of the ablation it ran, one panel per ablation ("recipe" for runs
    that changed nothing, "other" for any other change); each run is labelled by its path under
    `folder`, and its mode when that is not workshop. Saved to `path` when given."""
    folder = Path(folder)
    groups: dict[str, list[tuple[str, list[dict]]]] = {}
    for run_file in sorted(folder.rglob(RUN_FILE)):
        log = run_file.parent / LOG_FILE
        if not log.is_file():
            continue
        run = read_json(run_file)
        if run["target"] != TARGET:  # (the bands are TD(lambda)'s)
            continue
        label = str(run_file.parent.relative_to(folder))
        label += "" if run["mode"] == "workshop" else f" ({run['mode']} mode)"
        groups.setdefault(_pool_group(run), []).append((label, read_log(log)))
    if not groups:
        raise ValueError(
            f"No TD(lambda) run folders (with {RUN_FILE} and {LOG_FILE}) under {folder}: copy "
            "the learners' outputs/ablation-NAME folders there."
        )
    fig, axes = plt.subplots(len(groups), 1, figsize=(8, 3.5 * len(groups)), squeeze=False)
    recipe = recipe_runs()
    titles = {"recipe": "the recipe", "other": "other changes (no reference band)"}
    for ax, (name, runs) in zip(axes[:, 0], sorted(groups.items())):
        if recipe:
            plot_band(ax, recipe, "recipe")
        reference = ablation_runs(name) if name in ABLATIONS else []
        if reference:
            plot_band(ax, reference, ABLATIONS[name].setting)
        for label, rows in runs:
            _curve(ax, rows, label, ".-")
        title = titles.get(name) or ABLATIONS[name].title
        finish_figure(fig, ax, f"{title}: {len(runs)} run(s)")
    if path is not None:
        fig.savefig(path, dpi=80)
    return fig
