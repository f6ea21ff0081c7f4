#!/usr/bin/env bash
# The body of Tessera's Slurm batch jobs (train.sbatch, train_multinode.sbatch): runs
# `tessera train ARGS...` as one `srun --mpi=pmix` step over every task of the allocation,
# forwards the batch shell's early-warning signal to it, and requeues the job when Tessera exits
# with code 75 (preempted: it stopped on a signal or its time budget after saving a checkpoint),
# or when Slurm ends it at its time limit (SIGTERM), but not after scancel or a preemption.
# The requeued job runs the same command, and `tessera train` resumes from the run directory
# by itself.
#
#   run_tessera.sh --config FILE [--run-dir DIR] [key=value ...]
#
# Environment (all optional):
#   TESSERA_HOME          the repository (default: $SLURM_SUBMIT_DIR)
#   TESSERA_BIN           the tessera binary (default: $TESSERA_HOME/build/trainer/tessera, else PATH)
#   TESSERA_SRUN_ARGS     extra srun arguments, split on spaces (e.g. "--cpu-bind=cores")
#   TESSERA_MAX_REQUEUES  requeue at most this many times (default 20; SLURM_RESTART_COUNT)
#   OMP_NUM_THREADS       default: SLURM_CPUS_PER_TASK
set -euo pipefail

readonly EXIT_PREEMPTED=75  # tessera::kExitPreempted (core/error.h)

# Seconds in a Slurm duration: [days-]hours:minutes:seconds, minutes:seconds or minutes.
to_seconds() {
  local t=$1 days=0 h=0 m=0 sec=0 parts
  if [[ $t == *-* ]]; then
    days=${t%%-*}
    t=${t#*-}
  fi
  IFS=: read -r -a parts <<<"$t"
  case ${#parts[@]} in
    3) h=${parts[0]} m=${parts[1]} sec=${parts[2]} ;;
    2) m=${parts[0]} sec=${parts[1]} ;;
    *) m=${parts[0]} ;;
  esac
  echo $((((10#$days * 24 + 10#$h) * 60 + 10#$m) * 60 + 10#$sec))
}

# True when this job has run for its whole time limit (scontrol's RunTime >= TimeLimit).
at_time_limit() {
  local line run limit
  line=$(scontrol show job --oneliner "$SLURM_JOB_ID" 2>/dev/null) || return 1
  run=$(grep -o 'RunTime=[^ ]*' <<<"$line") || return 1
  limit=$(grep -o 'TimeLimit=[^ ]*' <<<"$line") || return 1
  run=${run#RunTime=}
  limit=${limit#TimeLimit=}
  [[ $run =~ ^[0-9] && $limit =~ ^[0-9] ]] || return 1 # UNLIMITED, Partition_Limit
  (($(to_seconds "$run") >= $(to_seconds "$limit")))
}

# No command substitution here: log runs in the signal traps, and a $(...) in a trap while the
# step ends makes bash 5.2 lose the step's exit status (`wait` then reports -1).
log() {
  local now=${EPOCHREALTIME/,/.}
  printf '[%(%Y-%m-%d %H:%M:%S)T.%s] [slurm job %s] %s\n' "${now%.*}" "${now:${#now}-6:3}" \
    "${SLURM_JOB_ID:-?}" "$*" >&2
}

if [[ -z ${SLURM_JOB_ID:-} ]]; then
  log "run_tessera.sh runs inside a Slurm job: submit with sbatch (see launch/slurm/train.sbatch)"
  exit 2
fi
if [[ $# -eq 0 ]]; then
  log "usage: sbatch launch/slurm/train.sbatch --config FILE [--run-dir DIR] [key=value ...]"
  exit 2
fi

home=${TESSERA_HOME:-${SLURM_SUBMIT_DIR:-$PWD}}
bin=${TESSERA_BIN:-}
if [[ -z $bin ]]; then
  if [[ -x $home/build/trainer/tessera ]]; then
    bin=$home/build/trainer/tessera
  elif ! bin=$(command -v tessera); then
    log "no tessera binary: build it in $home/build, put it on PATH or set TESSERA_BIN"
    exit 2
  fi
fi

if [[ -z ${OMP_NUM_THREADS:-} && -n ${SLURM_CPUS_PER_TASK:-} ]]; then
  export OMP_NUM_THREADS=$SLURM_CPUS_PER_TASK
fi

srun_args=(--mpi=pmix --kill-on-bad-exit=1)
if [[ -n ${TESSERA_SRUN_ARGS:-} ]]; then
  read -r -a extra <<<"$TESSERA_SRUN_ARGS"
  srun_args+=("${extra[@]}")
fi

restarts=${SLURM_RESTART_COUNT:-0}
max_requeues=${TESSERA_MAX_REQUEUES:-20}
log "start $((restarts + 1)) on ${SLURM_JOB_NUM_NODES:-1} node(s), ${SLURM_NTASKS:-1} task(s):" \
  "srun ${srun_args[*]} $bin train $*"

# --signal=B:USR1@120 sends USR1 to this shell only; srun passes it on to every task, so all
# ranks agree on a step, save and exit 75. SIGTERM (scancel, time limit, preemption) is sent by
# Slurm to the tasks themselves: forwarding it too would be Tessera's "second signal, exit at
# once", so this shell only notes it and stays alive to report the exit code.
trapped=0
terminated=0
warned=0
pending=""
step=$(mktemp -d "${TMPDIR:-/tmp}/tessera-step.XXXXXX")
trap 'rm -rf "$step"' EXIT
# shellcheck disable=SC2317  # invoked by the trap below
forward() {
  trapped=1
  warned=1
  log "received SIG$1: forwarding it to the job step (checkpoint, then exit $EXIT_PREEMPTED)"
  local pid
  if read -r pid 2>/dev/null <"$step/pid"; then
    kill -s "$1" "$pid" 2>/dev/null || true
  else
    pending=$1
  fi
}
trap 'forward USR1' USR1
trap 'trapped=1; terminated=1; log "received SIGTERM; the job step gets it from Slurm directly"' TERM

# srun runs under a subshell that only waits for it and writes its exit status to a file. This
# shell's own `wait` is interrupted by the traps above, and bash (5.2) may then lose the status of
# a child that ends meanwhile (`wait` reports -1), which is what happens when Slurm sends SIGTERM
# to this shell and to the step together. The subshell ignores TERM and USR1 (Slurm may signal
# every process of the job) and gives srun their default handling back.
default_signals=()
if env --default-signal=TERM true 2>/dev/null; then
  default_signals=(env "--default-signal=TERM,USR1")
fi
(
  if [[ ${#default_signals[@]} -gt 0 ]]; then
    trap '' TERM USR1
  fi
  "${default_signals[@]}" srun "${srun_args[@]}" "$bin" train "$@" &
  echo "$!" >"$step/pid.tmp"
  mv "$step/pid.tmp" "$step/pid"
  rc=0
  wait "$!" || rc=$?
  echo "$rc" >"$step/rc"
) &
waiter=$!
until [[ -s $step/pid ]] || ! kill -0 "$waiter" 2>/dev/null; do
  sleep 0.05
done
if [[ -n $pending ]] && read -r pid 2>/dev/null <"$step/pid"; then
  kill -s "$pending" "$pid" 2>/dev/null || true
fi

# A trapped signal interrupts `wait`; wait again until the subshell has really ended.
while :; do
  trapped=0
  wait "$waiter" || true
  [[ $trapped -eq 1 ]] || break
done
trap - USR1 TERM
if ! read -r rc 2>/dev/null <"$step/rc"; then
  log "the job step's exit status is unknown"
  rc=1
fi

# A warning that arrives while the ranks are still starting, before Tessera has installed its
# handler (a short time limit, a requeued job close to its limit), kills them with USR1's default
# action: nothing was lost since the last checkpoint, so requeue as after a save.
stopped="tessera saved a checkpoint and stopped (exit $EXIT_PREEMPTED)"
if [[ $warned -eq 1 && $rc -eq $((128 + $(kill -l USR1))) ]]; then
  stopped="the ranks died of SIGUSR1 before Tessera handled it (still starting; the newest"
  stopped+=" checkpoint stands)"
  rc=$EXIT_PREEMPTED
fi
# After the warning, the first rank to exit 75 makes srun (--kill-on-bad-exit) send SIGTERM to
# the ranks still finishing: the step then ends with 143 although every rank had agreed to stop.
# A save is committed only once complete, so the newest checkpoint stands either way: requeue.
if [[ $warned -eq 1 && $rc -eq $((128 + $(kill -l TERM))) && $terminated -eq 0 ]]; then
  stopped="tessera stopped after the warning (srun ended the last ranks with SIGTERM once the"
  stopped+=" first exited $EXIT_PREEMPTED; the newest checkpoint stands)"
  rc=$EXIT_PREEMPTED
fi
if [[ $rc -ne $EXIT_PREEMPTED ]]; then
  log "tessera exited with code $rc"
  exit "$rc"
fi
# SIGTERM means Slurm itself is ending the job: scancel, the time limit (the USR1 warning came
# too late) or a preemption. Requeue only at the time limit: a requeue would undo scancel (Slurm
# accepts it while the job completes, and the job shows COMPLETING in every case), and Slurm
# requeues preempted jobs itself under PreemptMode=REQUEUE. Submit again to resume.
if [[ $terminated -eq 1 ]] && ! at_time_limit; then
  log "$stopped after Slurm's SIGTERM before the time limit (scancel or preemption):" \
    "not requeueing; submit again to resume"
  exit "$rc"
fi
if [[ $restarts -ge $max_requeues ]]; then
  log "tessera was preempted, but the job already ran $((restarts + 1)) times" \
    "(TESSERA_MAX_REQUEUES=$max_requeues): not requeueing"
  exit "$rc"
fi
log "$stopped: requeueing job $SLURM_JOB_ID"
if ! scontrol requeue "$SLURM_JOB_ID"; then
  log "scontrol requeue failed (is the job requeueable? sbatch --requeue); resubmit to resume"
fi
exit "$rc"
