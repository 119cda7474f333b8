"""Bad input, as a learner types it: each case is one line on stderr, exit 2, and no file lost.

Each row of CASES is (name, folder, arguments, message): the folder the command runs against
(made fresh for the row by `FOLDERS[folder]`), the `python -m helpers` arguments with `{out}`
standing for that folder (`train` gets `--out {out}` when it has none), and a fragment of the
one-line error. The command runs in this process through `helpers.commands.cli.main`, as
`python -m helpers` runs it. The test checks the exit code, that stderr is one `error:` line
(argparse's own errors: usage, then the error), that every file that was in the folder is
still there unchanged, and that no worker process is left.
"""

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import torch
from clitools import cli, start_cli, stop_leftovers, wait_until

from helpers.commands.cli import main
from helpers.run.checkpoints import AGENT_FILE, SHIPPED_DIR, check_manifest
from helpers.run.logs import read_log
from helpers.run.workers import is_fork_server, worker_processes

REPO = Path(__file__).resolve().parent.parent
RECORDED_RUN = REPO / "results" / "runs" / "full-td-lambda-seed0"
SHIPPED = REPO / "checkpoints" / "td-lambda"
TRAIN = ["train", "--target", "td0", "--mode", "smoke"]
TRAIN_LAMBDA = ["train", "--target", "td-lambda", "--mode", "smoke"]
FRAMES = ["--frames", "160"]
EVALUATE = ["evaluate", "--checkpoint", "{out}"]
VIDEO = ["video", "--checkpoint", "{out}", "--out"]
SWEEP = ["sweep", "--out", "{out}"]


def sets(*settings: str) -> list[str]:
    """`--set NAME=VALUE` for each setting."""
    return [arg for setting in settings for arg in ("--set", setting)]


CASES = [
    # Settings, refused by Config before anything is written
    ("n_optim=0", "new", [*TRAIN, *sets("n_optim=0")], "n_optim must be positive"),
    ("eps below end", "new", [*TRAIN, *sets("eps_init=0.01")], "eps_init (0.01) is below"),
    ("loss name", "new", [*TRAIN, *sets("loss_function=bogus")], "loss_function = 'bogus'"),
    ("lr=inf", "new", [*TRAIN, *sets("lr=inf")], "lr must be a finite number"),
    ("lr=nan", "new", [*TRAIN, *sets("lr=nan")], "lr must be positive"),
    ("lr=0", "new", [*TRAIN, *sets("lr=0")], "lr must be positive"),
    ("lr<0", "new", [*TRAIN, *sets("lr=-1e-3")], "lr must be positive"),
    ("shift<0", "new", [*TRAIN, *sets("random_shift=-1")], "random_shift must be 0 or more"),
    ("shift=32", "new", [*TRAIN, *sets("random_shift=32")], "random_shift must be below 32"),
    (
        "shift, tutorial",
        "new",
        [*TRAIN, "--preset", "tutorial", *sets("random_shift=4")],
        "random_shift needs the course's pipeline",
    ),
    ("clip<0", "new", [*TRAIN, *sets("max_grad_norm=-1")], "max_grad_norm must be positive"),
    ("clip=0", "new", [*TRAIN, *sets("max_grad_norm=0")], "max_grad_norm must be positive"),
    ("clip=inf", "new", [*TRAIN, *sets("max_grad_norm=inf")], "max_grad_norm must be a finite"),
    ("gamma>1", "new", [*TRAIN, *sets("gamma=1.5")], "gamma must be 0 to 1"),
    ("lmbda<0", "new", [*TRAIN, *sets("lmbda=-0.1")], "lmbda must be 0 to 1"),
    ("tau>1", "new", [*TRAIN, *sets("tau=2")], "tau must be 0 to 1"),
    ("eps_end<0", "new", [*TRAIN, *sets("eps_end=-0.1")], "eps_end must be 0 to 1"),
    ("batch_size=0", "new", [*TRAIN, *sets("batch_size=0")], "batch_size must be positive"),
    ("batch=0", "new", [*TRAIN, *sets("frames_per_batch=0")], "frames_per_batch must be"),
    ("chunk=0", "new", [*TRAIN, *sets("chunk_length=0")], "chunk_length must be positive"),
    ("workers=0", "new", [*TRAIN, *sets("num_workers=0")], "num_workers must be positive"),
    ("eval_every=0", "new", [*TRAIN, *sets("eval_every=0")], "eval_every must be positive"),
    ("episodes=0", "new", [*TRAIN, *sets("eval_episodes=0")], "eval_episodes must be positive"),
    ("max steps=0", "new", [*TRAIN, *sets("eval_max_steps=0")], "eval_max_steps must be"),
    ("norm iter=0", "new", [*TRAIN, *sets("norm_init_iter=0")], "norm_init_iter must be"),
    ("init frames<0", "new", [*TRAIN, *sets("init_random_frames=-1")], "must be 0 or more"),
    ("eps_frames<0", "new", [*TRAIN, *sets("eps_frames=-5")], "eps_frames must be 0 or more"),
    ("final<0", "new", [*TRAIN, *sets("final_episodes=-1")], "final_episodes must be 0 or"),
    ("bool", "new", [*TRAIN, *sets("double_dqn=maybe")], "double_dqn takes a value of type"),
    ("int", "new", [*TRAIN, *sets("n_optim=1.5")], "n_optim takes a value of type int"),
    ("float", "new", [*TRAIN, *sets("lr=abc")], "lr takes a value of type float"),
    ("unknown name", "new", [*TRAIN, *sets("bogus=1")], "Cannot apply --set 'bogus=1'"),
    ("betas", "new", [*TRAIN, *sets("betas=0.9")], "Cannot apply --set 'betas=0.9'"),
    ("no value", "new", [*TRAIN, *sets("lr")], "write NAME=VALUE"),
    ("network", "new", [*TRAIN, *sets("network=resnet")], "Unknown network 'resnet'"),
    ("pipeline", "new", [*TRAIN, *sets("pipeline=fast")], "Unknown pipeline 'fast'"),
    ("chunk divides", "new", [*TRAIN_LAMBDA, *sets("chunk_length=5")], "must divide it"),
    ("odd batch", "new", [*TRAIN, *sets("frames_per_batch=33")], "multiple of num_workers"),
    ("tiny buffer", "new", [*TRAIN, *sets("buffer_size=4")], "buffer_size (4) is too small"),
    ("huge buffer", "new", [*TRAIN, *sets("buffer_size=10000000000")], "replay memory needs"),
    ("frames<batch", "new", [*TRAIN, "--frames", "16"], "smaller than one batch"),
    ("frames huge", "new", [*TRAIN, "--frames", "10" * 12], "is above"),
    ("seed<0", "new", [*TRAIN, "--seed", "-1"], "--seed must be between"),
    ("seed huge", "new", [*TRAIN, "--seed", str(2**31)], "--seed must be between"),
    ("mode", "new", ["train", "--target", "td0", "--mode", "fast"], "invalid choice: 'fast'"),
    ("target", "new", ["train", "--target", "td2"], "invalid choice: 'td2'"),
    ("preset", "new", [*TRAIN, "--preset", "mine"], "invalid choice: 'mine'"),
    ("frames text", "new", [*TRAIN, "--frames", "many"], "invalid int value: 'many'"),
    # Where the run goes
    ("empty out", "none", [*TRAIN, "--out", ""], "(--out) is empty"),
    ("blank out", "none", [*TRAIN, "--out", "  "], "(--out) is empty"),
    ("out under a file", "file", [*TRAIN, "--out", "{out}/run"], "is a file"),
    ("out in /proc", "none", [*TRAIN, "--out", "/proc/pixel-dqn-course/run"], "Cannot use"),
    ("user's files", "user", TRAIN, "files that no run of the course wrote"),
    ("user's files, resume", "user", [*TRAIN, "--resume"], "No checkpoint"),
    ("recorded run", "recorded", TRAIN, "holds a recorded run"),
    ("recorded run, resume", "recorded", [*TRAIN, "--resume"], "No checkpoint"),
    ("shipped agent", "shipped", TRAIN, "holds a shipped agent"),
    ("shipped agent, resume", "shipped", [*TRAIN, "--resume"], "No checkpoint"),
    ("same run again", "finished", [*TRAIN, *FRAMES], "holds this run already"),
    ("another run", "finished", TRAIN_LAMBDA, "holds a different run"),
    # Resuming
    ("resume finished", "finished", [*TRAIN, *FRAMES, "--resume"], "raise total_frames"),
    ("resume lr", "stopped", [*TRAIN, "--resume", *sets("lr=0.01")], "lr 0.001 -> 0.01"),
    ("resume n_optim", "stopped", [*TRAIN, "--resume", *sets("n_optim=3")], "n_optim 2 -> 3"),
    ("resume buffer", "stopped", [*TRAIN, "--resume", *sets("buffer_size=640")], "buffer_size"),
    ("resume preset", "stopped", [*TRAIN, "--preset", "tutorial", "--resume"], "uint8 pipeline"),
    ("resume mode", "stopped", ["train", "--target", "td0", "--resume"], "in smoke mode"),
    ("resume target", "stopped", [*TRAIN_LAMBDA, "--resume"], "holds a td0 run"),
    ("log rows missing", "log gap", [*TRAIN, "--resume"], "rows where its checkpoint counts"),
    ("log cut mid-row", "log cut", [*TRAIN, "--resume"], "is not a log row"),
    ("log not a log", "log garbage", [*TRAIN, "--resume"], "is not a training log"),
    ("replay read-only", "replay read-only", [*TRAIN, "--resume"], "is read-only"),
    ("checkpoint text", "checkpoint text", [*TRAIN, "--resume"], "not a readable checkpoint"),
    ("checkpoint empty", "checkpoint empty", [*TRAIN, "--resume"], "not a readable checkpoint"),
    ("checkpoint code", "checkpoint code", [*TRAIN, "--resume"], "holds Python objects"),
    ("checkpoint other", "checkpoint other", [*TRAIN, "--resume"], "not a checkpoint of this"),
    # evaluate
    ("evaluate missing", "none", ["evaluate", "--checkpoint", "/no/agent.pt"], "No checkpoint"),
    ("evaluate text", "checkpoint text", EVALUATE, "not a readable checkpoint"),
    ("evaluate code", "checkpoint code", EVALUATE, "holds Python objects"),
    ("evaluate seed<0", "shipped", [*EVALUATE, "--seed", "-5"], "--seed must be between"),
    ("evaluate seed huge", "shipped", [*EVALUATE, "--seed", str(2**32)], "--seed must be"),
    ("evaluate episodes", "shipped", [*EVALUATE, "--episodes", "0"], "--episodes must be"),
    ("evaluate workers", "shipped", [*EVALUATE, "--workers", "0"], "--workers must be"),
    ("edited agent", "shipped edited", EVALUATE, "does not match its SHA-256"),
    ("edited manifest", "shipped bad sum", EVALUATE, "does not match its SHA-256"),
    ("garbage manifest", "shipped garbage sums", EVALUATE, "is not a SHA-256 line"),
    ("foreign file", "shipped foreign", [*EVALUATE[:-1], "{out}/mine.pt"], "is not listed in"),
    ("diverged", "checkpoint nan", EVALUATE, "not finite numbers"),
    # video
    ("video format", "shipped", [*VIDEO, "{out}/v.avi"], "must end in .mp4 or .gif"),
    ("video folder", "shipped", [*VIDEO, "/nonexistent/v.mp4"], "does not exist"),
    ("video /proc", "shipped", [*VIDEO, "/proc/v.mp4"], "Cannot write /proc/v.mp4"),
    ("video is a folder", "shipped", [*VIDEO, "{out}"], "must end in .mp4 or .gif"),
    ("video steps", "shipped", [*VIDEO, "{out}/v.mp4", "--max-steps", "0"], "--max-steps"),
    ("video fps", "shipped", [*VIDEO, "{out}/v.mp4", "--fps", "0"], "--fps must be"),
    # sweep: refused before Ray starts
    ("sweep seeds twice", "none", [*SWEEP, "--seeds", "0", "0"], "names 0"),
    ("sweep targets twice", "none", [*SWEEP, "--targets", "td0", "td0"], "more than once"),
    ("sweep parallel 0", "none", [*SWEEP, "--parallel", "0"], "at least 1"),
    ("sweep cpus 0", "none", [*SWEEP, "--cpus-per-run", "0"], "at least 1"),
    ("sweep seed<0", "none", [*SWEEP, "--seeds", "-1"], "--seeds must be"),
    ("sweep set", "none", [*SWEEP, "--set", "lr"], "write NAME=VALUE"),
    ("sweep set type", "none", [*SWEEP, "--set", "lr=abc"], "type float"),
    # ship and results
    ("ship stopped", "stopped", ["ship", "--run", "{out}", "--out", "{out}/x"], "interrupted"),
    ("ship no run", "user", ["ship", "--run", "{out}", "--out", "{out}/x"], "No checkpoint"),
    ("ship into mine", "finished", ["ship", "--run", "{out}", "--out", "{out}"], "not a shipped"),
    ("results none", "user", ["results", "--root", "{out}"], "no finished runs"),
    ("results run.json", "results bad run", ["results", "--root", "{out}"], "is not the JSON"),
    ("results log", "results bad log", ["results", "--root", "{out}"], "is not a log row"),
]

# Settings from the environment: (name, variable, value, message).
ENV_CASES = [
    ("device", "DQN_COURSE_DEVICE", "gpu", "Unknown device 'gpu'"),
    ("no cuda", "DQN_COURSE_DEVICE", "cuda", "not available on this machine"),
    ("mode", "DQN_COURSE_MODE", "turbo", "Unknown course mode 'turbo'"),
]


def rows(folder: Path) -> int:
    """Rows in a run's log so far."""
    try:
        return len((folder / "log.csv").read_text().splitlines()) - 1
    except FileNotFoundError:
        return 0


def evaluated(folder: Path) -> bool:
    """The run has saved a checkpoint that holds an evaluated agent."""
    try:
        rows = read_log(folder / "log.csv")
    except ValueError:  # (a row being written)
        return False
    if not any(row["eval_mean"] == row["eval_mean"] for row in rows):
        return False  # (no evaluation back yet: no need to read the checkpoint)
    return torch.load(folder / "checkpoint.pt", weights_only=True)["best_params"] is not None


def killed_run(out: Path, which: int | None) -> tuple[int, float, str, list[psutil.Process]]:
    """Start a smoke TD(0) run, kill one of its worker processes once it has 20 rows and a
    checkpoint with an evaluated agent (0: the collector's worker, started first; 1: the
    evaluator; None: the fork server they came from); the exit code, the seconds it took to
    end, its stderr, and the processes it had started that are still running 10 s after it
    ended."""
    proc = start_cli(*TRAIN, "--frames", "20000", "--out", str(out))
    deadline = time.monotonic() + 120
    while rows(out) < 20 or not (out / "checkpoint.pt").exists() or not evaluated(out):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    workers = worker_processes(proc.pid)
    assert len(workers) == 2  # the collector's worker and the evaluator
    family = psutil.Process(proc.pid).children(recursive=True)  # (the fork server included)
    if which is None:
        (server,) = [p for p in family if p.ppid() == proc.pid and is_fork_server(p)]
        server.kill()
    else:
        sorted(workers, key=lambda p: p.create_time())[which].kill()
    killed = time.monotonic()
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:  # a hung run: stop it and its workers, then fail
        for process in [*psutil.Process(proc.pid).children(recursive=True), proc]:
            with contextlib.suppress(psutil.Error, ProcessLookupError):
                process.kill()
        _, err = proc.communicate()
        pytest.fail(f"the run did not end within 60 s of the kill: {err[-2000:]}")
    seconds = time.monotonic() - killed
    _, left = psutil.wait_procs(family, timeout=10)
    return proc.returncode, seconds, err, left


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A finished smoke TD(0) run, and runs whose collector worker or evaluator was killed
    mid-run (interrupted runs with their replay memory), all real."""
    root = tmp_path_factory.mktemp("runs")
    finished = root / "finished"
    result = cli(*TRAIN, *FRAMES, "--out", str(finished))
    assert result.returncode == 0, result.stderr[-2000:]
    return {
        "finished": finished,
        "stopped": root / "stopped",
        "kill": killed_run(root / "stopped", 0),
        "kill_evaluator": killed_run(root / "no-evaluator", 1),
        "no-evaluator": root / "no-evaluator",
        "kill_server": killed_run(root / "no-server", None),
        "no-server": root / "no-server",
    }


@pytest.mark.slow
@pytest.mark.parametrize(
    "kill,folder,message",
    [
        ("kill", "stopped", "The collector's worker process"),
        ("kill_evaluator", "no-evaluator", "The evaluation process"),
        ("kill_server", "no-server", "The fork server process"),
    ],
)
def test_a_killed_worker_ends_the_run_in_seconds_with_a_consistent_folder(
    runs, kill, folder, message
):
    rc, seconds, err, left = runs[kill]
    assert rc == 2 and seconds < 30, err[-2000:]
    assert err.strip().splitlines()[-1].startswith(f"error: {message}")
    state = torch.load(runs[folder] / "checkpoint.pt", weights_only=True)
    assert state["interrupted"] and state["batches"] == rows(runs[folder])
    assert (runs[folder] / "replay").is_dir()  # kept, for --resume
    assert not left  # no orphaned worker, no fork server


@pytest.mark.slow
def test_the_killed_run_resumes(runs, tmp_path):
    copy = Path(shutil.copytree(runs["stopped"], tmp_path / "run"))
    batches = rows(copy)
    frames = ["--frames", str(32 * (batches + 3))]
    result = cli(*TRAIN, *frames, "--resume", "--out", str(copy))
    assert result.returncode == 0, result.stderr[-2000:]
    assert rows(copy) == batches + 3


@pytest.mark.slow
def test_a_killed_evaluation_worker_ends_evaluate_with_one_line():
    # This process plays 4 of the 12 episodes while two worker processes play 4 each; one worker
    # is killed as soon as both exist. A multiprocessing.Pool would replace it without its task
    # and wait forever: the command must end, say so in one line and leave no worker behind.
    agent = SHIPPED_DIR / "td-lambda" / AGENT_FILE
    proc = start_cli("evaluate", "--checkpoint", str(agent), "--episodes", "12", "--workers", "3")
    wait_until(lambda: len(worker_processes(proc.pid)) == 2, 60, "the two workers to start")
    killed, other = worker_processes(proc.pid)
    killed.kill()
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        stop_leftovers()
        pytest.fail("evaluate did not end after one of its workers was killed")
    assert proc.returncode == 2 and out == "", err[-2000:]
    assert err.strip().splitlines() == [
        f"error: An evaluation worker (pid {killed.pid}) ended before it sent its episodes "
        "(killed, or out of memory?); nothing was written: run the command again "
        "(train: add --resume, which only evaluates)."
    ]
    assert not killed.is_running() and not other.is_running()


@pytest.mark.slow
def test_ctrl_c_ends_evaluate_and_its_workers_in_seconds():
    # Ctrl+C in a terminal reaches the whole group; the workers keep it blocked (they must not
    # die mid-episode with a traceback each), so evaluate ends them itself instead of waiting
    # for their 33 episodes of a perfect agent (about half a minute).
    agent = SHIPPED_DIR / "td-lambda" / AGENT_FILE
    proc = start_cli("evaluate", "--checkpoint", str(agent), "--episodes", "100", "--workers", "3")
    wait_until(lambda: len(worker_processes(proc.pid)) == 2, 60, "the two workers to start")
    family = psutil.Process(proc.pid).children(recursive=True)
    os.killpg(proc.pid, signal.SIGINT)
    start = time.monotonic()
    out, err = proc.communicate(timeout=120)
    assert time.monotonic() - start < 10 and proc.returncode == 130, err[-2000:]
    assert err.strip().splitlines() == ["Interrupted."] and out == ""
    _, left = psutil.wait_procs(family, timeout=5)
    assert not left  # its workers and the fork server


def copy(source: Path, dest: Path) -> Path:
    return Path(shutil.copytree(source, dest))


def edit_lines(path: Path, marker: str, change) -> None:
    """Apply `change` to the lines of `path` that contain `marker`."""
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(change(line) if marker in line else line for line in lines))


def log_gap(out: Path) -> None:
    lines = (out / "log.csv").read_text().splitlines(keepends=True)
    (out / "log.csv").write_text("".join(lines[:3] + lines[6:]))  # rows 2 to 4 lost


def log_cut(out: Path) -> None:
    lines = (out / "log.csv").read_text().splitlines(keepends=True)
    (out / "log.csv").write_text("".join(lines[:4]) + lines[4][:5] + "\n" + "".join(lines[5:]))


def code_pickle(out: Path) -> None:
    torch.save({"format": "pixel-dqn-course/1", "print": print}, out / "checkpoint.pt")


def nan_params(out: Path) -> None:
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    state["best_params"] = {
        k: torch.full_like(v, float("nan")) for k, v in state["best_params"].items()
    }
    torch.save(state, out / "checkpoint.pt")


def flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))


def user_files(out: Path) -> Path:
    out.mkdir()
    (out / "log.csv").write_text("my own notes\n")
    (out / "evaluation.json").write_text("{}")
    (out / "replay").mkdir()
    (out / "replay" / "data.bin").write_bytes(b"mine")
    return out


def a_file(path: Path) -> Path:
    path.write_text("")
    return path


def results_with(tmp: Path, runs: dict, name: str, text: str) -> Path:
    run = copy(runs["finished"], tmp / "results" / "run")
    (run / "command.json").write_text('{"command": "test", "rc": 0, "wall_seconds": 1}')
    (run / name).write_text(text)
    return run.parent


# What a stopped run's copy gets, to be resumed: folder name -> edit.
STOPPED_EDITS = {
    "log gap": log_gap,
    "log cut": log_cut,
    "log garbage": lambda o: (o / "log.csv").write_text("\x00garbage\n1,2\n"),
    "replay read-only": lambda o: [p.chmod(0o444) for p in (o / "replay").iterdir()],
    "checkpoint text": lambda o: (o / "checkpoint.pt").write_text("not a checkpoint\n"),
    "checkpoint empty": lambda o: (o / "checkpoint.pt").write_bytes(b""),
    "checkpoint code": code_pickle,
    "checkpoint other": lambda o: torch.save({"weights": torch.zeros(2)}, o / "checkpoint.pt"),
    "checkpoint nan": nan_params,
}
# What a shipped agent's copy gets.
SHIPPED_EDITS = {
    "shipped edited": lambda o: flip_last_byte(o / "agent.pt"),
    "shipped bad sum": lambda o: edit_lines(o / "SHA256SUMS", "agent.pt", lambda x: "0" + x[1:]),
    "shipped garbage sums": lambda o: (o / "SHA256SUMS").write_text("not a manifest\n"),
    "shipped foreign": lambda o: shutil.copyfile(o / "agent.pt", o / "mine.pt"),
}


def make_folder(kind: str, tmp: Path, runs: dict) -> Path:
    """The folder a case runs against (see CASES)."""
    if kind in ("none", "new"):
        return tmp / kind
    if kind == "file":
        return a_file(tmp / "file")
    if kind == "user":
        return user_files(tmp / "mine")
    if kind == "recorded":
        return copy(RECORDED_RUN, tmp / "recorded")
    if kind == "shipped" or kind in SHIPPED_EDITS:
        out = copy(SHIPPED, tmp / "shipped")
        SHIPPED_EDITS.get(kind, lambda o: None)(out)
        return out
    if kind in ("finished", "stopped"):
        return copy(runs[kind], tmp / "run")
    if kind in STOPPED_EDITS:
        out = copy(runs["stopped"], tmp / "run")
        STOPPED_EDITS[kind](out)
        return out
    if kind == "results bad run":
        return results_with(tmp, runs, "run.json", "{cut")
    if kind == "results bad log":
        return results_with(tmp, runs, "log.csv", 'batch,frames\n1,"x\n')
    raise KeyError(kind)


FOLDERS = {"none", "new", "file", "user", "recorded", "shipped", "finished", "stopped"}
FOLDERS |= set(STOPPED_EDITS) | set(SHIPPED_EDITS) | {"results bad run", "results bad log"}


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` and its bytes (the lock only holds the pid of its last user)."""
    if not folder.is_dir():
        return {}
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def run_main(argv: list[str], capsys) -> tuple[int, str]:
    """`python -m helpers ARGV` in this process: its exit code and stderr."""
    try:
        rc = main(argv)
    except SystemExit as exit:  # argparse's errors
        rc = exit.code
    return rc, capsys.readouterr().err


def test_the_table_covers_enough_cases():
    assert len(CASES) + len(ENV_CASES) >= 80
    assert len({case[0] for case in CASES}) == len(CASES)  # names are unique
    assert all(len(case) == 4 for case in CASES)
    assert {case[1] for case in CASES} == FOLDERS  # every folder is used


# The folders made from the `runs` fixture's real training runs: their cases are slow.
FROM_RUNS = {"finished", "stopped"} | set(STOPPED_EDITS) | {"results bad run", "results bad log"}


@pytest.mark.parametrize(
    "name,folder,args,message",
    [
        pytest.param(*case, id=case[0], marks=[pytest.mark.slow] if case[1] in FROM_RUNS else [])
        for case in CASES
    ],
)
def test_bad_input_is_one_line_and_loses_nothing(
    name, folder, args, message, request, tmp_path, capsys
):
    runs = request.getfixturevalue("runs") if folder in FROM_RUNS else {}
    out = make_folder(folder, tmp_path, runs)
    argv = [arg.replace("{out}", str(out)) for arg in args]
    if argv[0] == "train" and "--out" not in argv:
        argv += ["--out", str(out)]
    before = snapshot(out)
    rc, err = run_main(argv, capsys)
    lines = err.strip().splitlines()
    assert rc == 2, err[-2000:]
    assert lines and message in lines[-1], err[-2000:]
    if not lines[0].startswith("usage:"):  # (argparse: its usage, then the error)
        assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert snapshot(out) == before
    if folder in ("none", "new"):
        assert snapshot(out) == {}
    assert not worker_processes()


@pytest.mark.slow
@pytest.mark.parametrize("name,variable,value,message", ENV_CASES, ids=[c[0] for c in ENV_CASES])
def test_bad_settings_from_the_environment(
    name, variable, value, message, runs, tmp_path, capsys, monkeypatch
):
    out = make_folder("finished", tmp_path, runs)
    before = snapshot(out)
    monkeypatch.setenv(variable, value)
    argv = ["train", "--target", "td0", "--out", str(out), "--overwrite"]
    argv += [] if variable == "DQN_COURSE_MODE" else ["--mode", "smoke"]
    rc, err = run_main(argv, capsys)
    assert rc == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    assert snapshot(out) == before


@pytest.mark.slow
def test_ship_takes_a_run_made_by_train(runs, tmp_path):
    result = cli("ship", "--run", str(runs["finished"]), "--out", str(tmp_path / "agent"))
    assert result.returncode == 0, result.stderr[-2000:]
    names = sorted(p.name for p in (tmp_path / "agent").iterdir())
    assert names == ["SHA256SUMS", "agent.pt", "curves.png", "evaluation.json", "log.csv"] + [
        "run.json"
    ]
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=tmp_path / "agent")
    assert check.returncode == 0


def test_a_manifest_written_by_sha256sum_b_is_read(tmp_path):
    out = copy(SHIPPED, tmp_path / "shipped")
    names = [p.name for p in out.iterdir() if p.name != "SHA256SUMS"]
    sums = subprocess.run(["sha256sum", "-b", *names], cwd=out, capture_output=True, text=True)
    (out / "SHA256SUMS").write_text(sums.stdout)
    assert "*agent.pt" in sums.stdout
    check_manifest(out / "agent.pt")  # no error
    flip_last_byte(out / "agent.pt")
    with pytest.raises(ValueError, match="does not match its SHA-256"):
        check_manifest(out / "agent.pt")
