"""Every notebook (its first cell). Course modes and presets, and the hyperparameter dataclass that holds their settings."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass

MODES = ("smoke", "workshop", "full")
TARGETS = ("td0", "td-lambda")  # one-step targets (notebook 04), lambda-returns (notebook 05)
# The evaluations' seeds, which training never uses (helpers.evaluation): from EVAL_SEED for the
# evaluations during training (they choose the agent a run keeps), from TEST_SEED for the final
# evaluation and `python -m helpers evaluate` (they only report).
EVAL_SEED = 100_000
TEST_SEED = 200_000
MAX_STEPS = 500  # CartPole-v1 truncates its episodes at 500 steps
FRAME_STACK = 4  # the observation stacks this many consecutive frames (notebook 01)
REWARD_SCALE = 0.1  # the environment's reward of 1 per step reaches the agent as 0.1
DEFAULT_MODE = "workshop"
MODE_VARIABLE = "DQN_COURSE_MODE"


# The values `Config` accepts.
_POSITIVE = ("total_frames", "frames_per_batch", "batch_size", "buffer_size", "lr", "chunk_length")
_POSITIVE += ("num_workers", "num_collectors", "eval_every", "eval_episodes", "eval_max_steps")
_POSITIVE += ("norm_init_iter", "n_optim", "max_grad_norm", "frames_seen", "reward_scale")
_COUNTS = ("init_random_frames", "eps_frames", "final_episodes", "random_shift", "confirm_episodes")
_RATES = ("gamma", "lmbda", "tau", "eps_init", "eps_end")
PRESET_NAMES = ("course", "tutorial")  # the recipes a run starts from (`PRESETS` below)
LOSS_FUNCTIONS = ("smooth_l1", "l2")  # Huber, squared error (networks and pipelines: their modules)
# Faults planted on purpose for notebook 07's "find the bug" (helpers.sabotage); "" is none.
SABOTAGES = ("", "ignore-terminated", "next-action")
# Values that runs saved by earlier versions of the course hold under older names: setting ->
# {old name: name now} (`upgrade_settings`).
_RENAMED_VALUES = {
    "network": {"course": "two-conv", "tutorial": "three-conv"},
    "pipeline": {"course": "uint8", "tutorial": "float32"},
}
_RANGES = (
    (_POSITIVE, "positive", lambda v: v > 0),
    (_COUNTS, "0 or more", lambda v: v >= 0),
    (_RATES, "0 to 1", lambda v: 0 <= v <= 1),
)


@dataclass(frozen=True)
class Config:
    """Every hyperparameter of the course, with the tutorial's names where it had them.

    The defaults are the course's recipe (the agent that balances; see docs/recipe-and-results.md),
    `TUTORIAL_RECIPE` holds the tutorial's; `config_for_mode` replaces what a mode changes.
    """

    # The recipe these settings start from, whatever single settings were changed on top (the
    # results tables report it)
    preset: str = "course"  # "course" or "tutorial" (`PRESETS`)

    # Network and optimiser
    network: str = "two-conv"  # 2 conv + 256, ReLU; "three-conv": the tutorial's 3 conv, 64x64
    lr: float = 1e-3  # Adam learning rate
    betas: tuple[float, float] = (0.9, 0.999)  # Adam's moving-average factors
    n_optim: int = 2  # gradient steps per collected batch ("updates per data")
    max_grad_norm: float = 10.0  # gradients are clipped to this global norm

    # DQN
    gamma: float = 0.99  # discount factor of future rewards
    lmbda: float = 0.95  # lambda of the TD(lambda) targets (notebook 05)
    tau: float = 0.04  # soft target update: target <- tau * online + (1 - tau) * target
    loss_function: str = "smooth_l1"  # "smooth_l1" (Huber) or "l2" (squared error)
    double_dqn: bool = True  # the online network picks the next action, the target rates it

    # Data collection and replay
    total_frames: int = 100_000  # environment steps collected over the whole run
    init_random_frames: int = 2_000  # frames collected before the first gradient step
    frames_per_batch: int = 32  # frames in each batch the collector yields
    batch_size: int = 128  # transitions sampled from the replay buffer per gradient step
    buffer_size: int = 100_000  # replay buffer capacity, in frames
    chunk_length: int = 16  # consecutive steps per stored chunk for TD(lambda) (notebook 05)
    random_shift: int = 0  # DrQ augmentation: replayed stacks move up to this many pixels (0: off)
    reward_scale: float = REWARD_SCALE  # what each step's reward of 1 is multiplied by

    # What the network sees of each stack (1: where the pole is, not how fast it moves)
    frames_seen: int = FRAME_STACK  # the newest frames of the stack the network is given

    # How the work is laid out on the machine (the same learning either way; see
    # docs/speed-and-memory.md)
    num_workers: int = 2  # environments each collector steps
    num_collectors: int = 1  # collectors running asynchronously, each in its own process
    parallel_envs: bool = False  # a collector's envs in worker processes (ParallelEnv), or in turn
    # "uint8": the course's uint8 transforms and compact frame replay; "float32": the tutorial's
    # transform order and float32 stacks of every key in the replay (docs/replay-memory.md compares them)
    pipeline: str = "uint8"  # "uint8" or "float32" (above)

    # Exploration and initialisation
    eps_init: float = 1.0  # epsilon-greedy: probability of a random action at the start
    eps_end: float = 0.05  # ... and at the end of the annealing
    eps_frames: int = 20_000  # frames over which epsilon goes down linearly (0: total_frames)
    init_bias: float = 2.0  # initial bias of the value head, a rough first guess of Q

    # Evaluation (deterministic episodes on fixed seeds that training never uses)
    eval_every: int = 10_000  # frames between two evaluations during training
    eval_episodes: int = 5  # episodes per evaluation during training
    # (an evaluation with every episode at the step limit plays up to `confirm_episodes` more,
    # on the evaluation seeds after them, before it counts as perfect and stops the run; the
    # first that falls short ends it: helpers.evaluation.evaluation_lengths)
    confirm_episodes: int = 80  # episodes that confirm a perfect evaluation (0: none)
    final_episodes: int = 100  # episodes of the final evaluation, on other seeds
    eval_max_steps: int = MAX_STEPS  # the longest evaluation episode (CartPole-v1 stops there)
    norm_init_iter: int = 1_000  # random steps used to compute the normalization constants

    # Notebook 07's "find the bug"
    sabotage: str = ""  # a fault planted on purpose, one of SABOTAGES ("": none)

    def __post_init__(self) -> None:
        """Refuse settings of the wrong type or out of range, with the setting's name."""
        for field in dataclasses.fields(self):
            value, default = getattr(self, field.name), field.default
            expected = (int, float) if type(default) is float else type(default)
            wrong_kind = isinstance(value, bool) != isinstance(default, bool)
            if wrong_kind or not isinstance(value, expected):
                raise ValueError(
                    f"Setting {field.name} = {value!r} should be of type {type(default).__name__}."
                )
        for names, allowed, ok in _RANGES:
            for name in names:
                value = getattr(self, name)
                if not ok(value):
                    raise ValueError(f"Setting {name} must be {allowed}, got {value}.")
        for name in ("lr", "max_grad_norm"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(
                    f"Setting {name} must be a finite number, got {getattr(self, name)}."
                )
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(
                f"Setting betas must be two numbers from 0 to below 1, got {self.betas}."
            )
        if self.preset not in PRESET_NAMES:
            raise ValueError(
                f"Setting preset = {self.preset!r} is not one of {', '.join(PRESET_NAMES)}."
            )
        if self.loss_function not in LOSS_FUNCTIONS:
            raise ValueError(
                f"Setting loss_function = {self.loss_function!r} is not one of "
                f"{', '.join(LOSS_FUNCTIONS)}."
            )
        if self.frames_seen > FRAME_STACK:
            raise ValueError(
                f"Setting frames_seen must be 1 to {FRAME_STACK} (the frames of a stack), "
                f"got {self.frames_seen}."
            )
        if self.sabotage not in SABOTAGES:
            raise ValueError(
                f"Setting sabotage = {self.sabotage!r} is not one of "
                f"{', '.join(repr(s) for s in SABOTAGES)}."
            )
        if self.eps_init < self.eps_end:
            raise ValueError(
                f"Setting eps_init ({self.eps_init}) is below eps_end ({self.eps_end}): epsilon "
                "anneals down, so eps_init must be the larger."
            )

    def replace(self, **changes: object) -> Config:
        """Return a copy with some fields changed (unknown names raise TypeError)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The settings as plain types, for checkpoints, run.json and subprocesses."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> Config:
        """The inverse of `to_dict` (JSON and checkpoints turn the betas tuple into a list); an
        older run's settings are read in today's names (`upgrade_settings`)."""
        values = upgrade_settings(values)
        return cls(**{**values, "betas": tuple(values["betas"])})

    def with_settings(self, settings: list[str]) -> Config:
        """A copy with "name=value" settings applied, each value read as its field's type.

        For recipe studies from the command line: `train ... --set n_optim=3 --set lr=5e-4`.
        """
        types = {f.name: type(getattr(self, f.name)) for f in dataclasses.fields(self)}
        changes: dict[str, object] = {}
        for setting in settings:
            name, sep, text = setting.partition("=")
            if not sep or name not in types or name == "betas":
                raise ValueError(
                    f"Cannot apply --set {setting!r}: write NAME=VALUE with NAME one of "
                    f"{', '.join(n for n in types if n != 'betas')}."
                )
            kind = types[name]
            try:
                if kind is bool:
                    if text.lower() not in ("true", "false"):
                        raise ValueError(text)
                    changes[name] = text.lower() == "true"
                else:
                    changes[name] = kind(text)
            except ValueError:
                raise ValueError(
                    f"Cannot apply --set {setting!r}: {name} takes a value of type {kind.__name__}."
                ) from None
        return self.replace(**changes)

    @property
    def annealing_frames(self) -> int:
        """Frames over which epsilon anneals: `eps_frames`, or the whole run when it is 0."""
        return self.eps_frames or self.total_frames


def upgrade_settings(values: dict) -> dict:
    """Settings as a run.json or checkpoint holds them, in today's names: values renamed since
    the run was saved (`_RENAMED_VALUES`) replaced, and the preset, which runs did not always
    record, told by the network (the tutorial's preset is the only one with three convolutions).
    """
    values = {
        name: _RENAMED_VALUES.get(name, {}).get(value, value) if isinstance(value, str) else value
        for name, value in values.items()
    }
    if "preset" not in values and "network" in values:
        values["preset"] = "tutorial" if values["network"] == "three-conv" else "course"
    return values


# The tutorial's pipeline and process layout, kept to compare against: `python -m helpers bench`
# and docs/replay-memory.md.
TUTORIAL_SYSTEM = dict(pipeline="float32", num_collectors=2, num_workers=2, parallel_envs=True)
SYSTEM_FIELDS = tuple(TUTORIAL_SYSTEM)  # how the work runs, not what is learned
# The tutorial's learning settings (its short-run values; full mode adds its "proper" ones).
TUTORIAL_RECIPE = dict(
    network="three-conv",
    lr=2e-3,
    n_optim=8,
    max_grad_norm=1.0,
    tau=0.005,
    loss_function="l2",
    double_dqn=False,
    batch_size=32,
    init_random_frames=100,
    eps_init=0.1,
    eps_end=0.005,
    eps_frames=0,
    eval_episodes=1,
)

_COURSE_MODES: dict[str, dict[str, object]] = {
    # Every notebook in well under a minute on a 2-core CPU: checks that the code runs.
    "smoke": dict(
        total_frames=512,
        init_random_frames=64,
        batch_size=32,
        buffer_size=512,  # the whole run
        eps_frames=256,  # half the run
        eval_every=256,
        eval_episodes=2,
        confirm_episodes=2,
        final_episodes=3,
        eval_max_steps=100,
        norm_init_iter=100,
    ),
    # A training notebook in a workshop slot (its time on a 2-core CPU: the README's table of
    # notebooks): an agent that balances. 3 gradient steps per batch and 20 episodes per
    # evaluation, as in full mode: with 2 steps and 5 episodes over 50,000 frames, the kept
    # agents of three seeds scored 328 to 443 (results/earlier-recipe/two-gradient-steps/ and
    # results/levers/).
    "workshop": dict(
        total_frames=60_000,
        buffer_size=60_000,  # the whole run
        n_optim=3,
        eps_frames=10_000,  # half of full mode's 20,000, in a run 60% as long
        eval_every=5_000,  # twice as often as full mode: 13 evaluations with the first
        eval_episodes=20,
    ),
    # The course's real run: 100,000 frames on a 2-core CPU (the README's table of modes). 3
    # gradient steps per batch: with 2, three of seven runs stopped short of 490
    # (docs/recipe-and-results.md). 20 episodes per evaluation: 5 cannot tell an agent at 470
    # from one at 500, and the run keeps the best.
    "full": dict(n_optim=3, eval_episodes=20),
}
# The tutorial's hyperparameters per mode; full mode with its process layout (4 collectors of
# 8 workers).
_TUTORIAL_MODES: dict[str, dict[str, object]] = {
    "smoke": dict(_COURSE_MODES["smoke"], n_optim=4, eps_frames=0),
    "workshop": dict(
        total_frames=16_000, init_random_frames=500, buffer_size=16_000, eval_every=320
    ),
    "full": dict(
        total_frames=500_000,
        init_random_frames=1_000,
        frames_per_batch=128,  # 4 steps of each of the 32 environments
        batch_size=256,
        buffer_size=100_000,
        eval_every=1_280,  # every 10 batches
        num_collectors=4,
        num_workers=8,
    ),
}

TUTORIAL = Config().replace(preset="tutorial", **TUTORIAL_RECIPE, **TUTORIAL_SYSTEM)

# The presets, the one list of them: each mode's settings on top of a recipe. "course" is the
# course's recipe and layout; "tutorial" the tutorial's hyperparameters, network, pipeline and
# process layout, kept to compare against (`--preset tutorial`, `bench`).
PRESETS: dict[str, dict[str, Config]] = {
    "course": {mode: Config().replace(**changes) for mode, changes in _COURSE_MODES.items()},
    "tutorial": {mode: TUTORIAL.replace(**changes) for mode, changes in _TUTORIAL_MODES.items()},
}


def get_mode(mode: str | None = None) -> str:
    """Return the course mode: `mode` if given, else $DQN_COURSE_MODE, else workshop."""
    if mode is None:
        mode = os.environ.get(MODE_VARIABLE, "").strip() or DEFAULT_MODE
    if mode not in MODES:
        raise ValueError(
            f"Unknown course mode {mode!r}: choose one of {', '.join(MODES)} "
            f"(set it with {MODE_VARIABLE}=smoke|workshop|full)."
        )
    return mode


def config_for_mode(mode: str | None = None, preset: str = "course") -> Config:
    """The hyperparameters of a course mode (see `get_mode`) and preset (see `PRESETS`)."""
    mode = get_mode(mode)
    if preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r}: choose one of {', '.join(PRESETS)}.")
    return PRESETS[preset][mode]
