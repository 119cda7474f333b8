"""One 4,096-frame training with the course's recipe and no evaluations (bench's recipe run),
from the checkout in the current folder: prints when its first gradient step came, the loop's
frames/s, the peak PSS of its process tree and each process's share at that peak.

Run from a checkout's root: `PYTHONPATH=$PWD python results/levers/fork-server/probe.py`.
"""

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from helpers.commands.bench import BENCH_EVAL, RECIPE_FRAMES
from helpers.config import config_for_mode
from helpers.run.logs import read_log

CODE = (
    "import sys, json\n"
    "from helpers.config import Config\n"
    "from helpers.training import train\n"
    "if __name__ == '__main__':\n"
    "    c = Config.from_dict(json.loads(sys.argv[1]))\n"
    "    train('td-lambda', sys.argv[2], mode='smoke', config=c, progress=False, live_plot=False)\n"
)

if __name__ == "__main__":
    recipe = config_for_mode("full").replace(
        total_frames=RECIPE_FRAMES, buffer_size=RECIPE_FRAMES, init_random_frames=256, **BENCH_EVAL
    )
    with tempfile.TemporaryDirectory() as tmp:
        start = time.time()
        args = [sys.executable, "-c", CODE, json.dumps(recipe.to_dict()), tmp + "/run"]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        peak, at, root = 0, [], psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                tree = [root, *root.children(recursive=True)]
                info = [(p.pid, " ".join(p.cmdline())[-50:], p.memory_full_info()) for p in tree]
            except psutil.Error:
                continue
            if sum(m.pss for _, _, m in info) > peak:
                peak, at = sum(m.pss for _, _, m in info), info
            time.sleep(0.5)
        rows = [r for r in read_log(Path(tmp) / "run" / "log.csv") if r["loss"] == r["loss"]]
        first, last = rows[0], rows[-1]
        rate = (last["frames"] - first["frames"]) / (last["seconds"] - first["seconds"])
        print("first", first["seconds"], "last", last["seconds"])
        print("fps", round(rate, 1), "wall", round(time.time() - start, 1))
    print("peak PSS MB", round(peak / 2**20))
    for pid, cmd, m in at:
        print(f"{pid} pss {m.pss / 2**20:6.0f} uss {m.uss / 2**20:6.0f}  {cmd}")
