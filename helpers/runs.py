"""A run folder: its files, one run at a time, and starting, replacing or resuming a run safely.

A folder holds a run once the run has saved its first checkpoint. Until then nothing that was
there before is lost: `--overwrite` sets the old run aside in `previous.pending/` and makes it
`previous/` only when the new run's first checkpoint is on disk; a run that fails (or is
killed) before that point gives the folder back as it found it, at the latest when the next
run starts there.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from pathlib import Path

from helpers.checkpoints import CHECKPOINT_FILE, load_checkpoint
from helpers.config import Config

RUN_FILE, LOG_FILE, CURVES_FILE, EVALUATION_FILE = (
    "run.json",
    "log.csv",
    "curves.png",
    "evaluation.json",
)
REPLAY_DIR = "replay"  # the replay memory of a run that stopped early, for --resume
RUN_FILES = (RUN_FILE, LOG_FILE, CHECKPOINT_FILE, CURVES_FILE, EVALUATION_FILE, REPLAY_DIR)
PREVIOUS_DIR = "previous"  # where --overwrite keeps the run it replaced
PENDING_DIR = "previous.pending"  # ... until the new run has saved its first checkpoint
LOCK_FILE = ".lock"  # held (flock) by the run using the folder; the kernel frees it on any exit
MAX_FRAMES = 10**9  # far beyond any run of this course; larger numbers overflow schedules
MAX_SEED = 2**31 - 20_000  # the evaluation environment uses seed + 10,000


class RunFolderError(ValueError):
    """A run folder that cannot be used as asked (busy, holding another run, not writable)."""


def check_run_arguments(config: Config, seed: int) -> None:
    """Refuse, before anything is written, a run that cannot work."""
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"--seed must be between 0 and {MAX_SEED:,}, got {seed}.")
    if config.total_frames < config.frames_per_batch:
        raise ValueError(
            f"total_frames ({config.total_frames}) is smaller than one batch "
            f"({config.frames_per_batch} frames): ask for at least {config.frames_per_batch}."
        )
    if config.total_frames > MAX_FRAMES:
        raise ValueError(f"total_frames ({config.total_frames}) is above {MAX_FRAMES:,}.")


class RunFolder:
    """The folder of one training run, locked for as long as the `with` block lasts.

    >>> with RunFolder(out_dir) as folder:
    ...     state = folder.start(run, resume=False, overwrite=False)  # checkpoint to resume, or None
    ...     ...  # train; after the first checkpoint is saved:
    ...     folder.keep()
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._kept = False

    def __enter__(self) -> RunFolder:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise RunFolderError(
                f"Cannot use {self.path} as a run folder: {_why_not(self.path, err)}. "
                "Choose a folder you can write to with --out."
            ) from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(self._fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(self._fd)
            self._fd = None
            raise RunFolderError(
                f"{self.path} is in use by another run (pid {owner}): wait for it to end, stop "
                "it, or choose another --out folder."
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)
        self._recover()
        return self

    def __exit__(self, exc_type, *exc: object) -> None:
        try:
            if not self._kept:
                self._recover()  # this run saved no checkpoint: give the folder back as it was
        finally:
            os.close(self._fd)
            self._fd = None

    def holds_run(self) -> bool:
        """A run lives here once it has a checkpoint (run.json alone is a start that failed)."""
        return (self.path / CHECKPOINT_FILE).is_file()

    def _recover(self) -> None:
        """Finish what a run that ended early left half done: a start that never reached its
        first checkpoint is removed and the run it was replacing comes back; a replacement
        that did reach it moves the old run to previous/."""
        if self.holds_run():
            self._promote_pending()
            return
        for name in RUN_FILES:
            _remove(self.path / name)
        pending = self.path / PENDING_DIR
        if pending.exists():
            for item in pending.iterdir():
                os.replace(item, self.path / item.name)
            pending.rmdir()

    def start(self, run: dict, resume: bool, overwrite: bool) -> dict | None:
        """Check the folder against `run`; return the checkpoint to resume from, if any."""
        run_file = self.path / RUN_FILE
        if resume:
            state = load_checkpoint(self.path / CHECKPOINT_FILE)
            saved = (state.get("target"), state.get("mode"), state["config"].get("pipeline"))
            asked = (run["target"], run["mode"], run["config"]["pipeline"])
            if saved != asked:
                raise RunFolderError(
                    f"{self.path} holds a {saved[0]} run in {saved[1]} mode with the {saved[2]} "
                    f"pipeline; cannot resume it as {asked[0]} in {asked[1]} mode with the "
                    f"{asked[2]} pipeline."
                )
            self._kept = True
            return state
        if self.holds_run():
            if not overwrite:
                old = json.loads(run_file.read_text()) if run_file.exists() else {}
                kind = "a different run" if old != run else "this run already"
                raise RunFolderError(
                    f"{self.path} holds {kind} ({old.get('target')}, {old.get('mode')} mode, "
                    f"seed {old.get('seed')}). Nothing was changed. Pass --resume to continue "
                    "it, --overwrite to replace it, or choose another --out folder."
                )
            pending = self.path / PENDING_DIR
            pending.mkdir()
            for name in RUN_FILES:
                if (self.path / name).exists():
                    os.replace(self.path / name, pending / name)
        run_file.write_text(json.dumps(run, indent=1))
        return None

    def resuming(self, run: dict) -> None:
        """A resumed run is about to train: its new description (total_frames) replaces the
        old one, and the old final evaluation goes (the resumed run writes its own)."""
        (self.path / EVALUATION_FILE).unlink(missing_ok=True)
        (self.path / RUN_FILE).write_text(json.dumps(run, indent=1))

    def keep(self) -> None:
        """The new run has saved its first checkpoint: the run it replaced becomes previous/."""
        if not self._kept:
            self._kept = True
            self._promote_pending()

    def _promote_pending(self) -> None:
        """The run set aside by --overwrite, if any, becomes previous/ (replacing the older one)."""
        pending = self.path / PENDING_DIR
        if pending.exists():
            previous = self.path / PREVIOUS_DIR
            _remove(pending / REPLAY_DIR)  # the replaced run cannot be resumed from previous/
            _remove(previous)
            os.replace(pending, previous)
            print(f"The run that was in {self.path} is now in {previous}.")


def wait_until_free(folder: Path, timeout: float) -> None:
    """Wait (up to `timeout` seconds) for the run using `folder` to let go of its lock."""
    if not (folder / LOCK_FILE).exists():
        return
    fd = os.open(folder / LOCK_FILE, os.O_RDONLY)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                time.sleep(0.5)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    """Delete a run's file or folder, if it is there."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _why_not(path: Path, err: OSError) -> str:
    """What stands in the way of creating or writing `path` (OSError's text names the
    deepest folder, which is rarely the one to blame)."""
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        return f"{existing} is a file"
    if existing is not None and existing != path:
        return f"{existing} does not accept new folders ({err.strerror})"
    return err.strerror or str(err)
