"""No notebook (run tooling). Command line: `python -m helpers train | evaluate | video | bench | results | sweep | ship`,
with errors that say what to do."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from helpers.config import MAX_STEPS, MODES, PRESETS, TARGETS, TEST_SEED


def _train(args: argparse.Namespace) -> int:
    from helpers.config import config_for_mode, get_mode
    from helpers.run.folder import saved_buffer_size
    from helpers.training import train

    mode = get_mode(args.mode)
    config = config_for_mode(mode, preset=args.preset)
    if args.frames is not None:
        config = config.replace(total_frames=args.frames)
        if not args.resume:  # (a resumed run keeps its replay memory, and so its size)
            config = config.replace(buffer_size=min(config.buffer_size, args.frames))
    if args.resume:
        config = config.replace(buffer_size=saved_buffer_size(args.out, config.buffer_size))
    config = config.with_settings(args.set)
    result = train(
        args.target,
        args.out,
        mode=mode,
        config=config,
        seed=args.seed,
        resume=args.resume,
        overwrite=args.overwrite,
        live_plot=False,
    )
    state = "interrupted at" if result.interrupted else "finished with"
    print(
        f"Training {state} {result.frames} frames. Log: {result.log_path}  Checkpoint: {result.checkpoint_path}"
    )
    return 130 if result.interrupted else 0


def _evaluate(args: argparse.Namespace) -> int:
    from helpers.evaluation import evaluate_checkpoint
    from helpers.run.workers import interrupts_raise

    # (Ctrl+C and SIGTERM stop it and its workers even in a script's background job, as `train`)
    with interrupts_raise():
        stats = evaluate_checkpoint(
            args.checkpoint, episodes=args.episodes, seed=args.seed, workers=args.workers
        )
    if args.json:
        print(json.dumps(stats))
    else:
        print(
            f"{stats['episodes']} episodes: mean {stats['mean']:.1f} steps, std {stats['std']:.1f}, "
            f"min {stats['min']}, max {stats['max']}"
        )
    return 0


def _video(args: argparse.Namespace) -> int:
    from helpers.video import record_video

    path, steps = record_video(
        args.checkpoint, args.out, max_steps=args.max_steps, seed=args.seed, fps=args.fps
    )
    print(f"{path}  ({steps} steps)")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from helpers.commands.bench import format_bench, run_bench

    result = run_bench(repeats=args.repeats)
    print(json.dumps(result, indent=1) if args.json else format_bench(result))
    return 0


def _results(args: argparse.Namespace) -> int:
    from helpers.results import RESULTS_DIR, load_runs, results_table, summary_table

    if args.pool is not None:
        from helpers.experiments import ablation_table, pool_runs

        if not Path(args.pool).is_dir():
            print(f"error: --pool {args.pool}: no such folder", file=sys.stderr)
            return 2
        pool_runs(args.pool, args.figure)
        print(ablation_table(), f"\nThe room's runs over the bands: {args.figure}", sep="\n")
        return 0
    runs = load_runs(args.root or RESULTS_DIR)
    if not runs:
        print(f"error: no finished runs under {args.root or RESULTS_DIR}", file=sys.stderr)
        return 2
    print(summary_table(runs), results_table(runs), sep="\n\n")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from helpers.commands.sweep import SUMMARY_FILE, sweep

    complete, total, interrupted = sweep(
        args.targets,
        args.seeds,
        args.out,
        mode=args.mode,
        grid=args.set,
        frames=args.frames,
        address=args.address,
        cpus_per_run=args.cpus_per_run,
        parallel=args.parallel,
    )
    summary = Path(args.out) / SUMMARY_FILE
    print(summary.read_text())
    print(f"Summary: {summary}, with bands.png and bands.csv beside it.")
    if interrupted:
        print("Interrupted: run the same command again to finish the sweep.")
        return 130
    return 0 if complete == total else 1


def _ship(args: argparse.Namespace) -> int:
    from helpers.agents import ship_run

    print(ship_run(args.run, args.out))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m helpers", description=__doc__.removeprefix("No notebook (run tooling). ")
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a pixel DQN and write its log and checkpoint")
    p.add_argument(
        "--target",
        required=True,
        choices=TARGETS,
        help="td0: one-step targets on transitions; td-lambda: lambda-returns on trajectory chunks",
    )
    p.add_argument(
        "--mode",
        choices=MODES,
        default=None,
        help="hyperparameter set (default: $DQN_COURSE_MODE, else workshop)",
    )
    p.add_argument(
        "--preset",
        choices=list(PRESETS),
        default="course",
        help="course: the course's recipe (default); tutorial: the tutorial's hyperparameters, "
        "network, transforms, replay storage and process layout, for comparison",
    )
    p.add_argument(
        "--frames", type=int, default=None, help="total frames to collect (default: the mode's)"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="change one setting of the mode's config, e.g. --set n_optim=3 (repeatable)",
    )
    p.add_argument(
        "--out", required=True, help="run folder: run.json, log.csv, curves.png, checkpoint.pt"
    )
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.set_defaults(func=_train)

    p = sub.add_parser("evaluate", help="play deterministic episodes with a trained agent")
    p.add_argument("--checkpoint", required=True, help="checkpoint.pt written by train")
    p.add_argument("--episodes", type=int, default=20, help="episodes to play (default: 20)")
    p.add_argument(
        "--seed",
        type=int,
        default=TEST_SEED,
        help=f"seed of the first episode (default: {TEST_SEED}, the final evaluation's)",
    )
    p.add_argument(
        "--workers", type=int, default=None, help="processes playing episodes (default: CPU cores)"
    )
    p.add_argument("--json", action="store_true", help="print the statistics as JSON")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("video", help="record one episode of a trained agent to MP4 or GIF")
    p.add_argument("--checkpoint", required=True, help="checkpoint.pt written by train")
    p.add_argument("--out", required=True, help="video file to write: FILE.mp4 or FILE.gif")
    p.add_argument(
        "--max-steps",
        type=int,
        default=MAX_STEPS,
        help=f"longest episode to record (default: {MAX_STEPS})",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the episode (default: 0)")
    p.add_argument(
        "--fps", type=int, default=30, help="frames per second of the video (default: 30)"
    )
    p.set_defaults(func=_video)

    p = sub.add_parser("bench", help="measure env, replay, optimisation and training speed here")
    p.add_argument("--json", action="store_true", help="print the measurements as JSON")
    p.add_argument(
        "--repeats", type=int, default=3, help="training runs per configuration (median; default 3)"
    )
    p.set_defaults(func=_bench)

    p = sub.add_parser("results", help="print the tables of the recipe runs in results/runs")
    p.add_argument("--root", default=None, help="folder of run folders (default: results/runs)")
    p.add_argument(
        "--pool",
        default=None,
        help="a folder of learners' run folders (notebook 07): draw each over its ablation's band",
    )
    p.add_argument("--figure", default="pool.png", help="where --pool saves its figure")
    p.set_defaults(func=_results)

    p = sub.add_parser(
        "sweep", help="train several seeds (and settings) as tasks on Ray, then summarize them"
    )
    p.add_argument(
        "--targets", nargs="+", choices=TARGETS, default=["td-lambda"], help="(default: td-lambda)"
    )
    p.add_argument(
        "--seeds", nargs="+", type=int, default=[0, 1, 2], help="training seeds (default: 0 1 2)"
    )
    p.add_argument("--mode", choices=MODES, default=None, help="as for train")
    p.add_argument("--frames", type=int, default=None, help="as for train")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE[,VALUE...]",
        help="a setting for every run, or several values to compare (repeatable)",
    )
    p.add_argument("--out", required=True, help="sweep folder: a run folder per run, summary.md")
    p.add_argument(
        "--address",
        default=None,
        help="a running Ray cluster (e.g. auto, or ray://HOST:10001); default: a local Ray",
    )
    p.add_argument("--cpus-per-run", type=int, default=2, help="CPUs each run takes (default: 2)")
    p.add_argument(
        "--parallel",
        type=int,
        default=None,
        help="runs at once on the local Ray (default: this machine's CPUs // --cpus-per-run)",
    )
    p.set_defaults(func=_sweep)

    p = sub.add_parser("ship", help="copy a finished run's agent and evidence into checkpoints/")
    p.add_argument("--run", required=True, help="a finished run folder (with evaluation.json)")
    p.add_argument("--out", required=True, help="folder to write, e.g. checkpoints/td-lambda")
    p.set_defaults(func=_ship)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError) as err:  # bad input, a missing or unwritable file, a full disk
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a second Ctrl+C, or one outside a training loop
        print("Interrupted.", file=sys.stderr)
        return 130
