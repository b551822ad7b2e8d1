#!/bin/bash
# svite against torchrun DDP (gloo) on namespace clusters: every cell of the matrix below
# through benchmarks/netns-cluster.sh, one after the other, each cell's output appended to
# DIR/log.txt, its numbers to DIR/results.jsonl and its run directories kept in DIR/CELL/.
# Resumable: a cell whose name is in DIR/done is skipped, so after a stop (or a crash) the
# same command goes on where it was. Nothing else may run on the machine meanwhile: every
# number is a same-run ratio only while the cells share the cores alone.
#
#   sudo benchmarks/ddp-matrix.sh DIR [--only CELL-PREFIX]
set -euo pipefail
DIR=${1:?usage: ddp-matrix.sh DIR [--only PREFIX]}
ONLY=${3:-}
mkdir -p "$DIR"
DIR=$(readlink -f "$DIR")
HERE=$(dirname "$(readlink -f "$0")")
touch "$DIR/done"
MODEL=(--config fmnist-6head --batch 128 --set training.precision=fp32)
ACC=(--epochs 4 --set data.train_limit=30000)

cell() {  # cell NAME ARGS...: one netns-cluster.sh invocation
  local name=$1; shift
  [ -n "$ONLY" ] && [[ "$name" != "$ONLY"* ]] && return 0
  grep -qx "$name" "$DIR/done" && { echo "$name: done before, skipped"; return 0; }
  echo "=== $name ($(date -u +%H:%M:%S))" | tee -a "$DIR/log.txt"
  rm -rf "${DIR:?}/$name"
  "$HERE/netns-cluster.sh" "$@" --out "$DIR/$name" --results "$DIR/results.jsonl" 2>&1 | tee -a "$DIR/log.txt"
  [ "${PIPESTATUS[0]}" = 0 ] || { echo "$name failed" | tee -a "$DIR/log.txt"; exit 1; }
  echo "$name" >> "$DIR/done"
}

# Time per step and bytes, 60 steps (steady state after 20), every run kind.
for rate in 100mbit 1gbit 10gbit; do
  cell "steps-4-$rate" --workers 4 --rate "$rate" --steps 60 "${MODEL[@]}" \
    --runs uncompressed,topk,svite50-uncompressed --ddp none --ddp fp16 --ddp powersgd
done
for n in 8 2; do
  cell "steps-$n-1gbit" --workers "$n" --rate 1gbit --steps 60 "${MODEL[@]}" \
    --runs uncompressed,topk,svite50-uncompressed --ddp none --ddp fp16 --ddp powersgd
done
# Time to accuracy: 4 epochs of 30000 images, DDP fp32 first (its final top-1 less 0.3 pt is the target).
cell acc-4-100mbit --workers 4 --rate 100mbit "${MODEL[@]}" "${ACC[@]}" --runs default,svite50 --ddp none --ddp powersgd
cell acc-4-1gbit --workers 4 --rate 1gbit "${MODEL[@]}" "${ACC[@]}" --runs default,uncompressed,svite50 --ddp none --ddp powersgd
cell acc-4-10gbit --workers 4 --rate 10gbit "${MODEL[@]}" "${ACC[@]}" --runs default,svite50 --ddp none
# After the bf16 tier of gradient_density auto: svite's default against the runs above,
# top-k at a true 1% in the 60-step rows (no density warm-up).
AFTER=(--runs uncompressed,topk,default)
cell after-steps-4-100mbit --workers 4 --rate 100mbit --steps 60 "${MODEL[@]}" "${AFTER[@]}" --ddp none --ddp powersgd
cell after-steps-4-1gbit --workers 4 --rate 1gbit --steps 60 "${MODEL[@]}" "${AFTER[@]}" --ddp none
cell after-steps-8-1gbit --workers 8 --rate 1gbit --steps 60 "${MODEL[@]}" "${AFTER[@]}" --ddp none
cell after-acc-4-1gbit --workers 4 --rate 1gbit "${MODEL[@]}" "${ACC[@]}" --runs default,uncompressed --ddp none
cell after-acc-4-100mbit --workers 4 --rate 100mbit "${MODEL[@]}" "${ACC[@]}" --runs default --ddp none --ddp powersgd
# After the int8 tier (dense_values auto: int8 both ways where the wire takes a fifth of a step).
cell int8-steps-4-1gbit --workers 4 --rate 1gbit --steps 60 "${MODEL[@]}" --runs uncompressed,default --ddp none
cell int8-steps-8-1gbit --workers 8 --rate 1gbit --steps 60 "${MODEL[@]}" --runs uncompressed,default --ddp none
cell int8-steps-4-100mbit --workers 4 --rate 100mbit --steps 60 "${MODEL[@]}" --runs default,int8 --ddp none
cell int8-acc-4-1gbit --workers 4 --rate 1gbit "${MODEL[@]}" "${ACC[@]}" --runs default --ddp none
cell int8-acc-4-100mbit --workers 4 --rate 100mbit "${MODEL[@]}" "${ACC[@]}" --runs default,int8 --ddp none
# int4 both ways at 100 Mbit/s, where int8 still left the wire two thirds of a step.
cell int4-acc-4-100mbit --workers 4 --rate 100mbit "${MODEL[@]}" "${ACC[@]}" --runs int4 --ddp none
# The default as auto now decides it (int4 where the wire takes 80% of a step or more).
cell tiers-acc-4-100mbit --workers 4 --rate 100mbit "${MODEL[@]}" "${ACC[@]}" --runs default --ddp none
# int4 as eight levels of a bf16 scale (wire protocol 8): the default at 100 Mbit/s (auto's
# int4) to accuracy, and int4 against int8 per step where auto takes int8 (8 hosts, 1 Gbit/s).
cell levels-acc-4-100mbit --workers 4 --rate 100mbit "${MODEL[@]}" "${ACC[@]}" --runs default --ddp none
cell levels-steps-8-1gbit --workers 8 --rate 1gbit --steps 60 "${MODEL[@]}" --runs default,int4 --ddp none
# int4 where auto took int8 (4 hosts, 1 Gbit/s), to accuracy: fewer bytes also spare the CPU all hosts share.
cell levels-acc-4-1gbit --workers 4 --rate 1gbit "${MODEL[@]}" "${ACC[@]}" --runs default,int4 --ddp none
# The default as auto now decides it at 1 Gbit/s (int4 from 40% of a step: fp32 took 50% there).
cell tiers2-acc-4-1gbit --workers 4 --rate 1gbit "${MODEL[@]}" "${ACC[@]}" --runs default --ddp none
# int8 and int4 per step after int8's vector encode (its float-to-integer conversion had run lane by lane).
cell encode-steps-4-1gbit --workers 4 --rate 1gbit --steps 60 "${MODEL[@]}" --runs int8,int4 --ddp none
cell encode-steps-8-1gbit --workers 8 --rate 1gbit --steps 60 "${MODEL[@]}" --runs int8,int4 --ddp none
echo "all cells done ($(date -u +%H:%M:%S))" | tee -a "$DIR/log.txt"
