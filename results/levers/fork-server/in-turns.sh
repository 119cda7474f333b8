#!/bin/bash
# The probe's training and 100 test episodes of the shipped TD(lambda) agent, taking turns
# between two checkouts: results/levers/fork-server/in-turns.sh OLD_CHECKOUT NEW_CHECKOUT
# (each with its .venv). Prints what memory-in-turns.log and evaluate-in-turns.log hold.
set -e
probe=$(cd "$(dirname "$0")" && pwd)/probe.py
export SDL_VIDEODRIVER=dummy
for i in 1 2 3; do
  for checkout in "$1" "$2"; do
    echo "== $checkout $i"
    (cd "$checkout" && PYTHONPATH=$PWD .venv/bin/python "$probe" 2>&1 | grep -E "^first|^fps|^peak")
  done
done
for i in 1 2; do
  for checkout in "$1" "$2"; do
    start=$(date +%s.%N)
    line=$(cd "$checkout" && PYTHONPATH=$PWD .venv/bin/python -m helpers evaluate \
      --checkpoint checkpoints/td-lambda/agent.pt --episodes 100 2>&1 | tail -1)
    echo "$checkout $i $(echo "$(date +%s.%N) - $start" | bc) $line"
  done
done
