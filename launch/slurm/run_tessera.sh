#!/usr/bin/env bash
# The body of Tessera's Slurm batch jobs (train.sbatch, train_multinode.sbatch): runs
# `tessera train ARGS...` as one `srun --mpi=pmix` step over every task of the allocation,
# forwards the batch shell's early-warning signal to it, and requeues the job when Tessera exits
# with code 75 (preempted: it stopped on a signal or its time budget after saving a checkpoint),
# unless Slurm itself was ending the job (SIGTERM: scancel, hard time limit, preemption).
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

log() {
  printf '[%s] [slurm job %s] %s\n' "$(date '+%Y-%m-%d %H:%M:%S.%3N')" "${SLURM_JOB_ID:-?}" "$*" >&2
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

srun "${srun_args[@]}" "$bin" train "$@" &
step_pid=$!

# --signal=B:USR1@120 sends USR1 to this shell only; srun passes it on to every task, so all
# ranks agree on a step, save and exit 75. SIGTERM (scancel, time limit, preemption) is sent by
# Slurm to the tasks themselves: forwarding it too would be Tessera's "second signal, exit at
# once", so this shell only notes it and stays alive to report the exit code.
trapped=0
terminated=0
# shellcheck disable=SC2317  # invoked by the trap below
forward() {
  trapped=1
  log "received SIG$1: forwarding it to the job step (checkpoint, then exit $EXIT_PREEMPTED)"
  kill -s "$1" "$step_pid" 2>/dev/null || true
}
trap 'forward USR1' USR1
trap 'trapped=1; terminated=1; log "received SIGTERM; the job step gets it from Slurm directly"' TERM

# A trapped signal interrupts `wait`; wait again until the step has really ended.
while :; do
  trapped=0
  rc=0
  wait "$step_pid" || rc=$?
  [[ $trapped -eq 1 ]] || break
done
trap - USR1 TERM

if [[ $rc -ne $EXIT_PREEMPTED ]]; then
  log "tessera exited with code $rc"
  exit "$rc"
fi
# SIGTERM means Slurm itself is ending the job: scancel, the hard time limit (the USR1 warning
# came too late or not at all) or a preemption. Never requeue then: a requeue would undo scancel
# (Slurm accepts it while the job completes, and the job shows COMPLETING in every case), and
# Slurm requeues preempted jobs itself under PreemptMode=REQUEUE. Submit again to resume.
if [[ $terminated -eq 1 ]]; then
  log "tessera saved a checkpoint and stopped (exit $EXIT_PREEMPTED) after Slurm's SIGTERM" \
    "(scancel, time limit or preemption): not requeueing; submit again to resume"
  exit "$rc"
fi
if [[ $restarts -ge $max_requeues ]]; then
  log "tessera was preempted, but the job already ran $((restarts + 1)) times" \
    "(TESSERA_MAX_REQUEUES=$max_requeues): not requeueing"
  exit "$rc"
fi
log "tessera saved a checkpoint and stopped (exit $EXIT_PREEMPTED): requeueing job $SLURM_JOB_ID"
if ! scontrol requeue "$SLURM_JOB_ID"; then
  log "scontrol requeue failed (is the job requeueable? sbatch --requeue); resubmit to resume"
fi
exit "$rc"
