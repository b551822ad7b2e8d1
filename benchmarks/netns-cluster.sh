#!/bin/bash
# N hosts, each a network namespace (the coordinator beside worker 1 on the first, as a
# user runs it; --own-coordinator-host gives it a namespace of its own), joined by veth
# pairs to a bridge in a namespace of their own; every link limited to RATE with DELAY
# each way (tc netem, both ends; a kernel without sch_netem, as this VM's, gets a token
# bucket, tbf, and no added delay). Trains the same config with svite in the ways --runs
# names, and with PyTorch DDP over gloo (benchmarks/ddp_reference.py, one torchrun rank in
# each worker's namespace, rank 0 on the first worker's host) with each --ddp hook, and
# prints per run: time per step (steady state), bytes per step through each host's link
# (the kernel's counters), and with --epochs the final test top-1 and the time to a target.
#
#   sudo benchmarks/netns-cluster.sh [--workers 4] [--rate 1gbit] [--delay 0.25ms] [--steps 60]
#        [--config default] [--density 0.01] [--batch 64] [--svite .build/release/svite] [--keep]
#        [--runs uncompressed,topk] [--ddp none --ddp fp16 --ddp powersgd] [--torchrun /opt/ref/bin/torchrun]
#        [--own-coordinator-host] [--epochs E [--target A]] [--out DIR] [--results FILE.jsonl] [--set KEY=VALUE]
#
# --runs (comma-separated): default (svite's own communication settings: gradient_density
# auto), uncompressed (gradient_density 1), int8 (gradient_density 1, every value in int8
# both ways: dense_values int8), int4 (the same in int4), topk (gradient_density --density), svite50 (the
# default communication with SViTE at 50% unstructured sparsity), svite50-uncompressed.
# --steps S times S steps (top-k then sends --density from its first step, no warm-up, with
# a live variance: time, not accuracy); --epochs E trains E epochs with an evaluation after each and svite's
# own schedules, and prints each run's final top-1 and its training time to --target (by
# default DDP fp32's final top-1 less 0.3 pt, when --ddp none runs: DDP runs first).
# --results appends one JSON line per run (hosts, rate, run, numbers, commit); --out keeps
# each run's directory (metrics.jsonl, config.yaml, logs) under DIR for `svite plot`.
#
# Needs root (ip netns), iproute2 and a release build. Addresses are 10.241.0.0/24
# inside the namespaces only; everything it makes is removed on exit (also on Ctrl-C).
set -euo pipefail

WORKERS=4 RATE=1gbit DELAY=0.25ms STEPS=60 CONFIG=default DENSITY=0.01 BATCH=64
SVITE=.build/release/svite KEEP=0 EXTRA=() HOOKS=() TORCHRUN=/opt/ref/bin/torchrun OWN=0 EPOCHS=0 TARGET=
RUNS=uncompressed,topk KEEPDIR= RESULTS=
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
    --runs) RUNS=$2; shift 2 ;;
    --out) KEEPDIR=$2; shift 2 ;;
    --results) RESULTS=$2; shift 2 ;;
    -h|--help) sed -n 2,28p "$0"; exit 0 ;;
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
IFS=, read -r -a RUN_LIST <<< "$RUNS"
for r in "${RUN_LIST[@]}"; do
  case "$r" in default|uncompressed|int8|int4|topk|svite50|svite50-uncompressed) ;; *) echo "--runs $r: default, uncompressed, int8, int4, topk, svite50 or svite50-uncompressed" >&2; exit 2 ;; esac
done
[ -z "$RESULTS" ] || RESULTS=$(readlink -f "$RESULTS")
COMMIT=$(git -C "$(dirname "$0")" rev-parse --short HEAD 2>/dev/null || echo unknown)

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
  if [ -n "$KEEPDIR" ]; then mkdir -p "$KEEPDIR" && cp -r "$OUT"/. "$KEEPDIR"/ && rm -rf "$OUT" && echo "runs kept in $KEEPDIR"
  elif [ "$KEEP" = 1 ]; then echo "runs kept in $OUT"; else rm -rf "$OUT"; fi
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

report() {  # report RUN_DIR LABEL BEFORE: one run's numbers, printed and (--results) appended as JSON
  counters > "$OUT/$2.counters"
  CELL=$([ -n "$KEEPDIR" ] && basename "$KEEPDIR") \
  python3 - "$1/metrics.jsonl" "$2" "$TARGET" "$3" "$OUT/$2.counters" "$RESULTS" "$WORKERS" "$RATE" "$CONFIG" "$BATCH" "$COMMIT" "${NODES[@]}" <<'PY'
import json, os, sys
path, label, target, before, after, results, hosts, rate, config, batch, commit = sys.argv[1:12]
names = sys.argv[12:]
recs = [json.loads(l) for l in open(path) if l.strip()]
train = [r for r in recs if r.get("kind") == "train"]
steps_made = max(r["step"] for r in train)
# Steady state: the train records after the first 20 steps.
t = [r for r in train if r["step"] > 20]
first = train[train.index(t[0]) - 1]
seconds_per_step = (t[-1]["elapsed_seconds"] - first["elapsed_seconds"]) / (t[-1]["step"] - first["step"])
up = sum(r.get("bytes_up_per_step", 0) for r in t) / len(t)
down = sum(r.get("bytes_down_per_step", 0) for r in t) / len(t)
shares = [r["wire_share"] for r in t if "wire_share" in r]
b = [tuple(map(int, l.split())) for l in before.strip().splitlines()]
a = [tuple(map(int, l.split())) for l in open(after).read().strip().splitlines()]
per = [((x[0] - y[0]) + (x[1] - y[1])) / steps_made for x, y in zip(a, b)]
others = [p for p, n in zip(per, names) if n != names[0]] or per
row = {"hosts": int(hosts), "rate": rate, "run": label, "config": config, "batch": int(batch), "commit": commit,
       "steps": steps_made, "ms_per_step": 1000 * seconds_per_step,
       "first_host_mib_per_step": per[0] / 2**20, "other_hosts_mib_per_step": sum(others) / len(others) / 2**20,
       "busiest_host_mib_per_step": max(per) / 2**20}
if os.environ.get("CELL"):  # the --out directory's name: ddp-matrix-table.py groups rows by it
    row["cell"] = os.environ["CELL"]
line = f"{label:<22} {1000 * seconds_per_step:8.1f} ms/step"
if up + down > 0:
    line += f"   up {up / 2**20:7.2f} down {down / 2**20:7.2f} MiB/step (all workers)"
if shares:
    row["wire_share"] = sum(shares) / len(shares)
    line += f"   wire {100 * row['wire_share']:.0f}%"
decision = [r for r in recs if r.get("kind") == "wire"]
if decision:
    row["auto_density"] = decision[-1]["gradient_density"]; row["auto_step"] = decision[-1]["step"]
    line += f"   auto: {'top-k' if decision[-1]['gradient_density'] < 1 else 'every value'} from step {decision[-1]['step']}"
line += f"\n{'':<22} link MiB/step: first host {per[0] / 2**20:.2f}, mean of the others {sum(others) / len(others) / 2**20:.2f}, busiest {max(per) / 2**20:.2f}"
evals = [r for r in recs if r.get("kind") == "eval"]
for e in evals:  # eval records before svite d27e1c3 carry no time: the last train record's at or before them
    if "elapsed_seconds" not in e:
        e["elapsed_seconds"] = max((r for r in train if r["step"] <= e["step"]), key=lambda r: r["step"])["elapsed_seconds"]
end = [r for r in recs if r.get("kind") == "end"]
if evals:
    row["final_top1"] = evals[-1]["eval_accuracy"]
    row["train_seconds"] = (end[-1] if end else train[-1])["elapsed_seconds"]
    line += f"\n{'':<22} final top-1 {100 * row['final_top1']:.2f}% after {row['train_seconds']:.0f} s"
    if target:
        tgt = float(target)
        hit = next((r for r in evals if r["eval_accuracy"] >= tgt), None)
        row["target"] = tgt
        row["seconds_to_target"] = hit["elapsed_seconds"] if hit else None
        line += f", {100 * tgt:.2f}% at {hit['elapsed_seconds']:.0f} s" if hit else f", {100 * tgt:.2f}% not reached"
print(line, flush=True)
if results:
    with open(results, "a") as f: f.write(json.dumps(row) + "\n")
PY
}

# How long a run is: STEPS steps with a live variance and no warm-up (time only), or EPOCHS
# epochs with an evaluation after each and svite's own compression schedule (accuracy too).
if [ "$EPOCHS" != 0 ]; then
  LENGTH=(--set training.epochs="$EPOCHS" --set training.max_steps=0 --set training.eval_every_epochs=1)
  TOPK=()
else
  LENGTH=(--set training.max_steps="$STEPS" --set training.eval_every_epochs=0)
  TOPK=(--set communication.dense_warmup_epochs=0 --set communication.density_warmup_epochs=0 --set communication.freeze_variance=off)
fi

run() {  # run LABEL [--set KEY=VALUE]...: svite's coordinator and a worker on each host
  local label=$1 dir="$OUT/$1" before
  shift
  before=$(counters)
  ip netns exec "$TAG-$COORD" "$SVITE" coordinator --config "$CONFIG" --bind "tcp://10.241.0.1:5555" --workers "$WORKERS" \
    --out "$dir" --plain --worker-timeout 60 --balance equal "${LENGTH[@]}" --set training.batch_size="$BATCH" \
    --set training.log_every_steps=10 "$@" "${EXTRA[@]}" > "$OUT/$label.coordinator.log" 2>&1 &
  local coord=$!
  PIDS+=("$coord")
  for n in "${WORKER_NODES[@]}"; do
    ip netns exec "$TAG-$n" "$SVITE" worker --coordinator "tcp://10.241.0.1:5555" --name "$n" --threads 1 \
      > "$OUT/$label.$n.log" 2>&1 &
    PIDS+=("$!")
  done
  wait "$coord" || { echo "$label: the coordinator failed; its log:" >&2; tail -20 "$OUT/$label.coordinator.log" >&2; exit 1; }
  report "$dir" "$label" "$before"
  sleep 1
}

run_ddp() {  # run_ddp HOOK: one torchrun rank per worker namespace, training the config svite resolves
  local label="ddp-$1" dir="$OUT/ddp-$1" k=0 pids=() before
  before=$(counters)
  for n in "${WORKER_NODES[@]}"; do
    ip netns exec "$TAG-$n" env OMP_NUM_THREADS=1 GLOO_SOCKET_IFNAME=eth0 "$TORCHRUN" --nnodes "$WORKERS" --nproc-per-node 1 --node-rank "$k" \
      --master-addr "$MASTER" --master-port 29500 "$DDP" --config "$CONFIG_FILE" --out "$dir" \
      --threads 1 --hook "$1" > "$OUT/$label.$n.log" 2>&1 &
    PIDS+=("$!"); pids+=("$!")
    k=$((k + 1))
  done
  for p in "${pids[@]}"; do wait "$p" || { echo "$label: a rank failed; its log:" >&2; tail -20 "$OUT/$label.w1.log" >&2; exit 1; }; done
  report "$dir" "$label" "$before"
  if [ "$1" = none ] && [ "$EPOCHS" != 0 ] && [ -z "$TARGET" ]; then
    TARGET=$(python3 -c 'import json,sys; e=[json.loads(l) for l in open(sys.argv[1]) if "\"eval\"" in l]; print(round(e[-1]["eval_accuracy"] - 0.003, 4))' "$dir/metrics.jsonl")
    echo "target: DDP fp32's final top-1 less 0.3 pt, $TARGET"
  fi
  sleep 1
}

if [ "$SHAPER" = netem ]; then LINK="$RATE, $DELAY each way (netem)"; else LINK="$RATE (tbf; no added delay: this kernel has no sch_netem)"; fi
if [ "$OWN" = 1 ]; then WHERE="the coordinator on a host of its own"; else WHERE="the coordinator beside worker 1"; fi
if [ "$EPOCHS" != 0 ]; then LEN="$EPOCHS epoch(s)"; else LEN="$STEPS steps"; fi
echo "$WORKERS hosts, each a namespace, $WHERE; links $LINK; $CONFIG, batch $BATCH, $LEN, 1 thread a host; svite $COMMIT"
# DDP trains the config svite resolves (its sparsity and communication sections aside), first:
# its fp32 run's final top-1 is the others' target.
CONFIG_FILE="$OUT/resolved.yaml"
"$SVITE" config --config "$CONFIG" "${LENGTH[@]}" --set training.batch_size="$BATCH" "${EXTRA[@]}" > "$CONFIG_FILE" \
  || { echo "could not resolve --config $CONFIG" >&2; exit 1; }
for h in "${HOOKS[@]:-}"; do [ -n "$h" ] && run_ddp "$h"; done
for r in "${RUN_LIST[@]}"; do
  case "$r" in
    default) run default ;;
    uncompressed) run uncompressed --set communication.gradient_density=1 ;;
    int8) run int8 --set communication.gradient_density=1 --set communication.dense_values=int8 ;;
    int4) run int4 --set communication.gradient_density=1 --set communication.dense_values=int4 ;;
    topk) run "topk-$DENSITY" --set communication.gradient_density="$DENSITY" "${TOPK[@]}" ;;
    svite50) run svite50 --set sparsity.method=svite --set sparsity.sparsity=0.5 ;;
    svite50-uncompressed) run svite50-uncompressed --set sparsity.method=svite --set sparsity.sparsity=0.5 --set communication.gradient_density=1 ;;
  esac
done
