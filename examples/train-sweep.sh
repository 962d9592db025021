#!/usr/bin/env bash
# The training-defaults sweep behind README "Training defaults": one folder per setting under
# examples/results/train-sweep/, two settings at a time (one torch thread each). Resumable: rerun
# it and finished points are kept. Settings are "beta lr epochs".
set -euo pipefail
cd "$(dirname "$0")"
APL=${APL:-apl}
out=results/train-sweep
settings=("0.1 2e-3 4" "0.1 1e-3 4" "0.1 5e-4 4" "0.3 1e-3 4" "0.1 1e-3 2")
run() {
  local jobs=${2:-1}
  set -- $1
  local dir="$out/b$1-lr$2-ep$3"
  mkdir -p "$dir/shared"
  # The pool and the reference's evaluation depend on the seed only: share the first setting's.
  for s in "$out"/b0.1-lr2e-3-ep4/shared/s*; do
    [ -d "$s" ] || continue
    mkdir -p "$dir/shared/$(basename "$s")"
    for f in pool.json reference.json; do [ -e "$dir/shared/$(basename "$s")/$f" ] || cp "$s/$f" "$dir/shared/$(basename "$s")/" 2>/dev/null || true; done
  done
  "$APL" experiment --config experiment-train-sweep.toml -o "$dir" --jobs "$jobs" --set "train.beta=$1" \
    --set "train.learning_rate=$2" --set "train.epochs=$3" > "$dir.log" 2>&1
}
export -f run; export out APL
run "${settings[0]}" 2   # makes the pools the others copy
printf '%s\n' "${settings[@]:1}" | xargs -P 2 -I{} bash -c 'run "{}"'
