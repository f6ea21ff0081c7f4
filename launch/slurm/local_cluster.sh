#!/usr/bin/env bash
# A one-node Slurm cluster on this host, for trying Tessera's batch scripts against a real
# scheduler (the integration tests use it). Needs root and Debian's slurmctld, slurmd,
# slurm-client, slurm-wlm-basic-plugins and munge (launch/install_deps.sh installs them).
#
#   launch/slurm/local_cluster.sh start DIR [CPUS]   configure in DIR, start, wait until idle
#   launch/slurm/local_cluster.sh status DIR         daemons and node state
#   launch/slurm/local_cluster.sh stop DIR           cancel jobs, stop the daemons by pid
#
# Everything lives in DIR (an absolute path; keep it short, it holds munge's socket): the munge
# key and socket, slurm.conf, state and spool directories, logs and pid files. munged runs as
# the munge user, slurmctld and slurmd as root. The daemons listen on two free ports chosen at
# start, and the node is reached over 127.0.0.1, so no traffic leaves the host and several
# clusters (one per DIR) can run at once. CPUS (default: 8) is what the node offers to jobs,
# whatever the hardware has (SlurmdParameters=config_overrides), so small test jobs can share
# cores. Then point the clients at it:
#
#   export SLURM_CONF=DIR/slurm.conf
#   srun --mpi=pmix -n 2 build/trainer/tessera info
#   sbatch --nodes=1 --ntasks-per-node=2 --cpus-per-task=1 --gpus-per-node=0 \
#       launch/slurm/train.sbatch --config configs/vqvae_fmnist.yaml
set -euo pipefail

readonly WAIT_S=${TESSERA_SLURM_WAIT_S:-60}

die() {
  echo "local_cluster: $*" >&2
  exit 1
}

usage() {
  echo "usage: $0 start|status|stop DIR [CPUS]" >&2
  exit 2
}

[[ $# -ge 2 ]] || usage
action=$1
dir=$2
cpus=${3:-8}
[[ $dir == /* ]] || die "DIR must be an absolute path: $dir"
conf=$dir/slurm.conf
node=$(hostname -s)

# The pid in a daemon's pid file, if that process is still alive.
live_pid() {
  local file=$1 pid
  [[ -s $file ]] || return 1
  pid=$(<"$file")
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

# Polls `"$@"` every 0.2 s until it succeeds; fails after $WAIT_S seconds.
wait_until() {
  local deadline=$((SECONDS + WAIT_S))
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

free_ports() {
  python3 - <<'EOF'
import socket
socks = []
for _ in range(2):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

node_state() {
  SLURM_CONF=$conf sinfo --noheader --nodes="$node" --format=%T 2>/dev/null
}

node_idle() {
  [[ $(node_state) == idle ]]
}

pids_gone() {
  local pid
  for pid in "$@"; do
    ! kill -0 "$pid" 2>/dev/null || return 1
  done
}

# Pids of this cluster's slurmstepd processes (and of slurmd while it runs), found by the log file
# they hold open, then of all their descendants: the job scripts and tasks.
job_pids() {
  local fd pid roots=()
  while read -r fd; do
    pid=${fd#/proc/}
    roots+=("${pid%%/*}")
  done < <(find /proc/[0-9]*/fd -maxdepth 1 -lname "$dir/slurmd.log" 2>/dev/null)
  [[ ${#roots[@]} -gt 0 ]] || return 0
  ps -e -o pid=,ppid= | awk -v roots="${roots[*]}" '
    BEGIN { n = split(roots, r, " "); for (i = 1; i <= n; i++) mine[r[i]] = 1 }
    { parent[$1] = $2 }
    END {
      do {
        grew = 0
        for (p in parent) if (!(p in mine) && (parent[p] in mine)) { mine[p] = 1; grew = 1 }
      } while (grew)
      for (p in mine) print p
    }'
}

no_jobs() {
  [[ -z $(SLURM_CONF=$conf squeue --noheader --format=%i 2>/dev/null) ]]
}

write_conf() {
  local ctld_port=$1 slurmd_port=$2 mem_mb first_job_id
  mem_mb=$(awk '/^MemTotal:/ { print int($2 / 1024 / 2) }' /proc/meminfo)
  # Job ids must differ between clusters that run on this host at the same time: Open MPI names
  # a step's shared-memory segments (/dev/shm/vader_segment.HOST.JOBID...) after the PMIx
  # namespace slurm.pmix.JOB.STEP, so two clusters' job 1 would write into each other's.
  first_job_id=$((((RANDOM << 15) | RANDOM) % 60000000 + 1000))
  cat >"$conf" <<EOF
# Written by launch/slurm/local_cluster.sh: one node, this host, reached over loopback.
ClusterName=tessera-local
FirstJobId=$first_job_id
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket,cred_expire=10
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
# Job ids start at 1 in every new cluster: per-job scratch (PMIx's spmix_appdir_*) must not meet
# what an earlier cluster left in /tmp.
TmpFS=$dir/tmp
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=1
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/jobcomp.txt
# Finished jobs stay visible to scontrol for 10 minutes; a time limit is enforced after at most
# 10 s more; tasks get 10 s between SIGTERM and SIGKILL.
MinJobAge=600
OverTimeLimit=0
KillWait=10
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=local Nodes=$node Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
}

start() {
  [[ $(id -u) -eq 0 ]] || die "start needs root (slurmd and slurmctld run as root)"
  local prog
  for prog in munged slurmctld slurmd sinfo; do
    command -v "$prog" >/dev/null ||
      die "$prog not found: install slurmctld slurmd slurm-client munge (launch/install_deps.sh)"
  done
  if live_pid "$dir/slurmctld.pid" >/dev/null; then
    die "a cluster already runs in $dir (stop it first)"
  fi
  mkdir -p "$dir"
  chmod 0755 "$dir"
  mkdir -p "$dir/state" "$dir/spool" "$dir/tmp" "$dir/munge"
  chown munge:munge "$dir/munge"
  chmod 0755 "$dir/munge"
  if [[ ! -s $dir/munge/munge.key ]]; then
    head -c 1024 /dev/urandom >"$dir/munge/munge.key"
  fi
  chown munge:munge "$dir/munge/munge.key"
  chmod 0400 "$dir/munge/munge.key"
  local ports
  read -r -a ports < <(free_ports)
  write_conf "${ports[0]}" "${ports[1]}"

  # --force: munged refuses key and socket directories under a world-writable /tmp otherwise.
  runuser -u munge -- munged --force --key-file="$dir/munge/munge.key" \
    --socket="$dir/munge/munge.socket" --pid-file="$dir/munge/munged.pid" \
    --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/munged.seed"
  wait_until live_pid "$dir/munge/munged.pid" >/dev/null ||
    die "munged did not start; see $dir/munge/munged.log"
  cp "$dir/munge/munged.pid" "$dir/munged.pid"

  slurmctld -f "$conf" -i
  wait_until live_pid "$dir/slurmctld.pid" >/dev/null ||
    die "slurmctld did not start; see $dir/slurmctld.log"
  slurmd -f "$conf"
  wait_until live_pid "$dir/slurmd.pid" >/dev/null ||
    die "slurmd did not start; see $dir/slurmd.log"
  if ! wait_until node_idle; then
    die "node $node not idle after ${WAIT_S}s (state: $(node_state || echo unknown));" \
      "see $dir/slurmctld.log and $dir/slurmd.log"
  fi
  echo "local_cluster: node $node idle with $cpus CPUs; export SLURM_CONF=$conf"
}

stop() {
  [[ -f $conf ]] || die "no cluster configured in $dir"
  if live_pid "$dir/slurmctld.pid" >/dev/null; then
    SLURM_CONF=$conf scancel --full --quiet --user="$(id -un)" 2>/dev/null || true
    wait_until no_jobs ||
      echo "local_cluster: jobs still listed after ${WAIT_S}s; stopping anyway" >&2
  fi
  local name pid pids=()
  for name in slurmd slurmctld munged; do
    if pid=$(live_pid "$dir/$name.pid"); then
      pids+=("$pid")
    fi
  done
  # The daemons remove their pid files before they have exited: wait for the pids themselves.
  if [[ ${#pids[@]} -gt 0 ]]; then
    kill -TERM "${pids[@]}" 2>/dev/null || true
    if ! wait_until pids_gone "${pids[@]}"; then
      echo "local_cluster: daemons ${pids[*]} ignored SIGTERM; killing them" >&2
      kill -KILL "${pids[@]}" 2>/dev/null || true
    fi
  fi
  # Job steps whose slurmd is gone keep running: end them too.
  local leftover=()
  mapfile -t leftover < <(job_pids)
  if [[ ${#leftover[@]} -gt 0 ]]; then
    echo "local_cluster: killing leftover job processes ${leftover[*]}" >&2
    kill -KILL "${leftover[@]}" 2>/dev/null || true
  fi
  echo "local_cluster: stopped"
}

status() {
  [[ -f $conf ]] || die "no cluster configured in $dir"
  local name pid rc=0
  for name in munged slurmctld slurmd; do
    if pid=$(live_pid "$dir/$name.pid"); then
      echo "$name: running (pid $pid)"
    else
      echo "$name: not running"
      rc=1
    fi
  done
  echo "node $node: $(node_state || echo unknown)"
  return "$rc"
}

case $action in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) usage ;;
esac
