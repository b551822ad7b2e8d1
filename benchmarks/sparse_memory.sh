#!/usr/bin/env bash
# Peak RSS of one worker training a sparse model with its masked layers on dense products
# and on the sparse kernels (compute.sparse_kernels off and on), the same steps each.
#
#   benchmarks/sparse_memory.sh [config] [sparsity] [steps]     (defaults: fmnist-6head 0.9 40)
#
# Needs a release build (.build/release/svite) and GNU time (/usr/bin/time).
set -euo pipefail
config=${1:-fmnist-6head}
sparsity=${2:-0.9}
steps=${3:-40}
svite=${SVITE:-.build/release/svite}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
port=$((20000 + RANDOM % 20000))

for mode in off on; do
  "$svite" coordinator --plain --config "$config" --out "$work/$mode" --bind "tcp://127.0.0.1:$port" --status none --workers 1 \
    --set sparsity.method=svite --set sparsity.sparsity="$sparsity" --set training.epochs=0 --set training.max_steps="$steps" \
    --set training.precision=fp32 --log-level warning > "$work/$mode.log" 2>&1 &
  coordinator=$!
  /usr/bin/time -f "%M" -o "$work/$mode.rss" "$svite" worker --coordinator "tcp://127.0.0.1:$port" --name w --threads 2 \
    --sparse-kernels "$mode" --log-level warning
  wait "$coordinator"
  echo "$config, SViTE $sparsity, $steps steps, fp32, sparse_kernels $mode: worker peak RSS $(( $(cat "$work/$mode.rss") / 1024 )) MiB"
  port=$((port + 1))
done
