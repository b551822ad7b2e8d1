#!/bin/bash
# N hosts, each a network namespace (the coordinator beside worker 1 on the first, as a
# user runs it; --own-coordinator-host gives it a namespace of its own), joined by veth
# pairs to a bridge in a namespace of their own; every link limited to RATE with DELAY
# each way (tc netem, both ends). Trains the same run uncompressed and with top-k, and
# prints the time per step of each (the coordinator's metrics, steady-state records).
# The top-k run compresses from its first step with a live variance: it measures time, not accuracy.
# With --ddp HOOK (repeatable: none, fp16, powersgd) it also trains the uncompressed run's
# resolved config with PyTorch DDP over gloo (benchmarks/ddp_reference.py), one torchrun
# rank in each worker's namespace, rank 0 on the first worker's host, on the same links.
#
#   sudo benchmarks/netns-cluster.sh [--workers 4] [--rate 1gbit] [--delay 0.25ms] [--steps 60]
#        [--config default] [--density 0.01] [--batch 64] [--svite .build/release/svite] [--keep]
#        [--ddp none --ddp fp16 --ddp powersgd] [--torchrun /opt/ref/bin/torchrun] [--own-coordinator-host]
#        [--epochs E [--target 0.84]]
# --epochs E trains E epochs with an evaluation after each instead of --steps (the top-k run
# then keeps svite's own dense warm-up and variance freezing), and prints each run's final
# test accuracy and its training time to --target accuracy.
#
# Needs root (ip netns), iproute2 and a release build. Addresses are 10.241.0.0/24
# inside the namespaces only; everything it makes is removed on exit (also on Ctrl-C).
set -euo pipefail

WORKERS=4 RATE=1gbit DELAY=0.25ms STEPS=60 CONFIG=default DENSITY=0.01 BATCH=64
SVITE=.build/release/svite KEEP=0 EXTRA=() HOOKS=() TORCHRUN=/opt/ref/bin/torchrun OWN=0 EPOCHS=0 TARGET=
while [ $# -gt 0 ]; do
  case "$1" in
    --workers) WORKERS=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --delay) DELAY=$2; shift 2 ;;
    --steps) STEPS=$2; shift 2 ;;
    --config) CONFIG=$2; shift 2 ;;
    --density) DENSITY=$2; shift 2 ;;
    --batch) BATCH=$2; shift 2 ;;
    --svite) SVITE=$2; shift 2 ;;
    --set) EXTRA+=(--set "$2"); shift 2 ;;
    --ddp) HOOKS+=("$2"); shift 2 ;;
    --torchrun) TORCHRUN=$2; shift 2 ;;
    --own-coordinator-host) OWN=1; shift ;;
    --epochs) EPOCHS=$2; shift 2 ;;
    --target) TARGET=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) sed -n 2,21p "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "needs root for ip netns (run with sudo)" >&2; exit 1; }
command -v ip >/dev/null && command -v tc >/dev/null || { echo "needs iproute2 (apt-get install iproute2)" >&2; exit 1; }
[ -x "$SVITE" ] || { echo "$SVITE is missing: swift build -c release --static-swift-stdlib" >&2; exit 1; }
SVITE=$(readlink -f "$SVITE")
DDP=$(readlink -f "$(dirname "$0")/ddp_reference.py")
if [ ${#HOOKS[@]} -gt 0 ]; then
  [ -x "$TORCHRUN" ] || { echo "$TORCHRUN is missing: python3 -m venv /opt/ref && /opt/ref/bin/pip install torch timm" >&2; exit 1; }
  for h in "${HOOKS[@]}"; do case "$h" in none|fp16|powersgd) ;; *) echo "--ddp $h: none, fp16 or powersgd" >&2; exit 2 ;; esac; done
fi

TAG="svn$$"
BR="$TAG-br"
OUT=$(mktemp -d /tmp/svite-netns.XXXXXX)
WORKER_NODES=($(seq -f "w%g" 1 "$WORKERS"))
# The first node has 10.241.0.1: the coordinator's host, and DDP's rank 0 is on the first worker's.
if [ "$OWN" = 1 ]; then NODES=(coord "${WORKER_NODES[@]}"); COORD=coord; MASTER=10.241.0.2
else NODES=("${WORKER_NODES[@]}"); COORD=w1; MASTER=10.241.0.1; fi
PIDS=()

cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  sleep 0.5
  for n in "${NODES[@]}"; do ip netns del "$TAG-$n" 2>/dev/null || true; done
  ip netns del "$BR" 2>/dev/null || true
  [ "$KEEP" = 1 ] && echo "runs kept in $OUT" || rm -rf "$OUT"
}
trap cleanup EXIT INT TERM

# netem gives rate and delay; a kernel built without sch_netem (seen on CI VMs) gets the
# rate from a token bucket (tbf, its queue bounded at 200 ms) and no added delay, said below.
ip netns add "$TAG-probe"
if ip netns exec "$TAG-probe" tc qdisc add dev lo root netem delay "$DELAY" 2>/dev/null; then SHAPER=netem; else SHAPER=tbf; fi
ip netns del "$TAG-probe"
shape() {  # shape NAMESPACE DEVICE
  if [ "$SHAPER" = netem ]; then
    ip netns exec "$1" tc qdisc add dev "$2" root netem delay "$DELAY" rate "$RATE" limit 100000
  else
    ip netns exec "$1" tc qdisc add dev "$2" root tbf rate "$RATE" burst 256kb latency 200ms
  fi
}

ip netns add "$BR"
ip netns exec "$BR" ip link add br0 type bridge
ip netns exec "$BR" ip link set br0 up
i=1
for n in "${NODES[@]}"; do
  ns="$TAG-$n"
  ip netns add "$ns"
  ip link add "$TAG$i" type veth peer name "${TAG}b$i"
  ip link set "$TAG$i" netns "$ns"
  ip link set "${TAG}b$i" netns "$BR"
  ip netns exec "$ns" ip link set "$TAG$i" name eth0
  ip netns exec "$ns" ip addr add "10.241.0.$i/24" dev eth0
  ip netns exec "$ns" ip link set eth0 up
  ip netns exec "$ns" ip link set lo up
  ip netns exec "$BR" ip link set "${TAG}b$i" master br0 up
  # The link's rate and delay, both directions (the node's egress and the bridge's).
  shape "$ns" eth0
  shape "$BR" "${TAG}b$i"
  i=$((i + 1))
done

counters() {  # counters: "tx rx" of every node's eth0, in NODES order, one line each
  for n in "${NODES[@]}"; do
    echo "$(ip netns exec "$TAG-$n" cat /sys/class/net/eth0/statistics/tx_bytes) $(ip netns exec "$TAG-$n" cat /sys/class/net/eth0/statistics/rx_bytes)"
  done
}

linkbytes() {  # linkbytes LABEL BEFORE STEPS: bytes through each host's link per step, from the kernel's counters
  counters | python3 -c '
import sys
label, before, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
names = sys.argv[4:]
b = [tuple(map(int, l.split())) for l in before.strip().splitlines()]
a = [tuple(map(int, l.split())) for l in sys.stdin.read().strip().splitlines()]
per = [((x[0] - y[0]) + (x[1] - y[1])) / steps for x, y in zip(a, b)]
busiest = max(range(len(per)), key=lambda i: per[i])
others = [p for p, n in zip(per, names) if n != names[0]] or per
print(f"{label:<14} link bytes per step (in + out, whole run): busiest {names[busiest]} {per[busiest] / 2**20:.2f} MiB, "
      + f"first host {per[0] / 2**20:.2f} MiB, mean of the others {sum(others) / len(others) / 2**20:.2f} MiB")
' "$1" "$2" "$3" "${NODES[@]}"
}

steps_of() {  # steps_of RUN_DIR: the steps the run made (its last train record)
  python3 -c 'import json,sys; print(max(json.loads(l)["step"] for l in open(sys.argv[1]) if l.strip()))' "$1/metrics.jsonl"
}

summarize() {  # summarize RUN_DIR LABEL: steady-state time and bytes per step from metrics.jsonl
  # Steady state: the train records after the first 20 steps.
  python3 - "$1/metrics.jsonl" "$2" "$TARGET" <<'EOF'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
train = [r for r in recs if r.get("kind") == "train"]
t = [r for r in train if r["step"] > 20]
steps = t[-1]["step"] - train[train.index(t[0]) - 1]["step"]
secs = t[-1]["elapsed_seconds"] - train[train.index(t[0]) - 1]["elapsed_seconds"]
up = sum(r.get("bytes_up_per_step", 0) for r in t) / len(t)
down = sum(r.get("bytes_down_per_step", 0) for r in t) / len(t)
wire = f"   up {up / 2**20:8.2f} MiB/step   down {down / 2**20:8.2f} MiB/step (all workers)" if up + down > 0 else ""
evals = [r for r in recs if r.get("kind") == "eval"]
acc = ""
if evals:
    acc = f"   final top-1 {100 * evals[-1]['eval_accuracy']:.2f}%"
    target = float(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[3] else None
    if target is not None:
        hit = next((r for r in evals if r["eval_accuracy"] >= target), None)
        acc += f", {100 * target:.1f}% at {hit['elapsed_seconds']:.0f} s" if hit else f", {100 * target:.1f}% not reached"
print(f"{sys.argv[2]:<14} {1000 * secs / steps:9.1f} ms/step{wire}{acc}")
with open(sys.argv[1] + ".summary", "w") as f: f.write(f"{secs / steps}\n")
EOF
}

# How long a run is: STEPS steps with a live variance and no warm-up (time only), or EPOCHS
# epochs with an evaluation after each and svite's own compression schedule (accuracy too).
if [ "$EPOCHS" != 0 ]; then
  LENGTH=(--set training.epochs="$EPOCHS" --set training.max_steps=0 --set training.eval_every_epochs=1)
  TOPK=()
else
  LENGTH=(--set training.max_steps="$STEPS" --set training.eval_every_epochs=0)
  TOPK=(--set communication.dense_warmup_epochs=0 --set communication.freeze_variance=off)
fi

run() {  # run LABEL density
  local label=$1 density=$2 dir="$OUT/$1" before
  before=$(counters)
  ip netns exec "$TAG-$COORD" "$SVITE" coordinator --config "$CONFIG" --bind "tcp://10.241.0.1:5555" --workers "$WORKERS" \
    --out "$dir" --plain --worker-timeout 60 --balance equal "${LENGTH[@]}" --set training.batch_size="$BATCH" \
    --set training.log_every_steps=10 --set communication.gradient_density="$density" "${TOPK[@]}" "${EXTRA[@]}" \
    > "$OUT/$label.coordinator.log" 2>&1 &
  local coord=$!
  PIDS+=("$coord")
  local k=2
  for n in "${WORKER_NODES[@]}"; do
    ip netns exec "$TAG-$n" "$SVITE" worker --coordinator "tcp://10.241.0.1:5555" --name "$n" --threads 1 \
      > "$OUT/$label.$n.log" 2>&1 &
    PIDS+=("$!")
    k=$((k + 1))
  done
  wait "$coord" || { echo "$label: the coordinator failed; its log:" >&2; tail -20 "$OUT/$label.coordinator.log" >&2; exit 1; }
  summarize "$dir" "$label"
  linkbytes "$label" "$before" "$(steps_of "$dir")"
  sleep 1
}

if [ "$SHAPER" = netem ]; then LINK="$RATE, $DELAY each way (netem)"; else LINK="$RATE (tbf; no added delay: this kernel has no sch_netem)"; fi
if [ "$OWN" = 1 ]; then WHERE="the coordinator on a host of its own"; else WHERE="the coordinator beside worker 1"; fi
if [ "$EPOCHS" != 0 ]; then LEN="$EPOCHS epoch(s)"; else LEN="$STEPS steps"; fi
echo "$WORKERS hosts, each a namespace, $WHERE; links $LINK; $CONFIG, batch $BATCH, $LEN, 1 thread a host"
run uncompressed 1
run "topk-$DENSITY" "$DENSITY"
run_ddp() {  # run_ddp HOOK: one torchrun rank per worker namespace, the uncompressed run's config
  local label="ddp-$1" dir="$OUT/ddp-$1" k=0 pids=() before
  before=$(counters)
  for n in "${WORKER_NODES[@]}"; do
    ip netns exec "$TAG-$n" env OMP_NUM_THREADS=1 GLOO_SOCKET_IFNAME=eth0 "$TORCHRUN" --nnodes "$WORKERS" --nproc-per-node 1 --node-rank "$k" \
      --master-addr "$MASTER" --master-port 29500 "$DDP" --config "$OUT/uncompressed/config.yaml" --out "$dir" \
      --threads 1 --hook "$1" > "$OUT/$label.$n.log" 2>&1 &
    PIDS+=("$!"); pids+=("$!")
    k=$((k + 1))
  done
  for p in "${pids[@]}"; do wait "$p" || { echo "$label: a rank failed; its log:" >&2; tail -20 "$OUT/$label.w1.log" >&2; exit 1; }; done
  summarize "$dir" "$label"
  linkbytes "$label" "$before" "$(steps_of "$dir")"
  sleep 1
}
for h in "${HOOKS[@]:-}"; do [ -n "$h" ] && run_ddp "$h"; done
python3 - "$OUT/uncompressed/metrics.jsonl.summary" "$OUT/topk-$DENSITY/metrics.jsonl.summary" <<'EOF'
import sys
a, b = (float(open(p).read()) for p in sys.argv[1:])
print(f"top-k is {a / b:.2f}x faster per step than uncompressed")
EOF
