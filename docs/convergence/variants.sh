#!/bin/sh
# SFPrompt's parts at convergence (issue 16): the default and one change each, and the
# other methods, in the setting of config.toml (20 rounds, 800 training digits, 10
# clients, Dirichlet 0.5), so that one report puts every row next to `fl`.
# Every variant changes the default of before 2026-12-03, train.local_classifier =
# "shared" (what the kept runs ran; `separate` is today's default).
# A run already completed in OUT_DIR is kept; one cut off resumes where it stopped.
# Each run's tables (no checkpoint) are kept in docs/convergence/variants/ once it completes,
# where `sfprompt report` makes each change a variant row (its compare.md).
#   [ROUNDS=N] sh docs/convergence/variants.sh [OUT_DIR] [SEEDS] [VARIANTS]
#   (defaults runs/variants, "0 1 2", all of them; several minutes a run). ROUNDS runs
#   that many rounds instead of config.toml's and keeps the tables in
#   docs/convergence/rounds-N/.
set -e
kept=docs/convergence/variants
[ -z "$ROUNDS" ] || kept=docs/convergence/rounds-$ROUNDS
out=${1:-runs/variants}
seeds=${2:-0 1 2}
variants=${3:-default thin no_pruning no_local_loss neither frozen separate no_prompts separate_thin separate_no_pruning fl fl_prompt sfl centralized}
overrides() {
  case $1 in
    default) echo "" ;;
    thin) echo "split.head_blocks=0 split.tail_blocks=0" ;;      # the paper's thin client
    no_pruning) echo "prune.keep=1" ;;
    no_local_loss) echo "train.local_epochs=0" ;;
    neither) echo "prune.keep=1 train.local_epochs=0" ;;
    frozen) echo "train.local_classifier=frozen" ;;
    separate) echo "train.local_classifier=separate" ;;
    no_prompts) echo "prompt.length=0" ;;
    # today's default (separate) at the thin client, and without pruning
    separate_thin) echo "train.local_classifier=separate split.head_blocks=0 split.tail_blocks=0" ;;
    separate_no_pruning) echo "train.local_classifier=separate prune.keep=1" ;;
    # the other methods (the last train.method given wins)
    fl|fl_prompt|sfl|centralized) echo "train.method=$1" ;;
    *) echo "unknown variant $1" >&2; exit 2 ;;
  esac
}
for seed in $seeds; do
  for v in $variants; do
    set -- $(overrides "$v")
    dir="$out/$v-seed$seed"
    [ -f "$kept/$v-seed$seed/run.json" ] && continue  # kept: done
    status=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['status'])" \
      "$dir/run.json" 2>/dev/null || true)
    case $status in
      completed) ;;
      "") sfprompt run --config docs/convergence/config.toml train.method=sfprompt \
            ${ROUNDS:+fed.rounds=$ROUNDS} run.seed="$seed" run.out_dir="$out" \
            run.run_id="$v-seed$seed" train.local_classifier=shared "$@" ;;
      *) sfprompt resume "$dir" ;;
    esac
    # kept as soon as it completes, so a session cut off loses only the run in progress
    mkdir -p "$kept/$v-seed$seed"
    cp "$dir/run.json" "$dir/config.toml" "$dir/rounds.parquet" "$dir/clients.parquet" \
      "$kept/$v-seed$seed/"
  done
done
sfprompt report "$kept" --target 0.6
