#!/usr/bin/env bash
# Runs the launchers of deploy/ for real on this machine (Debian 12, as root), part by part:
#
#   slurm          a Slurm cluster on 127.0.0.1 (slurmctld, two slurmd, munge; Debian's
#                  slurm-wlm) runs slurm/train.sbatch on a tiny run: the job ends COMPLETED
#                  with the checkpoint written and no process left; submitted again, the
#                  finished run ends at once
#   slurm-requeue  the same cluster; SIGTERM to the batch script mid-run (as --signal=B:TERM
#                  sends it), then to the job's steps: each time the coordinator checkpoints
#                  and exits 75, the script requeues; resumed to the end. A plain scancel
#                  cancels the job for good (no requeue)
#   systemd        systemd-analyze verify on the units with their CURVE drop-ins (temp root)
#   systemd-run    deploy/README.md's systemd commands in a chroot, then each unit's
#                  ExecStart as systemd would run it: a dynamic uid, the unit's, drop-in's
#                  and environment file's variables, credentials as systemd lays them out.
#                  A worker up before its coordinator says what to check; a CURVE run,
#                  systemctl stop mid-run (coordinator and worker exit 75), resumed to the
#                  end (0, 0); the finished run started again exits 0; a malformed endpoint
#                  exits 64; and what the units' Restart= and exit status lists make of each
#   k8s            the manifests against Kubernetes' schemas (kubernetes-validate, strict,
#                  1.26 and newest) and what the launchers rely on (Job + PVC + headless
#                  Service, the image's uid, ports, SVITE_THREADS from the CPU limits,
#                  svite itself as the coordinator's process)
#   k8s-run        the pods reproduced: the Secret volumes as the kubelet makes them with
#                  fsGroup (root:GID 0440), the volume group-writable, the manifests' uid and
#                  groups, own network and hostnames; from the manifests' commands, with
#                  keys made and packed as deploy/README.md says, a CURVE run stopped by
#                  SIGTERM (both pods exit 75), resumed to the end (0), started again (0,
#                  writing nothing)
#   image          the Dockerfile's run stage: debootstrap bookworm, deploy/README.md's
#                  apt-get line, then svite --version and a tiny svite train in the chroot
#
#   bash deploy/check-launchers.sh [PART...]      (no PART, or "all": every part)
#
# As root on Debian 12. SVITE names the release binary (default .build/release/svite, else
# /tmp/svite-bin/svite); systemd and k8s need none. First, what the chosen parts need and
# this machine lacks is installed at once: Debian packages (one apt-get update, none of their
# services started) and kubernetes-validate from PyPI, in a virtual environment in
# /var/cache/svite-check-launchers unless python3 has it. Then each part runs under a time
# limit, in its own temp directory and namespaces, and removes the processes, mounts and
# namespaces it started (CHECK_KEEP=1 keeps its directory). The last lines give one line per
# part with its time, and the exit status is 0 only if every part passed.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
CHECK_PYTHON=${CHECK_PYTHON:-python3}   # (the driver sets it: a python3 with kubernetes-validate)
repo=$(dirname "$here")
all_parts=(slurm slurm-requeue systemd systemd-run k8s k8s-run image)
declare -A limit=([slurm]=180 [slurm-requeue]=300 [systemd]=60 [systemd-run]=180 [k8s]=60 [k8s-run]=180 [image]=600)   # seconds
# The tiny run: a few steps of the default config on a slice of Fashion-MNIST.
tiny=(--plain --set training.epochs=0 --set training.max_steps=6 --set data.train_limit=512
      --set data.test_limit=200 --set training.batch_size=64 --precision fp32)

say() { echo "check-launchers: $*"; }
die() { echo "check-launchers: FAILED: $*" >&2; exit 1; }
show_logs() { echo "--- coordinator"; tail -n 40 "$tmp/coordinator.log" 2>/dev/null; echo "--- worker"; tail -n 20 "$tmp/worker.log" 2>/dev/null || true; }

# run_processes WHAT EXPECTED: runs $tmp/runner.sh in namespaces of its own (--kill-child:
# nothing of it outlives the runner; its mounts go with the namespace), then checks that it
# served Prometheus metrics on 9464 and that its processes' exit statuses ($tmp/exits) are
# EXPECTED.
run_processes() {
    local status=0
    unshare --mount --net --pid --fork --kill-child --mount-proc bash "$tmp/runner.sh" || status=$?
    [ "$status" -eq 0 ] || { show_logs; die "the $1' runner failed ($status)"; }
    grep -q '^svite_info' "$tmp/metrics.txt" 2>/dev/null || { show_logs; die "no Prometheus metrics on the coordinator's port 9464"; }
    [ "$(cat "$tmp/exits")" = "$2" ] || { show_logs; die "exit statuses: $(cat "$tmp/exits") (expected: $2)"; }
}

# --- helpers for the parts ---------------------------------------------------------------

missing_debs() {   # the Debian packages of these that are not installed, each once
    local p
    local -A seen=()
    for p in "$@"; do
        [ -z "${seen[$p]:-}" ] || continue
        seen[$p]=1
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
    done
}
need_debs() {   # installs the missing ones: apt-get update first, and none of their services started
    local missing policy=/usr/sbin/policy-rc.d status=0
    mapfile -t missing < <(missing_debs "$@")
    [ ${#missing[@]} -eq 0 ] && return 0
    say "installing ${missing[*]}"
    if [ ! -e "$policy" ]; then   # (munge's and slurm's packages would start daemons)
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy"
    else
        policy=""
    fi
    { timeout 600 apt-get update -qq \
        && DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    } || status=$?
    [ -z "$policy" ] || rm -f "$policy"
    [ "$status" -eq 0 ] || die "apt-get could not install ${missing[*]}"
}
runtime_debs() {   # what svite runs with (deploy/README.md's apt-get line) and its data set
    local line
    line=$(grep -m1 '^apt-get install lib' "$repo/deploy/README.md") || die "deploy/README.md has no apt-get install line"
    echo "${line#apt-get install } dataset-fashion-mnist"
}
# kubernetes-validate (PyPI) and PyYAML, for the k8s parts: the python3 that has them, or a
# virtual environment made for them in /var/cache (Debian's python3 takes no pip installs).
venv=/var/cache/svite-check-launchers/venv
need_kubernetes_validate() {
    local py
    for py in python3 "$venv/bin/python3"; do
        if "$py" -c 'import kubernetes_validate, yaml' 2>/dev/null; then command -v "$py"; return 0; fi
    done
    say "installing kubernetes-validate (PyPI) in $venv" >&2
    if ! python3 -m venv --clear "$venv" >/dev/null 2>&1; then
        need_debs python3-venv >&2
        python3 -m venv --clear "$venv" >&2 || die "python3 -m venv $venv"
    fi
    timeout 600 "$venv/bin/python3" -m pip install --quiet --disable-pip-version-check kubernetes-validate==1.37.0 >&2 \
        || die "pip could not install kubernetes-validate"
    echo "$venv/bin/python3"
}

svite_binary() {
    local s=${SVITE:-}
    if [ -z "$s" ]; then
        for s in "$repo/.build/release/svite" /tmp/svite-bin/svite ""; do [ -x "$s" ] && break; done
    fi
    if [ -z "$s" ] || [ ! -x "$s" ]; then
        die "no svite binary: set SVITE (a release build: swift build -c release --static-swift-stdlib)"
    fi
    readlink -f "$s"
}

free_port() {   # a TCP port nothing listens on now
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for() {    # wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND every half second
    local seconds=$1 what=$2; shift 2
    local deadline=$((SECONDS + seconds))
    until "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || die "$what: not within $seconds s"
        sleep 0.5
    done
}

# Cleanups run in reverse order when the part ends, however it ends (a time limit too).
cleanups=()
on_exit() { local i; for ((i = ${#cleanups[@]} - 1; i >= 0; i--)); do eval "${cleanups[i]}" || true; done; }
stop_pidfile() {   # ends the daemon whose pid file this is (one this part started)
    local f=$1 pid
    [ -s "$f" ] || return 0
    pid=$(cat "$f")
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
}

# --- slurm -------------------------------------------------------------------------------

slurm_up() {   # a cluster in $tmp: munged, slurmctld, slurmd for nodes HOST (2 CPUs) and localhost (1)
    local host ctld_port node_ports
    host=$(hostname -s)
    getent hosts "$host" >/dev/null || die "this machine's name $host does not resolve"
    mkdir -p "$tmp/munge" "$tmp/state" "$tmp/spool" "$tmp/job"
    chmod 755 "$tmp" "$tmp/munge"
    head -c 1024 /dev/urandom >"$tmp/munge/munge.key" && chmod 600 "$tmp/munge/munge.key"
    cleanups+=("kill_ours" "stop_pidfile '$tmp/munge/munged.pid'")
    munged -f --socket="$tmp/munge/socket" --key-file="$tmp/munge/munge.key" --pid-file="$tmp/munge/munged.pid" \
        --log-file="$tmp/munge/munged.log" --seed-file="$tmp/munge/seed" || die "munged did not start"
    ctld_port=$(free_port) node_ports=("$(free_port)" "$(free_port)")
    # Two nodes on 127.0.0.1 (config_overrides: each claims the CPUs written here), so
    # the steps' placement across nodes is exercised; both names resolve to this machine.
    cat >"$tmp/slurm.conf" <<EOF
ClusterName=svitecheck
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
AuthType=auth/munge
AuthInfo=socket=$tmp/munge/socket
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$tmp/state
SlurmdSpoolDir=$tmp/spool/%n
SlurmctldPidFile=$tmp/slurmctld.pid
SlurmdPidFile=$tmp/slurmd-%n.pid
SlurmctldLogFile=$tmp/slurmctld.log
SlurmdLogFile=$tmp/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
NodeName=$host NodeHostname=$host NodeAddr=127.0.0.1 Port=${node_ports[0]} CPUs=2 State=UNKNOWN
NodeName=localhost NodeHostname=localhost NodeAddr=127.0.0.1 Port=${node_ports[1]} CPUs=1 State=UNKNOWN
PartitionName=check Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    export SLURM_CONF=$tmp/slurm.conf
    cleanups+=("stop_pidfile '$tmp/slurmctld.pid'" "stop_pidfile '$tmp/slurmd-$host.pid'" "stop_pidfile '$tmp/slurmd-localhost.pid'")
    cleanups+=("scancel --quiet --full --signal=KILL --partition=check 2>/dev/null")
    slurmctld -i || die "slurmctld did not start (see $tmp/slurmctld.log)"
    slurmd -N "$host" || die "slurmd did not start"
    slurmd -N localhost || die "slurmd did not start"
    wait_for 30 "both Slurm nodes idle" nodes_idle 2
}

processes_with() {   # pids of the processes whose environment holds NAME=VALUE
    { grep -lsz "^$1\$" /proc/[0-9]*/environ 2>/dev/null || true; } | cut -d/ -f3
}
kill_ours() {   # whatever this part's cluster started and left (its environment names our slurm.conf)
    local pid
    processes_with "SLURM_CONF=$tmp/slurm.conf" | while read -r pid; do
        [ "$pid" = $$ ] || kill -KILL "$pid" 2>/dev/null || true
    done
}
nodes_idle() { [ "$(sinfo --noheader --Node --states=idle --format=%N 2>/dev/null | wc -l)" = "$1" ]; }
job_state() { scontrol show job "$1" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p'; }
job_in() { local state; state=$(job_state "$1"); shift; [[ " $* " == *" $state "* ]]; }
no_job_processes() { [ -z "$(processes_with "SLURM_JOB_ID=$1")" ]; }
worker_joined() { grep -qs '"event":"joined"' "$1/metrics.jsonl"; }
check_job_ended() {   # check_job_ended ID RUN_DIR OUTPUT
    local id=$1 run=$2 out=$3 state
    state=$(job_state "$id")
    [ "$state" = COMPLETED ] || { cat "$out"; die "job $id ended $state, not COMPLETED"; }
    scontrol show job "$id" | grep -q "ExitCode=0:0" || { cat "$out"; die "job $id exited non-zero"; }
    compgen -G "$run/checkpoints/step-*.safetensors" >/dev/null || { cat "$out"; die "no checkpoint in $run"; }
    wait_for 20 "the processes of job $id to end" no_job_processes "$id"
}
submit() {   # submit RUN_DIR [sbatch options...] -- [train.sbatch arguments...]
    local run=$1; shift
    local opts=()
    while [ "$1" != -- ]; do opts+=("$1"); shift; done
    shift
    SVITE=$svite SVITE_RUN_DIR=$run SVITE_PORT=$(free_port) SVITE_STATUS_PORT=$(free_port) SVITE_METRICS_PORT=$(free_port) \
        sbatch --parsable --chdir="$tmp/job" --output="$tmp/job/%j.out" --ntasks=3 --cpus-per-task=1 "${opts[@]}" \
        "$here/slurm/train.sbatch" "$@"
}

part_slurm() {
    svite=$(svite_binary)
    slurm_up
    local run=$tmp/job/run id out
    id=$(submit "$run" --wait -- "${tiny[@]}") || true
    id=${id:-$(squeue --noheader --format=%i | head -n 1)}
    out=$tmp/job/$id.out
    check_job_ended "$id" "$run" "$out"
    grep -q "^done: 6 steps" "$out" || { cat "$out"; die "the run did not end with its summary"; }
    say "slurm: job $id COMPLETED, $(basename "$(compgen -G "$run/checkpoints/step-*.safetensors" | tail -n 1)") written, no process left"
    # The same job again: the run is over, so it must end at once and successfully.
    id=$(submit "$run" --wait -- "${tiny[@]}") || true
    out=$tmp/job/$id.out
    check_job_ended "$id" "$run" "$out"
    grep -q "already finished" "$out" || { cat "$out"; die "a finished run submitted again did not say so"; }
    say "slurm: the finished run submitted again: job $id COMPLETED at once"
}

joins() { local n; n=$(grep -cs '"event":"joined"' "$1/metrics.jsonl"); echo "${n:-0}"; }
joined_more() { [ "$(joins "$1")" -gt "$2" ]; }
part_slurm_requeue() {
    svite=$(svite_binary)
    slurm_up
    local run=$tmp/job/run id out steps=40 n
    local args=("${tiny[@]}" --set "training.max_steps=$steps")
    id=$(submit "$run" -- "${args[@]}")
    out=$tmp/job/$id.out
    # Stopped twice: SIGTERM to the batch script (as --signal=B:TERM@120 and a preemption
    # send it), then to the job's steps only (scancel --signal=TERM): each time the
    # coordinator checkpoints and exits 75, and the script requeues the job.
    n=0
    for how in "--batch --signal=TERM" "--signal=TERM"; do
        wait_for 60 "a worker to join job $id" joined_more "$run" "$n"
        # shellcheck disable=SC2086 # the options
        scancel $how "$id"
        wait_for 60 "job $id to be requeued (scancel $how)" job_in "$id" PENDING
        n=$(joins "$run")
        [ "$(grep -c "^stopped at step" "$out")" = "$(grep -c "requeueing" "$out")" ] || { cat "$out"; die "the script did not requeue after scancel $how"; }
        say "slurm-requeue: scancel $how: $(grep '^stopped at step' "$out" | tail -n 1), job requeued"
        # A requeued job waits two minutes (BeginTime); start it now, once the last attempt
        # has left both nodes and its credential's revocation lies in the past (a new
        # credential of the same second would count as revoked).
        wait_for 30 "the processes of job $id to end" no_job_processes "$id"
        wait_for 30 "both Slurm nodes idle" nodes_idle 2
        sleep 2
        scontrol update JobId="$id" StartTime=now
    done
    [ "$(grep -c "requeueing" "$out")" = 2 ] || { cat "$out"; die "job $id was not requeued twice"; }
    compgen -G "$run/checkpoints/step-*.safetensors" >/dev/null || { cat "$out"; die "no checkpoint after the stops"; }
    wait_for 120 "the requeued job $id to finish" job_in "$id" COMPLETED FAILED CANCELLED TIMEOUT NODE_FAIL
    check_job_ended "$id" "$run" "$out"
    [ "$(grep -c "\[Training\] resuming at step" "$out")" = 2 ] || { cat "$out"; die "the requeued job did not resume twice"; }
    grep -q "^done: $steps steps" "$out" || { cat "$out"; die "the resumed run did not end"; }
    say "slurm-requeue: resumed twice and COMPLETED ($(grep -m1 "^done: " "$out"))"
    # A plain scancel cancels the job for good: no requeue.
    id=$(submit "$tmp/job/cancelled" -- "${args[@]}")
    out=$tmp/job/$id.out
    wait_for 60 "a worker to join job $id" worker_joined "$tmp/job/cancelled"
    scancel "$id"
    wait_for 60 "job $id to end" job_in "$id" CANCELLED COMPLETED FAILED PENDING
    wait_for 20 "the processes of job $id to end" no_job_processes "$id"
    [ "$(job_state "$id")" = CANCELLED ] || { cat "$out"; die "a cancelled job ended $(job_state "$id"), not CANCELLED"; }
    ! grep -q "requeueing" "$out" || { cat "$out"; die "a cancelled job was requeued"; }
    say "slurm-requeue: a plain scancel: job $id CANCELLED, not requeued"
}

# --- systemd -----------------------------------------------------------------------------

part_systemd() {
    local root=$tmp/root out
    # A root holding what verify looks at: systemd's own units, /bin/sh, the binary's path,
    # the units and drop-ins as deploy/README.md installs them, the environment files.
    mkdir -p "$root/usr/lib/systemd" "$root/usr/bin" "$root/usr/local/bin" "$root/etc/systemd/system" "$root/etc/svite"
    cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"
    ln -s usr/lib "$root/lib" && ln -s usr/bin "$root/bin"
    cp /bin/dash "$root/usr/bin/sh"
    printf '#!/bin/sh\n' >"$root/usr/local/bin/svite" && chmod 755 "$root/usr/local/bin/svite"
    cp -r "$here"/systemd/*.service "$here"/systemd/*.service.d "$root/etc/systemd/system/"
    cp "$here/systemd/coordinator.env.example" "$root/etc/svite/coordinator.env"
    cp "$here/systemd/worker.env.example" "$root/etc/svite/worker.env"
    out=$(systemd-analyze verify --root="$root" svite-coordinator.service svite-worker@0.service 2>&1) \
        || die "systemd-analyze verify: $out"
    [ -z "$out" ] || die "systemd-analyze verify complains: $out"
    # The CURVE drop-ins are read (verify warns about unknown keys in them as well): a
    # misspelt one shows up.
    printf '[Service]\nLoadCredentialX=x:/x\n' >"$root/etc/systemd/system/svite-worker@.service.d/zz-probe.conf"
    out=$(systemd-analyze verify --root="$root" svite-worker@0.service 2>&1) || true
    grep -q LoadCredentialX <<<"$out" || die "systemd-analyze verify did not read the drop-in directory"
    # One secret per role: each role's key only in its own drop-in, none in the shared files.
    grep -q "SVITE_SECRET_KEY=%d/coordinator.key_secret" "$here/systemd/svite-coordinator.service.d/curve.conf" \
        || die "the coordinator's drop-in must name its secret key in \$CREDENTIALS_DIRECTORY"
    grep -q "SVITE_SECRET_KEY=%d/worker.key_secret" "$here/systemd/svite-worker@.service.d/curve.conf" \
        || die "the workers' drop-in must name their secret key in \$CREDENTIALS_DIRECTORY"
    if grep -q "^[^#]*SVITE_SECRET_KEY" "$here"/systemd/*.env.example "$here"/systemd/*.service; then
        die "an environment file or unit sets SVITE_SECRET_KEY outside a role's drop-in"
    fi
    say "systemd: systemd-analyze verify passes svite-coordinator.service and svite-worker@0.service with the CURVE drop-ins"
}

# systemd-run: the units' services reproduced without systemd as PID 1: deploy/README.md's
# systemd commands (but systemctl) run in a chroot of this machine with /usr and /etc as
# overlays, then each unit's ExecStart with its environment (unit, CURVE drop-in,
# environment file), its credentials laid out as systemd does when it cannot chown them
# (root 0400 with an ACL for the service's user, under $CREDENTIALS_DIRECTORY), run as a
# dynamic user (a uid of 61184-65519 and no other group), on its own network.
part_systemd_run() {
    svite=$(svite_binary)
    local root=$tmp/root home=$tmp/root/root host
    host=$(hostname)
    mkdir -p "$tmp/usr.up" "$tmp/usr.work" "$tmp/etc.up" "$tmp/etc.work" "$root"/{usr,etc,dev,proc,tmp,run,var/lib} "$home/.build/release" "$home/deploy"
    ln -s usr/bin "$root/bin" && ln -s usr/lib "$root/lib" && ln -s usr/lib64 "$root/lib64" && ln -s usr/sbin "$root/sbin"
    chmod 1777 "$root/tmp"
    # The keys as deploy/README.md's CURVE section makes them, this machine being both the
    # head node and a worker (the scp lines become cp).
    (cd "$home" && "$svite" keygen coordinator --out keys >/dev/null && mkdir -p authorized \
        && "$svite" keygen "$host" --out keys >/dev/null && cp keys/"$host".key authorized/) || die "svite keygen"
    # deploy/README.md's systemd blocks, as written (systemctl aside).
    awk '/^## systemd/ {s = 1} /^## Kubernetes/ {s = 0} s && /^```sh/ {b = 1; next} s && /^```/ {b = 0} s && b' \
        "$repo/deploy/README.md" | sed -e 's/ *&& systemctl .*//' -e '/^systemctl /d' >"$tmp/readme.sh"
    grep -q "service.d" "$tmp/readme.sh" || die "deploy/README.md's systemd section installs no CURVE drop-ins"
    sed -i '1i cd /root' "$tmp/readme.sh" && cp "$tmp/readme.sh" "$home/readme.sh"
    cat >"$tmp/units.py" <<'PY'
import glob, re, shlex, sys
root, host, tiny = sys.argv[1], sys.argv[2], sys.argv[3].split()
def unit(name, template, instance, uid):
    lines = []
    for f in [f"{root}/etc/systemd/system/{template}"] + sorted(glob.glob(f"{root}/etc/systemd/system/{template}.d/*.conf")):
        section = None
        for line in open(f):
            line = line.strip()
            if line.startswith("["): section = line
            elif section == "[Service]" and "=" in line and not line.startswith("#"):
                lines.append(line.split("=", 1))
    creds = f"/run/credentials/{name}"
    def spec(s):
        return re.sub(r"%(.)", lambda m: {"d": creds, "H": host, "i": instance, "%": "%"}[m.group(1)], s)
    env, files = {}, []
    for k, v in lines:
        if k == "Environment":
            env.update(a.split("=", 1) for a in shlex.split(spec(v)))
        elif k == "EnvironmentFile":
            files.append(spec(v))
    for f in files:
        for line in open(root + f):
            line = line.strip()
            if line and not line.startswith("#"):
                k, v = line.split("=", 1); env[k] = v
    get = lambda k: [spec(v) for key, v in lines if key == k]
    argv = [re.sub(r"\$\{(\w+)\}", lambda m: env.get(m.group(1), ""), a) for a in shlex.split(get("ExecStart")[0])]
    env.update({"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/", "USER": name.split(".")[0]})
    if get("LoadCredential"):
        env["CREDENTIALS_DIRECTORY"] = creds
        print(f"mkdir -p {root}{creds} && chmod 0500 {root}{creds} && setfacl -m u:{uid}:rx {root}{creds}")
        for c in get("LoadCredential"):
            cid, path = c.split(":", 1)
            print(f"cp {root}{path} {root}{creds}/{cid} && chmod 0400 {root}{creds}/{cid} && setfacl -m u:{uid}:r {root}{creds}/{cid}")
    for d in get("StateDirectory"):
        print(f"mkdir -p {root}/var/lib/{d} && chown {uid}:{uid} {root}/var/lib/{d}")
    cwd = (get("WorkingDirectory") or ["/"])[0]
    if name.startswith("svite-coordinator"):
        env["SVITE_WORKERS"] = "1"   # one worker here, not the example's four
        argv += tiny
    cmd = ["chroot", root, "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs", "--",
           "env", "-i", "-C", cwd] + [f"{k}={v}" for k, v in env.items()]
    role = name.split(".")[0].split("@")[0]
    # ROLE [NAME=VALUE...]: the unit's process, with these variables changed
    print(f"{role}() {{ exec {' '.join(shlex.quote(a) for a in cmd)} \"$@\" {' '.join(shlex.quote(a) for a in argv)}; }}")
    # What systemd does when the process exits: the unit's Restart= and exit status lists.
    words = lambda k: " ".join(w for v in get(k) for w in v.split())
    print(f"{role.replace('-', '_')}_policy=({shlex.quote(words('Restart') or 'no')} "
          f"{shlex.quote('0 ' + words('SuccessExitStatus'))} {shlex.quote(words('RestartPreventExitStatus'))} "
          f"{shlex.quote(words('RestartForceExitStatus'))})")
unit("svite-coordinator.service", "svite-coordinator.service", "", 61184)
unit("svite-worker@0.service", "svite-worker@.service", "0", 61185)
PY
    cat >"$tmp/runner.sh" <<EOF
set -euo pipefail
ip link set lo up
mount -t overlay overlay -o lowerdir=/usr,upperdir=$tmp/usr.up,workdir=$tmp/usr.work $root/usr
mount -t overlay overlay -o lowerdir=/etc,upperdir=$tmp/etc.up,workdir=$tmp/etc.work $root/etc
mount --rbind /dev $root/dev && mount --rbind /proc $root/proc
touch $home/.build/release/svite && mount --bind $svite $home/.build/release/svite
mount --bind -o ro $repo/deploy $home/deploy
printf '127.0.0.1 localhost $host\n127.0.0.1 coordinator.example.internal\n' >$root/etc/hosts
chroot $root sh -e /root/readme.sh >$tmp/readme.log 2>&1 || { cat $tmp/readme.log; exit 1; }
python3 $tmp/units.py $root $host "${tiny[*]} --set training.max_steps=40" >$tmp/units.sh
source $tmp/units.sh
declare -p svite_coordinator_policy svite_worker_policy >$tmp/policy.sh
runs=$root/var/lib/svite/runs/fmnist-tiny
finish() {   # finish PID: its exit status in \$finished, or "hung" after a minute
    for _ in \$(seq 240); do kill -0 "\$1" 2>/dev/null || break; sleep 0.25; done
    if kill -0 "\$1" 2>/dev/null; then kill -KILL "\$1"; finished=hung; else wait "\$1" && finished=0 || finished=\$?; fi
}
# Boot order: a worker host up before the coordinator's; the worker says what to check.
svite-worker >>$tmp/worker.log 2>&1 &
w=\$!
for _ in \$(seq 80); do grep -qs "no coordinator answers" $tmp/worker.log && break; sleep 0.25; done
svite-coordinator >>$tmp/coordinator.log 2>&1 &
c=\$!
for _ in \$(seq 120); do curl -sf http://127.0.0.1:9464/metrics >$tmp/metrics.txt && break; kill -0 \$c 2>/dev/null || break; sleep 0.5; done
# systemctl stop svite-coordinator mid-run (SIGTERM): both exit 75.
for _ in \$(seq 240); do grep -qs '"event":"joined"' \$runs/metrics.jsonl && break; sleep 0.25; done
kill -TERM \$c 2>/dev/null || true
finish \$c; echo -n "stopped: coordinator \$finished " >$tmp/exits
finish \$w; echo "worker \$finished" >>$tmp/exits
# systemd starts the worker again (Restart=); systemctl start svite-coordinator: to the end.
svite-worker >>$tmp/worker.log 2>&1 &
w=\$!
svite-coordinator >>$tmp/coordinator.log 2>&1 &
c=\$!
finish \$c; echo -n "resumed: coordinator \$finished " >>$tmp/exits
finish \$w; echo "worker \$finished" >>$tmp/exits
# Started again (a reboot): the run is over.
(svite-coordinator) >>$tmp/coordinator.log 2>&1 && s=0 || s=\$?
echo "again: coordinator \$s" >>$tmp/exits
# A malformed endpoint in worker.env (no port).
(svite-worker SVITE_COORDINATOR=coordinator.example.internal) >$tmp/malformed.log 2>&1 && s=0 || s=\$?
echo "malformed: worker \$s" >>$tmp/exits
EOF
    run_processes "services" $'stopped: coordinator 75 worker 75\nresumed: coordinator 0 worker 0\nagain: coordinator 0\nmalformed: worker 64'
    for line in "CURVE on" "^Prometheus metrics on .* (every interface)" "^stopped at step" "resuming at step" "^done: 40 steps" "already finished"; do
        grep -q "$line" "$tmp/coordinator.log" || { show_logs; die "the coordinator's log lacks '$line'"; }
    done
    grep -q "no coordinator answers at tcp://coordinator.example.internal:5555 after 5 s" "$tmp/worker.log" \
        || { show_logs; die "a worker waiting for its coordinator did not say what to check"; }
    grep -q "worker $host-0 done" "$tmp/worker.log" || { show_logs; die "the worker was not named $host-0"; }
    grep -q "not a ZeroMQ endpoint" "$tmp/malformed.log" || { cat "$tmp/malformed.log"; die "a malformed endpoint was refused without saying why"; }
    compgen -G "$tmp/root/var/lib/svite/runs/fmnist-tiny/checkpoints/step-*.safetensors" >/dev/null \
        || die "no checkpoint in /var/lib/svite/runs/fmnist-tiny"
    # What systemd makes of these exits, by the units' Restart=, SuccessExitStatus=,
    # RestartPreventExitStatus= and RestartForceExitStatus= (systemd.service(5)).
    # shellcheck disable=SC1091 # (written by the runner)
    source "$tmp/policy.sh"
    local want
    verdict() {   # verdict ROLE_policy STATUS [stop]: the unit after its process exited with STATUS
        local -n policy=$1
        local clean=no restart=no
        [[ " ${policy[1]} " == *" $2 "* ]] && clean=yes
        if [ -z "${3:-}" ]; then   # (after systemctl stop, no restart)
            case ${policy[0]} in always) restart=yes ;; on-failure) [ $clean = yes ] || restart=yes ;; esac
            [[ " ${policy[2]} " != *" $2 "* ]] || restart=no
            [[ " ${policy[3]} " != *" $2 "* ]] || restart=yes
        fi
        if [ $restart = yes ]; then echo restarted; elif [ $clean = yes ]; then echo inactive; else echo failed; fi
    }
    for want in "svite_coordinator_policy 75 stop inactive" "svite_coordinator_policy 75 - inactive" \
                "svite_coordinator_policy 0 - inactive" "svite_coordinator_policy 1 - restarted" \
                "svite_coordinator_policy 64 - failed" "svite_coordinator_policy 78 - failed" "svite_worker_policy 75 - restarted" \
                "svite_worker_policy 0 - inactive" "svite_worker_policy 75 stop inactive" "svite_worker_policy 1 - restarted" \
                "svite_worker_policy 64 - failed"; do
        read -r role code how state <<<"$want"
        how=${how#-}
        [ "$(verdict "$role" "$code" "$how")" = "$state" ] \
            || die "${role%_policy}: exit $code${how:+ on systemctl $how}: systemd would leave it $(verdict "$role" "$code" "$how"), not $state"
    done
    say "systemd-run: README's commands, then both units' ExecStart as dynamic users with their credentials (root 0400 + ACL)"
    say "systemd-run: a worker up first says what to check; CURVE run, metrics on :9464 (every interface)"
    say "systemd-run: systemctl stop mid-run: coordinator 75 (SuccessExitStatus: inactive), worker 75 (RestartForceExitStatus: restarted; after systemctl stop: inactive); both resume to the end (0, 0)"
    say "systemd-run: the finished run started again exits 0 (inactive); a malformed endpoint exits 64 (RestartPreventExitStatus: failed, not restarted)"
}

# --- k8s ---------------------------------------------------------------------------------

part_k8s() {
    local v out
    for v in 1.26.0 1.37.0; do   # the oldest Kubernetes with podFailurePolicy, the newest schema
        out=$("$CHECK_PYTHON" -m kubernetes_validate --strict --kubernetes-version "$v" "$here"/k8s/*.yaml 2>&1) \
            || die "the manifests do not validate against Kubernetes $v: $out"
        say "k8s: $(grep -c passed <<<"$out") resources valid against Kubernetes $v (strict: no unknown fields)"
    done
    mkdir "$tmp/shell"
    "$CHECK_PYTHON" - "$here/k8s" "$repo/Dockerfile" "$tmp/shell" <<'PY'
import glob, re, sys, yaml
k8s, dockerfile, script_out = sys.argv[1:]
docs = [d for f in sorted(glob.glob(k8s + "/*.yaml")) for d in yaml.safe_load_all(open(f)) if d]
def one(kind, name):
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"no {kind} {name}"
    return found[0]
def fail(msg):
    sys.exit(f"check-launchers: FAILED: k8s: {msg}")
def env(container):
    return {e["name"]: e for e in container.get("env", [])}
service, pvc = one("Service", "svite-coordinator"), one("PersistentVolumeClaim", "svite-runs")
coordinator, workers = one("Job", "svite-coordinator"), one("Job", "svite-workers")
text = open(dockerfile).read().split("FROM debian", 1)[1]
uid = int(re.search(r"useradd [^\n]*--uid (\d+)", text).group(1))
gid = int(re.search(r"groupadd [^\n]*--gid (\d+)", text).group(1))
exposed = {int(p) for p in re.search(r"^EXPOSE (.*)$", text, re.M).group(1).split()}
if service["spec"].get("clusterIP") != "None":
    fail("the coordinator's Service must be headless (clusterIP: None)")
ports = {p["port"] for p in service["spec"]["ports"]}
for job in (coordinator, workers):
    spec, name = job["spec"]["template"]["spec"], job["metadata"]["name"]
    sc = spec.get("securityContext", {})
    if (sc.get("runAsUser"), sc.get("runAsGroup"), sc.get("fsGroup"), sc.get("runAsNonRoot")) != (uid, gid, gid, True):
        fail(f"{name}: securityContext must name the image's user {uid}:{gid} (runAsUser, runAsGroup, fsGroup, runAsNonRoot)")
    policy = spec.get("restartPolicy")
    if policy not in ("Never", "OnFailure") or (policy == "Never") != ("podFailurePolicy" in job["spec"]):
        fail(f"{name}: restartPolicy OnFailure, or Never with a podFailurePolicy")
c_spec = coordinator["spec"]["template"]["spec"]
if c_spec.get("subdomain") != service["metadata"]["name"] or not c_spec.get("hostname"):
    fail("the coordinator's pod needs a hostname and the Service's name as subdomain")
labels = coordinator["spec"]["template"]["metadata"]["labels"]
if any(labels.get(k) != v for k, v in service["spec"]["selector"].items()):
    fail("the Service does not select the coordinator's pod")
if not any(v.get("persistentVolumeClaim", {}).get("claimName") == pvc["metadata"]["name"] for v in c_spec["volumes"]):
    fail("the coordinator does not mount the PersistentVolumeClaim")
c = c_spec["containers"][0]
metrics = int(env(c)["SVITE_METRICS"]["value"].rsplit(":", 1)[1])
bind_port = int(env(c)["SVITE_BIND"]["value"].rsplit(":", 1)[1])
status_port = int(env(c)["SVITE_STATUS"]["value"].rsplit(":", 1)[1])
container_ports = {p["containerPort"] for p in c["ports"]}
for p in (bind_port, status_port, metrics):
    if p not in ports or p not in container_ports or p not in exposed:
        fail(f"port {p} must be in the Service, the container's ports and the Dockerfile's EXPOSE")
w = workers["spec"]["template"]["spec"]["containers"][0]
for name, container in (("coordinator", c), ("workers", w)):
    threads = env(container).get("SVITE_THREADS", {}).get("valueFrom", {}).get("resourceFieldRef", {})
    if threads.get("resource") != "limits.cpu" or "--threads" in " ".join(container.get("command", []) + container.get("args", [])):
        fail(f"the {name} must get SVITE_THREADS from their CPU limit (and no --threads)")
# svite itself is the coordinator's process: it exits 75 on SIGTERM, which the pod failure
# policy's exit code rule needs to see (a shell in between could change it).
if c.get("command") != ["svite"] or c.get("args", [None])[0] != "coordinator":
    fail("the coordinator's container must run svite coordinator itself (command: [svite], args: [coordinator, ...])")
target = env(w)["SVITE_COORDINATOR"]["value"]
if target != f"tcp://{c_spec['hostname']}.{c_spec['subdomain']}:{bind_port}":
    fail(f"the workers connect to {target}, not to the coordinator's pod name and port")
# Shell commands (sh -c SCRIPT) are handed to shellcheck.
for job in (coordinator, workers):
    for container in job["spec"]["template"]["spec"]["containers"]:
        argv = container.get("command", []) + container.get("args", [])
        if argv[:2] in (["/bin/sh", "-c"], ["sh", "-c"]):
            open(f"{script_out}/{container['name']}.sh", "w").write(argv[2])
print(f"check-launchers: k8s: Job + PVC + headless Service, pod {c_spec['hostname']}.{c_spec['subdomain']}, "
      f"uid/gid/fsGroup {uid}/{gid}/{gid} as the Dockerfile's user, ports {sorted(ports)} served and exposed")
PY
    if compgen -G "$tmp/shell/*.sh" >/dev/null; then
        shellcheck --shell=sh "$tmp"/shell/*.sh || die "a container's shell command fails shellcheck"
    fi
}

# k8s-run: the pods' filesystems, users and network reproduced in namespaces.
part_k8s_run() {
    svite=$(svite_binary)
    mkdir -p "$tmp/bin" "$tmp/secrets-work"
    cp "$svite" "$tmp/bin/svite"
    # The keys exactly as deploy/README.md's Kubernetes section makes them (its svite
    # keygen line), packed into the Secrets its kubectl lines name.
    "$CHECK_PYTHON" - "$repo/deploy/README.md" "$tmp" "${tiny[@]}" <<'PY'
import json, math, os, re, shlex, subprocess, sys, yaml
readme, tmp, tiny = sys.argv[1], sys.argv[2], sys.argv[3:]
here = os.path.dirname(readme)
def fail(msg):
    sys.exit(f"check-launchers: FAILED: k8s-run: {msg}")
section = readme_text = open(readme).read().split("## Kubernetes", 1)[1]
block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
env = dict(os.environ, PATH=f"{tmp}/bin:" + os.environ["PATH"])
secrets = {}
for line in block.splitlines():
    if line.startswith("svite keygen"):
        subprocess.run(line, shell=True, check=True, cwd=f"{tmp}/secrets-work", env=env, stdout=subprocess.DEVNULL)
    elif line.startswith("kubectl create secret generic"):
        words = shlex.split(line)
        secrets[words[4]] = {os.path.basename(w.split("=", 1)[1]): open(f"{tmp}/secrets-work/" + w.split("=", 1)[1], "rb").read()
                             for w in words[5:] if w.startswith("--from-file=")}
if not secrets:
    fail("deploy/README.md's Kubernetes section makes no Secrets")
def cpu(q):
    return math.ceil(float(q[:-1]) / 1000 if q.endswith("m") else float(q))
pods = []
for name, f in (("coordinator", "coordinator.yaml"), ("worker", "workers.yaml")):
    job = [d for d in yaml.safe_load_all(open(f"{here}/k8s/{f}")) if d and d["kind"] == "Job"][0]
    spec = job["spec"]["template"]["spec"]
    c = spec["containers"][0]
    sc = spec["securityContext"]
    environment = {}
    for e in c.get("env", []):
        if "value" in e:
            environment[e["name"]] = e["value"]
        else:
            ref = e["valueFrom"]["resourceFieldRef"]["resource"]
            kind, res = ref.split(".")
            environment[e["name"]] = str(cpu(c["resources"][kind][res]))
    argv = c.get("command", ["svite"]) + c.get("args", [])
    argv = [re.sub(r"\$\((\w+)\)", lambda m: environment.get(m.group(1), m.group(0)), a) for a in argv]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = []
    for m in c.get("volumeMounts", []):
        v = volumes[m["name"]]
        if "secret" in v:
            mounts.append({"path": m["mountPath"], "secret": v["secret"]["secretName"],
                           "mode": v["secret"].get("defaultMode", 0o644)})
        else:
            mounts.append({"path": m["mountPath"], "volume": m["name"]})
    pods.append({"name": name, "hostname": spec.get("hostname", name), "subdomain": spec.get("subdomain"),
                 "uid": sc.get("runAsUser"), "gid": sc.get("runAsGroup"), "fsGroup": sc.get("fsGroup"),
                 "argv": argv, "env": environment, "mounts": mounts})
json.dump({"secrets": {k: {f: v.decode() for f, v in files.items()} for k, files in secrets.items()}, "pods": pods},
          open(f"{tmp}/pods.json", "w"), indent=1)
PY
    # The volumes as the kubelet lays them out: a Secret is a directory of ..data links with
    # files root:fsGroup, mode defaultMode | 0440 (no fsGroup: root:root, defaultMode); the
    # claim's directory is root:fsGroup with g+rwx and setgid.
    python3 - "$tmp" <<'PY'
import json, os, sys
tmp = sys.argv[1]
plan = json.load(open(f"{tmp}/pods.json"))
for pod in plan["pods"]:
    fs = pod["fsGroup"]
    for m in pod["mounts"]:
        src = f"{tmp}/volumes/{pod['name']}{m['path']}"
        if "secret" in m:
            ts = f"{src}/..2026_01_01_00_00_00.000000001"
            os.makedirs(ts)
            for f, text in plan["secrets"][m["secret"]].items():
                open(f"{ts}/{f}", "w").write(text)
                os.chown(f"{ts}/{f}", 0, fs if fs is not None else 0)
                os.chmod(f"{ts}/{f}", m["mode"] | (0o440 if fs is not None else 0))
                os.symlink(f"..data/{f}", f"{src}/{f}")
            os.symlink(os.path.basename(ts), f"{src}/..data")
            for d in (src, ts):
                os.chown(d, 0, fs if fs is not None else 0)
                os.chmod(d, 0o755 | (0o2000 if fs is not None else 0))
        else:
            os.makedirs(src)
            os.chown(src, 0, fs if fs is not None else 0)
            os.chmod(src, 0o755 | (0o2070 if fs is not None else 0))
        m["source"] = src
json.dump(plan, open(f"{tmp}/pods.json", "w"), indent=1)
PY
    # A runner inside new mount, network and PID namespaces: each pod a chroot of this
    # machine's /usr and /etc plus its volumes at their mount paths, the pods' names in
    # /etc/hosts, the manifests' ports on this namespace's own loopback.
    python3 - "$tmp" "$svite" "${tiny[@]}" >"$tmp/runner.sh" <<'PY'
import json, shlex, sys
tmp, svite, tiny = sys.argv[1], sys.argv[2], sys.argv[3:]
plan = json.load(open(f"{tmp}/pods.json"))
q = shlex.quote
print("set -euo pipefail\nip link set lo up")
hosts = "127.0.0.1 localhost\n" + "".join(
    f"127.0.0.1 {p['hostname']}.{p['subdomain']}\n" for p in plan["pods"] if p["subdomain"])
print(f"printf %s {q(hosts)} >{q(tmp)}/hosts")
for p in plan["pods"]:
    r = f"{tmp}/root-{p['name']}"
    print(f"mkdir -p {r}/usr {r}/etc {r}/dev {r}/proc {r}/tmp {r}/opt/svite/bin {r}/home/svite")
    print(f"ln -s usr/bin {r}/bin && ln -s usr/lib {r}/lib && ln -s usr/lib64 {r}/lib64 && ln -s usr/sbin {r}/sbin")
    for d in ("usr", "etc", "dev", "proc"):
        print(f"mount --rbind /{d} {r}/{d}")
    print(f"mount --bind {q(tmp)}/hosts {r}/etc/hosts")
    print(f"touch {r}/opt/svite/bin/svite && mount --bind {q(svite)} {r}/opt/svite/bin/svite")
    print(f"chmod 1777 {r}/tmp && chown {p['uid']}:{p['gid']} {r}/home/svite")
    for m in p["mounts"]:
        print(f"mkdir -p {r}{m['path']} && mount --bind {q(m['source'])} {r}{m['path']}")
    env = {"PATH": "/opt/svite/bin:/usr/local/bin:/usr/bin:/bin", "HOME": "/home/svite", "HOSTNAME": p["hostname"],
           **p["env"]}
    argv = p["argv"]
    env["SVITE_THREADS"] = "1"               # two cores here (the manifests' CPU limits: the k8s part)
    if p["name"] == "coordinator":
        env["SVITE_WORKERS"] = "1"           # one worker pod here, not the manifest's four
        argv = argv + tiny
    else:
        env["JOB_COMPLETION_INDEX"] = "0"
    groups = f"--groups={p['fsGroup']}" if p["fsGroup"] is not None else "--clear-groups"
    cmd = ["chroot", r, "setpriv", f"--reuid={p['uid']}", f"--regid={p['gid']}", groups, "--no-new-privs", "--", "env", "-i", "-C", "/home/svite"] + [f"{k}={v}" for k, v in env.items()] + argv
    # (exec: the pid started in the background is the container's process, which gets SIGTERM)
    print(f"{p['name']}() {{ exec {' '.join(q(a) for a in cmd)} \"$@\"; }}")
PY
    # What the Jobs do with the pods: one stopped mid-run (a drain: SIGTERM), its successor
    # resuming to the end, and one more after the end.
    cat >>"$tmp/runner.sh" <<EOF
runs=$tmp/volumes/coordinator/runs/k8s
finish() {   # finish PID: its exit status in \$finished, or "hung" after a minute
    for _ in \$(seq 240); do kill -0 "\$1" 2>/dev/null || break; sleep 0.25; done
    if kill -0 "\$1" 2>/dev/null; then kill -KILL "\$1"; finished=hung; else wait "\$1" && finished=0 || finished=\$?; fi
}
pods() {   # pods [SIGTERM]: a coordinator and a worker; their exit statuses
    coordinator --set training.max_steps=40 >>"$tmp/coordinator.log" 2>&1 &
    local c=\$! w
    # Before any worker: the coordinator serves its metrics on the manifest's port.
    for _ in \$(seq 120); do curl -sf http://127.0.0.1:9464/metrics >"$tmp/metrics.txt" && break; kill -0 \$c 2>/dev/null || break; sleep 0.5; done
    if ! kill -0 \$c 2>/dev/null; then finish \$c; echo "coordinator \$finished worker -" >>"$tmp/exits"; return; fi
    worker >>"$tmp/worker.log" 2>&1 &
    w=\$!
    if [ -n "\${1:-}" ]; then
        for _ in \$(seq 240); do grep -qs '"event":"joined"' "\$runs/metrics.jsonl" && break; sleep 0.25; done
        kill -TERM \$c 2>/dev/null || true
    fi
    finish \$c; echo -n "coordinator \$finished " >>"$tmp/exits"
    finish \$w; echo "worker \$finished" >>"$tmp/exits"
}
echo -n "stopped: " >"$tmp/exits"; pods SIGTERM
echo -n "resumed: " >>"$tmp/exits"; pods
find "\$runs" -printf '%p %s %T@\n' | sort >"$tmp/run-before"
(coordinator --set training.max_steps=40) >>"$tmp/coordinator.log" 2>&1 && s=0 || s=\$?
echo "finished: coordinator \$s" >>"$tmp/exits"
find "\$runs" -printf '%p %s %T@\n' | sort >"$tmp/run-after"
EOF
    bash -n "$tmp/runner.sh"
    run_processes "pods" $'stopped: coordinator 75 worker 75\nresumed: coordinator 0 worker 0\nfinished: coordinator 0'
    grep -q "CURVE on" "$tmp/coordinator.log" || { show_logs; die "the coordinator did not run with CURVE"; }
    for line in "^stopped at step" "resuming at step" "^done: 40 steps" "already finished" \
                "^Prometheus metrics on .* (every interface)" "^training .* 1 thread(s)"; do
        grep -q "$line" "$tmp/coordinator.log" || { show_logs; die "the coordinator's log lacks '$line'"; }
    done
    diff "$tmp/run-before" "$tmp/run-after" >&2 || die "a coordinator started on the finished run changed its directory"
    compgen -G "$tmp/volumes/coordinator/runs/k8s/checkpoints/step-*.safetensors" >/dev/null || die "no checkpoint on the volume"
    stat -c '%u:%g %a' "$tmp/volumes/coordinator/runs/k8s/config.yaml" | grep -q "^10001:10001 " \
        || die "the run directory's files do not belong to the pod's user and fsGroup"
    say "k8s-run: CURVE run as uid 10001 (Secrets root:10001 0440, volume root:10001 2775), metrics on :9464"
    say "k8s-run: SIGTERM mid-run: svite coordinator and worker exit 75 (the Jobs start new pods); the next pods resume to the end (0, 0)"
    say "k8s-run: a coordinator pod after the end exits 0 and writes nothing; SVITE_THREADS read, metrics on every interface"
    # The same keys without fsGroup (the old manifests) must be refused, as permission denied.
    chmod 0400 "$tmp"/volumes/coordinator/keys/..2026*/coordinator.key_secret
    chgrp 0 "$tmp"/volumes/coordinator/keys/..2026*/coordinator.key_secret
    local refused
    chmod 711 "$tmp"   # (the uid must reach the key: what it is refused is the key itself)
    refused=$(timeout 20 setpriv --reuid=10001 --regid=10001 --groups=10001 -- "$svite" coordinator --plain \
        --secret-key "$tmp/volumes/coordinator/keys/coordinator.key_secret" --authorized-keys "$tmp/volumes/coordinator/authorized" \
        --bind 'tcp://127.0.0.1:*' --status none --out "$tmp/volumes/coordinator/runs/refused" 2>&1) && die "an unreadable key was accepted"
    grep -q "coordinator.key_secret: cannot read the key file: permission denied: owned by uid 0, group 0, mode 400" <<<"$refused" \
        || die "an unreadable key was refused without saying why: $refused"
    [ ! -e "$tmp/volumes/coordinator/runs/refused" ] || die "a refused key left a run directory"
    say "k8s-run: root:root 0400 (no fsGroup) is refused: permission denied"
}

# --- image -------------------------------------------------------------------------------

part_image() {
    svite=$(svite_binary)
    local mirror line root=$tmp/bookworm
    # The mirror this machine's apt uses for bookworm.
    mirror=$(awk '/^URIs:/ {u = $2} /^Suites:.*bookworm( |$)/ {print u; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    [ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $3 == "bookworm" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    mirror=${mirror:-http://deb.debian.org/debian}
    line=$(grep -m1 '^apt-get install lib' "$repo/deploy/README.md") || die "deploy/README.md has no apt-get install line"
    say "image: debootstrap bookworm from $mirror, then: $line"
    # Everything that mounts runs in its own mount namespace: its mounts end with it, and
    # the rm -rf of the cleanup cannot reach through a bind mount.
    cat >"$tmp/image.sh" <<EOF
set -euo pipefail
debootstrap --variant=minbase bookworm "$root" "$mirror" >"$tmp/debootstrap.log" 2>&1 || { tail -n 20 "$tmp/debootstrap.log"; exit 1; }
mount -t proc proc "$root/proc"
cp /etc/resolv.conf "$root/etc/resolv.conf"
chroot "$root" apt-get update -qq
chroot "$root" env DEBIAN_FRONTEND=noninteractive sh -c "${line/apt-get install/apt-get install -y -qq --no-install-recommends}" >"$tmp/apt.log" 2>&1 || { tail -n 20 "$tmp/apt.log"; exit 1; }
install -m 755 "$svite" "$root/usr/local/bin/svite"
missing=\$(chroot "$root" ldd /usr/local/bin/svite | grep "not found" || true)
[ -z "\$missing" ] || { echo "libraries the README's line does not bring: \$missing"; exit 1; }
chroot "$root" svite --version
mkdir -p "$root/usr/share/datasets/fashion-mnist"
mount --bind -o ro /usr/share/datasets/fashion-mnist "$root/usr/share/datasets/fashion-mnist"
chroot --userspec=10001:10001 "$root" env HOME=/tmp svite train --workers 0 --out /tmp/run ${tiny[*]} >"$tmp/train.log" 2>&1 || { tail -n 20 "$tmp/train.log"; exit 1; }
grep -q "^done: 6 steps" "$tmp/train.log"
EOF
    unshare --mount --fork bash "$tmp/image.sh" || die "the image's run stage (see above)"
    say "image: svite runs in a bookworm minbase with only the README's packages: $(grep -m1 '^done:' "$tmp/train.log")"
}

# --- driver ------------------------------------------------------------------------------

run_part() {   # in a child process: one part, its temp directory, its cleanups
    local part=$1
    [ "$(id -u)" -eq 0 ] || die "run as root (it starts daemons, mounts and changes users)"
    tmp=$(mktemp -d "/tmp/svite-check-$part.XXXXXX")
    cleanups=("if [ -n \"\${CHECK_KEEP:-}\" ]; then say \"kept $tmp\"; else rm -rf --one-file-system '$tmp'; fi")
    trap on_exit EXIT
    trap 'exit 143' TERM INT
    "part_${part//-/_}"
}

if [ "${1:-}" = --part ]; then run_part "$2"; exit; fi

parts=()
for a in "$@"; do
    case "$a" in
        all) parts+=("${all_parts[@]}") ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) [[ " ${all_parts[*]} " == *" $a "* ]] || die "no part '$a' (parts: ${all_parts[*]})"; parts+=("$a") ;;
    esac
done
[ ${#parts[@]} -gt 0 ] || parts=("${all_parts[@]}")
[ "$(id -u)" -eq 0 ] || die "run as root (it installs packages, starts daemons, mounts and changes users)"

# What the parts need, installed first and at once (a fresh Debian 12: one apt-get update).
setup_start=$SECONDS
declare -A part_debs=([slurm]="slurmctld slurmd slurm-client munge" [slurm-requeue]="slurmctld slurmd slurm-client munge"
    [systemd]="systemd" [systemd-run]="acl iproute2 curl" [k8s]="shellcheck" [k8s-run]="iproute2 curl" [image]="debootstrap")
debs=(python3) needs_svite="" needs_python=""
for part in "${parts[@]}"; do
    read -ra more <<<"${part_debs[$part]}"
    debs+=("${more[@]}")
    case $part in slurm|slurm-requeue|systemd-run|k8s-run|image) needs_svite=1 ;; esac
    case $part in k8s|k8s-run) needs_python=1 ;; esac
done
if [ -n "$needs_svite" ]; then
    SVITE=$(svite_binary)
    read -ra more <<<"$(runtime_debs)"
    debs+=("${more[@]}")
fi
need_debs "${debs[@]}"
export SVITE CHECK_PYTHON=python3
[ -z "$needs_python" ] || CHECK_PYTHON=$(need_kubernetes_validate)
results=() passed=0 failed=0 interrupted=""
[ $((SECONDS - setup_start)) -lt 2 ] || results+=("setup: $((SECONDS - setup_start)) s (installs)")
for part in "${parts[@]}"; do
    start=$(date +%s.%N) status=0
    # (timeout runs the part in a process group of its own: a signal to this script is
    # passed on, so the part still cleans up)
    timeout --kill-after=20 "${limit[$part]}" bash "$0" --part "$part" &
    child=$!
    trap 'interrupted=1; kill -TERM "$child" 2>/dev/null || true' TERM INT
    while :; do
        status=0
        wait "$child" || status=$?
        if [ "$status" -gt 128 ] && kill -0 "$child" 2>/dev/null; then continue; fi
        break
    done
    trap - TERM INT
    took=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN {printf "%.1f", e - s}')
    case $status in
        0) results+=("passed  $part (${took} s)"); passed=$((passed + 1)) ;;
        124|137) results+=("FAILED  $part (${took} s): over its limit of ${limit[$part]} s"); failed=$((failed + 1)) ;;
        *) results+=("FAILED  $part (${took} s)"); failed=$((failed + 1)) ;;
    esac
    [ -z "$interrupted" ] || { results+=("stopped: interrupted"); break; }
done
printf 'check-launchers: %s\n' "${results[@]}"
echo "check-launchers: $passed passed, $failed failed (${SECONDS} s in all)"
[ "$failed" -eq 0 ] && [ -z "$interrupted" ]
