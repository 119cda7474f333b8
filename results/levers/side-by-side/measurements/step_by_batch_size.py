"""Measured for results/levers/side-by-side (see README.md here); run from the repository root."""

import json
import sys
import time

import psutil
import torch

from helpers.agents import load_agent
from helpers.evaluation import batched_episode_lengths

torch.set_num_threads(1)
me = psutil.Process()
n = int(sys.argv[1])
target = sys.argv[2]
a = load_agent(f"checkpoints/{target}/agent.pt")
rec = json.load(open(f"checkpoints/{target}/evaluation.json"))
b = me.memory_full_info().uss
envs = a.make_env(num_workers=n)
seeds = list(range(rec["seed"], rec["seed"] + 50))
t = time.perf_counter()
L = []
for i in range(0, 50, n):
    L += batched_episode_lengths(a.policy, envs, seeds[i : i + n], 500)
d = time.perf_counter() - t
print(
    target,
    n,
    L == rec["lengths"][:50],
    f"{d / sum(L) * 1e3:.2f} ms/step",
    round((me.memory_full_info().uss - b) / 2**20),
    "MB",
)
