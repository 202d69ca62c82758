#!/bin/sh
# Split plans on the default phone mix (low 0.3, mid 0.5, flagship 0.2): every client at
# one fixed split (0:0, 1:1, 2:2), each tier at its own (by_tier: low phones 0:0, mid
# phones 1:1, flagships 2:2), and `fit` (each device's fastest split that fits its
# memory, from 0:0, 1:1, 2:2). Same data, clients and rounds; clients.parquet records
# each client's split, bytes and simulated time. `sfprompt report` puts them side by side (compare.md).
#   sh docs/splitplans/run.sh [OUT_DIR] [SEEDS]   (default runs/splitplans "0 1"; ~4 min a run)
set -e
out=${1:-runs/splitplans}
seeds=${2:-0 1}
common="data.max_samples=1000 fed.num_clients=10 fed.clients_per_round=4 fed.rounds=10
        run.out_dir=$out"
for seed in $seeds; do
  for split in 0:0 1:1 2:2; do
    sfprompt run $common run.seed=$seed run.run_id=fixed-${split%:*}-seed$seed \
      split.head_blocks=${split%:*} split.tail_blocks=${split#*:}
  done
  sfprompt run $common run.seed=$seed run.run_id=by_tier-seed$seed split.plan=by_tier \
    split.tiers=low_phone=0:0,mid_phone=1:1,flagship_phone=2:2
  sfprompt run $common run.seed=$seed run.run_id=fit-seed$seed split.plan=fit
done
sfprompt report "$out"
