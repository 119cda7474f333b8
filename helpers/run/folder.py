"""No notebook (run tooling). A run folder: its files, one run at a time, and starting, replacing or resuming a run safely.

A folder holds a run once the run has saved its first checkpoint. The course marks the folders
it writes runs in (`MARKER_FILE`) and never deletes or replaces a file in a folder it did not
mark: a folder that holds files with a run's names, recorded results (`command.json`) or a
shipped agent (`SHA256SUMS`) is refused unless `--overwrite` sets them aside. Until the new
run's first checkpoint nothing that was there before is lost: `--overwrite` sets the old run
aside in `previous.pending/` and makes it `previous/` only when the new run's first checkpoint
is on disk; a run that fails (or is killed) before that point gives the folder back as it found
it, at the latest when the next run starts there.

Why the course's own code: `torchrl.checkpoint` publishes a checkpoint atomically and rotates
old ones, but it neither locks a folder against a second run nor tells the files a run wrote
from a learner's own, and so cannot promise never to delete what it did not write.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import stat
import time
from pathlib import Path

from helpers.config import Config, upgrade_settings
from helpers.run.checkpoints import AGENT_FILE, CHECKPOINT_FILE, MANIFEST, load_checkpoint
from helpers.run.logs import read_log

RUN_FILE, LOG_FILE, CURVES_FILE, EVALUATION_FILE = (
    "run.json",
    "log.csv",
    "curves.png",
    "evaluation.json",
)
REPLAY_DIR = "replay"  # the replay memory of a run that stopped early, for --resume
RUN_FILES = (RUN_FILE, LOG_FILE, CHECKPOINT_FILE, CURVES_FILE, EVALUATION_FILE, REPLAY_DIR)
MARKER_FILE = ".course-run"  # written by the course in every folder it trains a run in
COMMAND_FILE = "command.json"  # a recorded run's exact command, exit code and wall time
# Files a recorded run or a shipped agent holds besides the run's: --overwrite sets them aside too.
RECORD_FILES = (COMMAND_FILE, MANIFEST, AGENT_FILE)
PREVIOUS_DIR = "previous"  # where --overwrite keeps the run it replaced
PENDING_DIR = "previous.pending"  # ... until the new run has saved its first checkpoint
LOCK_FILE = ".lock"  # held (flock) by the run using the folder; the kernel frees it on any exit
MAX_FRAMES = 10**9  # far beyond any run of this course; larger numbers overflow schedules
MAX_SEED = 2**31 - 20_000  # seeds go up from here for the collector's environments


class RunFolderError(ValueError):
    """A run folder that cannot be used as asked (busy, holding another run, not writable)."""


def check_seed(seed: int, option: str = "--seed") -> int:
    """Return `seed` if it is a training seed the course can use, else a one-line ValueError."""
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"{option} must be between 0 and {MAX_SEED:,}, got {seed}.")
    return seed


def check_run_arguments(config: Config, seed: int) -> None:
    """Refuse, before anything is written, a run that cannot work."""
    check_seed(seed)
    if config.total_frames < config.frames_per_batch:
        raise ValueError(
            f"total_frames ({config.total_frames}) is smaller than one batch "
            f"({config.frames_per_batch} frames): ask for at least {config.frames_per_batch}."
        )
    if config.total_frames > MAX_FRAMES:
        raise ValueError(f"total_frames ({config.total_frames}) is above {MAX_FRAMES:,}.")


class RunFolder:
    """The folder of one training run, locked for as long as the `with` block lasts.

    >>> with RunFolder(run_dir) as folder:
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
        if self.owned():
            self._recover()
        return self

    def __exit__(self, exc_type, *exc: object) -> None:
        try:
            if not self._kept and self.owned():
                self._recover()  # this run saved no checkpoint: give the folder back as it was
        finally:
            os.close(self._fd)
            self._fd = None

    def owned(self) -> bool:
        """The course wrote a run here (its marker is there): only then does it delete files."""
        return (self.path / MARKER_FILE).is_file()

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
        for name in (*RUN_FILES, MARKER_FILE):
            _remove(self.path / name)
        pending = self.path / PENDING_DIR
        if pending.exists():  # (with the old folder's marker, if it had one)
            for item in pending.iterdir():
                os.replace(item, self.path / item.name)
            pending.rmdir()

    def start(self, run: dict, resume: bool, overwrite: bool) -> dict | None:
        """Check the folder against `run`; return the checkpoint to resume from, if any."""
        run_file = self.path / RUN_FILE
        if resume:
            state = load_checkpoint(self.path / CHECKPOINT_FILE)
            state["config"] = upgrade_settings(state["config"])  # (an older run's names)
            saved = (state.get("target"), state.get("mode"), state["config"].get("pipeline"))
            asked = (run["target"], run["mode"], run["config"]["pipeline"])
            if saved != asked:
                raise RunFolderError(
                    f"{self.path} holds a {saved[0]} run in {saved[1]} mode with the {saved[2]} "
                    f"pipeline; cannot resume it as {asked[0]} in {asked[1]} mode with the "
                    f"{asked[2]} pipeline."
                )
            changed = settings_resume_would_change(state["config"], run["config"])
            if changed:
                raise RunFolderError(
                    f"--resume goes on with the settings {self.path} was trained with, and these "
                    f"differ: {'; '.join(changed)}. Nothing was changed. Give the run's own "
                    f"settings (its {RUN_FILE}), or start a new run in another --out folder."
                )
            self._check_log(state["batches"])
            self._check_replay(state)
            (self.path / MARKER_FILE).touch()  # (a run of an earlier version of the course)
            self._kept = True
            return state
        if self.holds_run() and self.owned():
            if not overwrite:
                old = _read_run(run_file)
                kind = "a different run" if old != run else "this run already"
                raise RunFolderError(
                    f"{self.path} holds {kind} ({old.get('target')}, {old.get('mode')} mode, "
                    f"seed {old.get('seed')}). Nothing was changed. Pass --resume to continue "
                    "it, --overwrite to replace it, or choose another --out folder."
                )
        found = [n for n in (*RUN_FILES, *RECORD_FILES) if (self.path / n).exists()]
        if not self.owned() and found and not overwrite:
            records = [n for n in found if n in RECORD_FILES]
            what = (
                "a shipped agent"
                if MANIFEST in records
                else "a recorded run"
                if records
                else "files that no run of the course wrote"
            )
            raise RunFolderError(
                f"{self.path} holds {what} ({', '.join(found)}). Nothing was changed. Choose "
                "another --out folder, or pass --overwrite to move them to "
                f"{self.path / PREVIOUS_DIR}."
            )
        if found and (self.holds_run() or not self.owned()):
            old = _read_run(run_file)
            what = f"the {old.get('target')} run (seed {old.get('seed')})" if old else "the files"
            print(
                f"Replacing {what} in {self.path}: it moves to {self.path / PREVIOUS_DIR} once "
                "the new run saves its first checkpoint. To continue it instead: resume=True "
                "(--resume)."
            )
            pending = self.path / PENDING_DIR
            pending.mkdir()
            for name in (*found, MARKER_FILE):
                if (self.path / name).exists():
                    os.replace(self.path / name, pending / name)
        (self.path / MARKER_FILE).write_text("A run folder of the pixel-DQN course.\n")
        run_file.write_text(json.dumps(run, indent=1))
        return None

    def _check_log(self, batches: int) -> None:
        """Refuse a log that lacks rows the checkpoint counts (rows after them are dropped)."""
        path = self.path / LOG_FILE
        rows = read_log(path, limit=batches)
        if [int(row["batch"]) for row in rows] != list(range(batches)):
            raise RunFolderError(
                f"{path} holds {len(rows)} rows where its checkpoint counts {batches} batches in "
                "order (rows are missing or were edited). Nothing was changed. Restore the log, "
                "or start the run again with --overwrite."
            )

    def _check_replay(self, state: dict) -> None:
        """Refuse a kept replay memory that cannot be written to (the resumed run writes on)."""
        replay = self.path / REPLAY_DIR
        if state.get("replay") is None or not replay.is_dir():
            return
        for path in (replay, *replay.iterdir()):
            if not (os.access(path, os.W_OK) and path.stat().st_mode & stat.S_IWUSR):
                raise RunFolderError(
                    f"{path} is read-only. Nothing was changed. Make it writable (chmod -R u+w "
                    f"{replay}) to resume with the run's replay memory, or delete {replay} to "
                    "resume with an empty one."
                )

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


def _read_run(path: Path) -> dict:
    """A folder's run.json, or {} where it is missing or unreadable."""
    try:
        return read_json(path)
    except (OSError, ValueError):
        return {}


def read_json(path: Path) -> dict:
    """One of a run's JSON files, refused in one line that names it where it is not a JSON object."""
    try:
        value = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        value = err
    if not isinstance(value, dict):
        raise ValueError(
            f"{path} is not the JSON object the course wrote ({value}): restore it from where "
            "it came from (git checkout, a copy), or train the run again."
        )
    return value


def saved_buffer_size(folder: str | Path, default: int) -> int:
    """The replay memory size of the run in `folder` (its run.json), which `--resume` keeps."""
    size = _read_run(Path(folder) / RUN_FILE).get("config", {}).get("buffer_size")
    return size if isinstance(size, int) and size > 0 else default


def settings_resume_would_change(saved: dict, asked: dict) -> list[str]:
    """The settings `asked` (as run.json holds them) that differ from a checkpoint's `saved` ones,
    besides total_frames (the one a resumed run may change): "name saved -> asked"."""
    return [
        f"{name} {saved[name]!r} -> {asked[name]!r}"
        for name in asked
        if name != "total_frames" and name in saved and saved[name] != asked[name]
    ]


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
