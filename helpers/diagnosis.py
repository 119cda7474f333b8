"""Notebook 07. Find the bug: runs trained with one planted fault each, to be named from their curves alone.

Each case is a real workshop-mode run in `results/broken/FAULT/`, made with
`python -m helpers sweep --mode workshop --seeds 3 --set SETTING --out results/broken/FAULT`,
where SETTING plants the fault: a `sabotage=` option of the course's code (`helpers.sabotage`)
or a setting mistyped. The notebook shows the cases by letter, so that the folder's name does
not give the answer away at a glance.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from matplotlib.figure import Figure

from helpers.config import REWARD_SCALE, Config
from helpers.experiments import RECIPE_RUNS_DIR
from helpers.plots import plot_training
from helpers.results import RESULTS_DIR
from helpers.run.folder import LOG_FILE
from helpers.run.logs import read_log
from helpers.sabotage import FAULTS

BROKEN_DIR = RESULTS_DIR.parent / "broken"
CASE_SEED = 3  # the training seed of every case, and of the healthy run shown beside them
# The recipe on that seed, from the same weeks as the cases (the ablations' recipe runs)
HEALTHY_RUN = RECIPE_RUNS_DIR / f"workshop-td-lambda-seed{CASE_SEED}"

# What a learner can answer: the planted faults (helpers.sabotage's, and a mistyped setting),
# and two that were not planted.
SUSPECTS: dict[str, str] = {
    **FAULTS,
    "epsilon-never-annealed": "epsilon never anneals: the agent explores at random all along",
    "online-target": "the target is computed with the online network, not the target network",
    "reward-sign": "the reward's sign is flipped: falling early pays",
}
CASES = {"A": "next-action", "B": "epsilon-never-annealed", "C": "ignore-terminated"}
# The setting each case was trained with (its command.json has the whole command).
SETTINGS = {
    "ignore-terminated": "sabotage=ignore-terminated",
    "next-action": "sabotage=next-action",
    "epsilon-never-annealed": "eps_frames=10000000 (10,000 mistyped with three more zeros)",
}
# How each fault shows in the curves: what the check says once the learner has answered. The
# {fields} are read from the case's log and the healthy run's (`case_facts`).
SIGNATURES: dict[str, str] = {
    "ignore-terminated": (
        "The value climbs past {ceiling:.0f}, what an episode that never ends is worth, to "
        "{max_value:.1f}, and stays near it ({last_value:.1f} at the end), while the evaluation "
        "peaks at {best_eval:.0f} steps and ends at {last_eval:.0f}, and the training episodes "
        "shrink to {last_length:.0f} steps, shorter than random play's 22. When falling costs "
        "nothing in the target, every state looks as good as any other, and nothing teaches "
        "the agent to keep the pole up."
    ),
    "next-action": (
        "The subtlest of the three: every panel looks like a healthy run that learns slowly. "
        "The evaluation climbs to {best_eval:.0f} steps (the healthy run: {healthy_best:.0f}), "
        "the training episodes lengthen to {last_length:.0f} steps (healthy: "
        "{healthy_length:.0f}), and the loss stays at a healthy level. Each step's reward and "
        "next state are right; only the action they are credited to is the next one, which in "
        "CartPole is often the same action, so the agent still learns, worse. A bug that "
        "degrades rather than breaks shows only against a reference run."
    ),
    "epsilon-never-annealed": (
        "The training episodes stay as short as random play ({last_length:.0f} steps at the "
        "end; healthy: {healthy_length:.0f}) for the whole run, while the evaluations, played "
        "greedily, reach {best_eval:.0f} steps: the learning works from replayed random play "
        "(Q-learning is off-policy), but the collector never stops exploring."
    ),
}


def case_facts(rows: list[dict], healthy: list[dict]) -> dict[str, float]:
    """The numbers SIGNATURES quote, from a case's log rows and the healthy run's: the largest
    mean Q-value and the mean of the last 100 batches', the best and last evaluations, the mean
    length of the last 50 training episodes logged (and the healthy run's best evaluation and
    last lengths), and the value of never falling, reward_scale / (1 - gamma)."""

    def logged(rows: list[dict], key: str) -> list[float]:
        return [r[key] for r in rows if not math.isnan(r[key])]

    def last_length(rows: list[dict]) -> float:
        return statistics.fmean(logged(rows, "train_episode_length")[-50:])

    values, evals = logged(rows, "value"), logged(rows, "eval_mean")
    return {
        "ceiling": REWARD_SCALE / (1 - Config.gamma),
        "max_value": max(values),
        "last_value": statistics.fmean(values[-100:]),
        "best_eval": max(evals),
        "last_eval": evals[-1],
        "last_length": last_length(rows),
        "healthy_best": max(logged(healthy, "eval_mean")),
        "healthy_length": last_length(healthy),
    }


def check_case(letter: str) -> str:
    """The fault behind case `letter`, or a ValueError that lists the cases."""
    if letter not in CASES:
        raise ValueError(f"Unknown case {letter!r}: choose one of {', '.join(CASES)}.")
    return CASES[letter]


def case_log(letter: str, root: str | Path = BROKEN_DIR) -> list[dict]:
    """The log rows of case `letter`'s run."""
    logs = sorted((Path(root) / check_case(letter)).glob(f"*/{LOG_FILE}"))
    if not logs:
        raise FileNotFoundError(f"Case {letter}'s run is missing from {root}.")
    return read_log(logs[0])


def show_case(letter: str) -> Figure:
    """The six panels of case `letter`'s run (notebook 04's `plot_training`)."""
    return plot_training(case_log(letter), f"case {letter}: one planted fault")


def show_healthy() -> Figure:
    """The same six panels for the recipe on the cases' training seed."""
    title = f"the recipe, healthy, seed {CASE_SEED}"
    return plot_training(read_log(HEALTHY_RUN / LOG_FILE), title)


def check_diagnosis(letter: str, suspect: str | None) -> str:
    """Whether `suspect` (one of SUSPECTS) is case `letter`'s fault, and what gives it away."""
    fault = check_case(letter)
    if suspect is None:
        return f"Case {letter}: write your answer, one of: {', '.join(SUSPECTS)}."
    if suspect not in SUSPECTS:
        raise ValueError(f"Unknown suspect {suspect!r}: choose one of {', '.join(SUSPECTS)}.")
    if suspect != fault:
        return (
            f"Case {letter}: not {suspect}. Look again at the panel that fault would change "
            "first, and at the one that looks healthy."
        )
    facts = case_facts(case_log(letter), read_log(HEALTHY_RUN / LOG_FILE))
    signature = SIGNATURES[fault].format(**facts)
    return f"Case {letter}: yes, {SUSPECTS[fault]} ({SETTINGS[fault]}). {signature}"
