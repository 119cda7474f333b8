#!/bin/bash
# old (HEAD 3da2b5a, one episode at a time) and new (side by side) final evaluations, in turns
export SDL_VIDEODRIVER=dummy
for round in 1 2 3; do
  for code in old main; do
    for target in td-lambda td0; do
      [ $target = td0 ] && [ $round = 3 ] && continue
      cd /work/$code
      s=$(date +%s.%N)
      .venv/bin/python -m helpers evaluate --checkpoint /work/main/checkpoints/$target/agent.pt --episodes 100 --json > /work/w/evalbench/$code-$target-$round.json 2>/work/w/evalbench/$code-$target-$round.err
      e=$(date +%s.%N)
      echo "$round $code $target $(echo "$e - $s" | bc) $(python3 -c "import json;d=json.load(open('/work/w/evalbench/$code-$target-$round.json'));print(d['mean'])")"
    done
  done
done
