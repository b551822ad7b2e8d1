#!/bin/bash
# One straggler against the run without it: the same run with HEALTHY workers, then with
# one more worker that is slow, either its CPU capped by a cgroup (--cpu PERCENT) or its
# link limited by tbf (--link RATE; this kernel has no netem) in a network namespace of
# its own. Prints each run's steady-state steps per second (the coordinator's metrics,
# steps after --skip), the ratio, and what the run recorded about the straggler: its
# missed steps, benches and rejoins, and images left out.
#
#   sudo benchmarks/straggler.sh (--cpu 2 | --link 1mbit) [--healthy 1] [--steps 400] [--skip 50]
#        [--config default] [--svite .build/release/svite] [--set key=value]... [--keep]
#
# Needs root (a cgroup or ip netns), iproute2 for --link, a release build. Everything it
# makes is removed on exit (also on Ctrl-C).
set -euo pipefail

CPU="" LINK="" HEALTHY=1 STEPS=400 SKIP=50 CONFIG=default SVITE=.build/release/svite KEEP=0 EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) CPU=$2; shift 2 ;;
    --link) LINK=$2; shift 2 ;;
    --healthy) HEALTHY=$2; shift 2 ;;
    --steps) STEPS=$2; shift 2 ;;
    --skip) SKIP=$2; shift 2 ;;
    --config) CONFIG=$2; shift 2 ;;
    --svite) SVITE=$2; shift 2 ;;
    --set) EXTRA+=(--set "$2"); shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) sed -n 2,13p "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$CPU$LINK" ] && [ -z "$CPU" -o -z "$LINK" ] || { echo "give one of --cpu PERCENT or --link RATE" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "needs root (run with sudo)" >&2; exit 1; }
[ -x "$SVITE" ] || { echo "$SVITE is missing: swift build -c release --static-swift-stdlib" >&2; exit 1; }
SVITE=$(readlink -f "$SVITE")
TAG="sst$$"
OUT=$(mktemp -d /tmp/svite-straggler.XXXXXX)
PIDS=() CGROUP=""

cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  sleep 0.5
  [ -n "$CGROUP" ] && rmdir "$CGROUP" 2>/dev/null || true
  ip netns del "$TAG-c" 2>/dev/null || true
  ip netns del "$TAG-s" 2>/dev/null || true
  [ "$KEEP" = 1 ] && echo "runs kept in $OUT" || rm -rf "$OUT"
}
trap cleanup EXIT INT TERM

# Where the coordinator and the healthy workers run, and how the straggler is started.
IN_C=() IN_S=() ENDPOINT="tcp://127.0.0.1:5555"
if [ -n "$LINK" ]; then
  command -v ip >/dev/null && command -v tc >/dev/null || { echo "needs iproute2" >&2; exit 1; }
  ip netns add "$TAG-c"; ip netns add "$TAG-s"
  ip link add "${TAG}a" type veth peer name "${TAG}b"
  ip link set "${TAG}a" netns "$TAG-c"; ip link set "${TAG}b" netns "$TAG-s"
  ip -n "$TAG-c" addr add 10.242.0.1/24 dev "${TAG}a"; ip -n "$TAG-s" addr add 10.242.0.2/24 dev "${TAG}b"
  for ns in c s; do ip -n "$TAG-$ns" link set lo up; done
  ip -n "$TAG-c" link set "${TAG}a" up; ip -n "$TAG-s" link set "${TAG}b" up
  tc -n "$TAG-c" qdisc add dev "${TAG}a" root tbf rate "$LINK" burst 32kb latency 400ms
  tc -n "$TAG-s" qdisc add dev "${TAG}b" root tbf rate "$LINK" burst 32kb latency 400ms
  IN_C=(ip netns exec "$TAG-c") IN_S=(ip netns exec "$TAG-s") ENDPOINT="tcp://10.242.0.1:5555"
  WHAT="one worker behind a $LINK link (tbf both ways)"
else
  if [ -d /sys/fs/cgroup/cpu ] && [ -f /sys/fs/cgroup/cpu/cpu.cfs_period_us ]; then
    CGROUP=/sys/fs/cgroup/cpu/$TAG; mkdir "$CGROUP"
    echo 100000 > "$CGROUP/cpu.cfs_period_us"; echo $((CPU * 1000)) > "$CGROUP/cpu.cfs_quota_us"
  else
    CGROUP=/sys/fs/cgroup/$TAG; mkdir "$CGROUP"
    echo "$((CPU * 1000)) 100000" > "$CGROUP/cpu.max"
  fi
  WHAT="one worker capped at $CPU% of a CPU (cgroup)"
fi

run() {  # run LABEL WORKERS STRAGGLER(0|1)
  local label=$1 workers=$2 straggler=$3 dir="$OUT/$1"
  "${IN_C[@]}" "$SVITE" coordinator --config "$CONFIG" --bind "$ENDPOINT" --status none --workers "$workers" --out "$dir" --plain \
    --set training.max_steps="$STEPS" --set training.epochs=0 --set training.eval_every_epochs=0 --set training.log_every_steps=10 \
    "${EXTRA[@]}" > "$OUT/$label.coordinator.log" 2>&1 &
  local coord=$!
  PIDS+=("$coord")
  for k in $(seq 1 "$HEALTHY"); do
    "${IN_C[@]}" "$SVITE" worker --coordinator "$ENDPOINT" --name "healthy-$k" --threads 1 > "$OUT/$label.healthy-$k.log" 2>&1 &
    PIDS+=("$!")
  done
  if [ "$straggler" = 1 ]; then
    "${IN_S[@]}" "$SVITE" worker --coordinator "$ENDPOINT" --name straggler --threads 1 > "$OUT/$label.straggler.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    [ -n "$CPU" ] && echo "$pid" > "$CGROUP/cgroup.procs"
  fi
  wait "$coord" || { echo "$label: the coordinator failed; its log:" >&2; tail -20 "$OUT/$label.coordinator.log" >&2; exit 1; }
  python3 - "$dir/metrics.jsonl" "$label" "$SKIP" <<'EOF'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
train = [r for r in recs if r.get("kind") == "train"]
skip = int(sys.argv[3])
first = max((r for r in train if r["step"] <= skip), key=lambda r: r["step"])
last = train[-1]
rate = (last["step"] - first["step"]) / (last["elapsed_seconds"] - first["elapsed_seconds"])
missing = sum(r.get("images_missing", 0) for r in train)
events = [r["event"] for r in recs if r.get("kind") == "worker" and r.get("worker") == "straggler"]
counts = {e: events.count(e) for e in sorted(set(events))}
print(f"{sys.argv[2]:<12} {rate:7.2f} steps/s over steps {first['step']}-{last['step']}; images left out {missing}; straggler events {counts}")
open(sys.argv[1] + ".rate", "w").write(f"{rate}\n")
EOF
}

echo "$CONFIG, $STEPS steps, $HEALTHY healthy worker(s) with 1 thread each; straggler: $WHAT"
run without "$HEALTHY" 0
run with $((HEALTHY + 1)) 1
python3 - "$OUT/without/metrics.jsonl.rate" "$OUT/with/metrics.jsonl.rate" <<'EOF'
import sys
a, b = (float(open(p).read()) for p in sys.argv[1:])
print(f"with the straggler: {b / a:.2f}x the step rate without it")
EOF
