"""Measured for results/levers/side-by-side (see README.md here); run from the repository root."""

import json
import time

import torch

from helpers.agents import load_agent
from helpers.evaluation import batched_episode_lengths, episode_lengths

torch.set_num_threads(1)
for target in ("td-lambda", "td0"):
    a = load_agent(f"checkpoints/{target}/agent.pt")
    rec = json.load(open(f"checkpoints/{target}/evaluation.json"))
    seeds = list(range(rec["seed"], rec["seed"] + 25))
    one, envs = a.make_env(), a.make_env(num_workers=25)
    for r in range(2):
        t = time.perf_counter()
        L1 = episode_lengths(a.policy, one, seeds, 500)
        d1 = time.perf_counter() - t
        t = time.perf_counter()
        L2 = batched_episode_lengths(a.policy, envs, seeds, 500)
        d2 = time.perf_counter() - t
        n = sum(L1)
        print(
            target,
            r,
            L1 == L2 == rec["lengths"][:25],
            n,
            f"single {d1 / n * 1e3:.2f} batched {d2 / n * 1e3:.2f} ms/step",
            flush=True,
        )
