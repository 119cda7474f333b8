"""Run folders: one run at a time, and --overwrite never loses a good run before the new one
has its first checkpoint (real files and real locks, in this process and in another)."""

import json
import subprocess
import sys

import pytest

from helpers.run.folder import MARKER_FILE, PENDING_DIR, PREVIOUS_DIR, RunFolder, RunFolderError

RUN = {"target": "td0", "mode": "smoke", "seed": 0, "config": {"pipeline": "uint8"}}
NEW = {**RUN, "seed": 1}


@pytest.fixture
def good_run(tmp_path):
    """A folder holding a finished run (its files, with recognisable contents)."""
    out = tmp_path / "run"
    out.mkdir()
    (out / MARKER_FILE).write_text("")  # the course wrote it
    (out / "run.json").write_text(json.dumps(RUN))
    for name in ("log.csv", "checkpoint.pt", "curves.png", "evaluation.json"):
        (out / name).write_text(f"old {name}")
    return out


def files(folder):
    return {p.name: p.read_text() for p in folder.iterdir() if p.is_file() and p.name != ".lock"}


def test_a_run_that_fails_before_its_first_checkpoint_gives_the_old_run_back(good_run):
    before = files(good_run)
    with pytest.raises(RuntimeError), RunFolder(good_run) as folder:
        folder.start(NEW, resume=False, overwrite=True)
        (good_run / "log.csv").write_text("new rows")
        raise RuntimeError("the new run fails")
    assert files(good_run) == before
    assert not (good_run / PENDING_DIR).exists() and not (good_run / PREVIOUS_DIR).exists()


def test_overwrite_keeps_the_old_run_in_previous_once_the_new_one_has_a_checkpoint(good_run):
    (good_run / PREVIOUS_DIR).mkdir()
    (good_run / PREVIOUS_DIR / "log.csv").write_text("older still")
    before = files(good_run)
    with RunFolder(good_run) as folder:
        folder.start(NEW, resume=False, overwrite=True)
        # Until the first checkpoint, the run from two overwrites ago is still there.
        assert (good_run / PREVIOUS_DIR / "log.csv").read_text() == "older still"
        (good_run / "checkpoint.pt").write_text("new checkpoint")
        folder.keep()
    assert files(good_run / PREVIOUS_DIR) == before
    assert json.loads((good_run / "run.json").read_text()) == NEW


def test_the_replaced_runs_replay_memory_goes_when_it_becomes_previous(good_run):
    (good_run / "replay").mkdir()  # an interrupted run's memory, kept for --resume
    (good_run / "replay" / "frame.memmap").write_bytes(b"frames")
    with RunFolder(good_run) as folder:
        folder.start(NEW, resume=False, overwrite=True)
        assert (good_run / PENDING_DIR / "replay" / "frame.memmap").exists()  # not yet gone
        (good_run / "checkpoint.pt").write_text("new checkpoint")
        folder.keep()
    assert not (good_run / PREVIOUS_DIR / "replay").exists()
    assert (good_run / PREVIOUS_DIR / "checkpoint.pt").read_text() == "old checkpoint.pt"


def test_a_start_killed_before_its_first_checkpoint_is_undone_by_the_next_run(good_run):
    before = files(good_run)
    # What `kill -9` leaves: the old run set aside, the new run's run.json and log, no checkpoint.
    (good_run / PENDING_DIR).mkdir()
    for name in before:
        (good_run / name).rename(good_run / PENDING_DIR / name)
    (good_run / MARKER_FILE).write_text("")
    (good_run / "run.json").write_text(json.dumps(NEW))
    (good_run / "log.csv").write_text("rows of the killed start")
    with RunFolder(good_run) as folder:
        assert files(good_run) == before
        with pytest.raises(RunFolderError, match="Pass --resume"):
            folder.start(NEW, resume=False, overwrite=False)


def test_a_failed_start_does_not_block_the_folder(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / MARKER_FILE).write_text("")
    (out / "run.json").write_text(json.dumps(RUN))  # written, then the run failed
    with RunFolder(out) as folder:
        assert folder.start(NEW, resume=False, overwrite=False) is None


def test_the_lock_is_held_by_one_process_and_freed_when_it_dies(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from helpers.run.folder import RunFolder\n"
            f"with RunFolder({str(out)!r}):\n"
            "    print('locked', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(RunFolderError, match=f"in use by another run \\(pid {holder.pid}\\)"):
        RunFolder(out).__enter__()
    holder.kill()  # as `kill -9` would: no cleanup runs, the kernel frees the lock
    holder.wait()
    with RunFolder(out):
        pass


def test_a_folder_the_course_did_not_mark_loses_nothing(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "log.csv").write_text("my own log")
    (out / "replay").mkdir()
    with pytest.raises(RunFolderError, match="files that no run of the course wrote"):
        with RunFolder(out) as folder:
            folder.start(NEW, resume=False, overwrite=False)
    assert (out / "log.csv").read_text() == "my own log" and (out / "replay").is_dir()
    with RunFolder(out) as folder:  # --overwrite sets them aside, and a failed start puts them back
        folder.start(NEW, resume=False, overwrite=True)
        assert (out / PENDING_DIR / "log.csv").read_text() == "my own log"
    assert (out / "log.csv").read_text() == "my own log" and not (out / MARKER_FILE).exists()
    assert not (out / "run.json").exists() and not (out / PENDING_DIR).exists()
