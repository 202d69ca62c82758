#!/bin/sh
# Synchronous FedAvg against buffered asynchronous aggregation (FedBuff) on a
# straggler-heavy fleet, with the same client work: 40 client updates each (10 rounds of
# 4 clients, or 20 aggregations of 2 arrivals with 4 clients training). Every run goes
# to one directory; `sfprompt report` plots accuracy against simulated time.
#   sh docs/fedbuff/run.sh [OUT_DIR]     (default runs/fedbuff; about 5 min a run)
set -e
out=${1:-runs/fedbuff}
common="data.max_samples=1000 fed.num_clients=10 fed.clients_per_round=4
        profiles.mix=iot_pi:0.3,mid_phone:0.4,laptop:0.3 profiles.sigma=0.5
        run.out_dir=$out"
for seed in 0 1; do
  sfprompt run $common run.seed=$seed run.run_id=sync-seed$seed fed.rounds=10
  sfprompt run $common run.seed=$seed run.run_id=buffered-seed$seed fed.rounds=20 \
    fed.protocol=buffered fed.buffer_size=2 fed.staleness=polynomial
done
sfprompt report "$out"
