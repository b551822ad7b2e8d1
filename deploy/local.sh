#!/usr/bin/env bash
# One coordinator and N workers on this machine, over loopback, as separate processes:
# the same protocol as a cluster. (`svite train` does this by itself; this script shows
# the pieces and is the template for other launchers.)
#
#   deploy/local.sh [WORKERS] [extra coordinator flags...]
#   e.g. deploy/local.sh 2 --config fmnist-tiny --set training.epochs=1
#
# Environment: SVITE (the binary; default .build/release/svite), SVITE_PORT (5555),
# SVITE_STATUS_PORT (5556), SVITE_THREADS (threads per worker; default cores / WORKERS; the
# coordinator reads it too when it is exported).
set -euo pipefail

workers=${1:-2}
shift || true
svite=${SVITE:-.build/release/svite}
port=${SVITE_PORT:-5555}
status_port=${SVITE_STATUS_PORT:-5556}
cores=$(nproc)
threads=${SVITE_THREADS:-$(( cores / workers > 0 ? cores / workers : 1 ))}

if [[ ! -x "$svite" ]]; then
    echo "local.sh: $svite not found; build it with: swift build -c release --static-swift-stdlib" >&2
    exit 1
fi

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

for ((k = 0; k < workers; k++)); do
    "$svite" worker --coordinator "tcp://127.0.0.1:$port" --threads "$threads" --name "local-$k" \
        --log-level warning &
    pids+=("$!")
done

"$svite" coordinator --bind "tcp://127.0.0.1:$port" --status "tcp://127.0.0.1:$status_port" \
    --workers "$workers" "$@"
