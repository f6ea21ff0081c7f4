"""Runs launch/slurm/train.sbatch in a faked Slurm environment (issue 6).

Fake `srun` (records its arguments, then runs the command as `mpirun -np $SLURM_NTASKS`) and
`scontrol` (records what it was asked) come first on PATH, SLURM_* variables describe a 2-task
job, and TESSERA_BIN points at a fake tessera that records its rank and arguments and exits as
told. Checks: a normal exit is not requeued; exit 75 (preempted) is requeued with the job id;
USR1 to the batch shell (--signal=B:USR1@120) reaches every rank, which then exits 75 and the job
is requeued; another failure is passed through without requeue; the requeue limit holds.

    slurm_test.py --tessera BIN --mpirun MPIRUN --scratch DIR
"""
import os
import signal
import stat
import subprocess
import sys
import time

import harness

JOB_ID = "4242"
NTASKS = 2

FAKE_SRUN = """#!/usr/bin/env bash
# Fake srun: records its arguments, drops its own options, runs the command under mpirun.
set -euo pipefail
printf '%s\\n' "$@" > "$FAKE_SLURM_DIR/srun.args"
while [[ $# -gt 0 && $1 == -* ]]; do shift; done
exec "$FAKE_MPIRUN" -np "$SLURM_NTASKS" --oversubscribe --bind-to none \\
  -x SLURM_JOB_ID -x FAKE_SLURM_DIR -x FAKE_TESSERA_MODE "$@"
"""

FAKE_SCONTROL = """#!/usr/bin/env bash
# Fake scontrol: records the request.
echo "$*" >> "$FAKE_SLURM_DIR/scontrol.log"
"""

# Modes: exit:N exits N; signal waits for USR1, then exits 75 as a preempted tessera would.
FAKE_TESSERA = """#!/usr/bin/env bash
set -euo pipefail
rank=${OMPI_COMM_WORLD_RANK:?not started by mpirun}
out=$FAKE_SLURM_DIR/rank$rank
printf '%s\\n' "$@" > "$out.args"
echo "${OMP_NUM_THREADS:-unset}" > "$out.omp"
case $FAKE_TESSERA_MODE in
  exit:*) exit "${FAKE_TESSERA_MODE#exit:}" ;;
  signal)
    # mpirun may signal the rank's whole process group, the idle sleep included.
    trap 'echo USR1 > "$out.signal"; kill "$idle" 2>/dev/null || true; exit 75' USR1
    sleep 120 & idle=$!
    touch "$out.ready"
    wait "$idle" || true
    echo "no signal" > "$out.signal"
    exit 1 ;;
esac
"""


def make_exe(path, text):
    harness.write(path, text)
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


class FakeSlurm:
    def __init__(self, args):
        self.root = os.path.join(args.scratch, "fake")
        self.bin = os.path.join(self.root, "bin")
        make_exe(os.path.join(self.bin, "srun"), FAKE_SRUN)
        make_exe(os.path.join(self.bin, "scontrol"), FAKE_SCONTROL)
        self.tessera = os.path.join(self.root, "tessera")
        make_exe(self.tessera, FAKE_TESSERA)
        self.mpirun = args.mpirun
        self.case_no = 0

    def start(self, mode, restart_count=0, extra_env=None):
        """Starts train.sbatch as sbatch would; returns (process, state dir)."""
        self.case_no += 1
        state = os.path.join(self.root, f"case{self.case_no}")
        os.makedirs(state)
        env = dict(os.environ)
        env.pop("OMP_NUM_THREADS", None)
        env.update({
            "PATH": self.bin + os.pathsep + env.get("PATH", ""),
            "SLURM_JOB_ID": JOB_ID, "SLURM_JOB_NAME": "tessera", "SLURM_NTASKS": str(NTASKS),
            "SLURM_JOB_NUM_NODES": "1", "SLURM_CPUS_PER_TASK": "3",
            "SLURM_SUBMIT_DIR": harness.source_dir(), "SLURM_RESTART_COUNT": str(restart_count),
            "TESSERA_BIN": self.tessera, "FAKE_SLURM_DIR": state, "FAKE_MPIRUN": self.mpirun,
            "FAKE_TESSERA_MODE": mode,
        })
        env.update(extra_env or {})
        script = os.path.join(harness.source_dir(), "launch", "slurm", "train.sbatch")
        cmd = ["bash", script, "--config", "configs/vqvae_fmnist.yaml", "run.name=a b"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, cwd=state, start_new_session=True)
        return proc, state

    @staticmethod
    def finish(proc, timeout=60):
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            harness.fail(f"train.sbatch did not finish in {timeout}s\n{out}")
        return proc.returncode, out


def read(path, default=None):
    if not os.path.exists(path):
        return default
    with open(path) as f:
        return f.read()


def check_ranks_ran(state, out):
    for r in range(NTASKS):
        args = read(os.path.join(state, f"rank{r}.args"))
        harness.check(args is not None, f"rank {r} never ran\n{out}")
        harness.check(args.splitlines() == ["train", "--config", "configs/vqvae_fmnist.yaml",
                                            "run.name=a b"],
                      f"rank {r} got arguments {args.splitlines()}")
        omp = read(os.path.join(state, f"rank{r}.omp"), "").strip()
        harness.check(omp == "3", f"rank {r}: OMP_NUM_THREADS={omp}, expected SLURM_CPUS_PER_TASK")
    srun_args = read(os.path.join(state, "srun.args"), "").splitlines()
    harness.check("--mpi=pmix" in srun_args, f"srun without --mpi=pmix: {srun_args}")
    harness.check("--kill-on-bad-exit=1" in srun_args, f"srun arguments: {srun_args}")


def requeues(state):
    return read(os.path.join(state, "scontrol.log"), "").splitlines()


def main():
    args = harness.parse_args()
    fake = FakeSlurm(args)

    # A run that finishes: exit 0, nothing requeued.
    proc, state = fake.start("exit:0")
    rc, out = fake.finish(proc)
    harness.check(rc == 0, f"normal exit: train.sbatch returned {rc}\n{out}")
    check_ranks_ran(state, out)
    harness.check(requeues(state) == [], f"normal exit requeued: {requeues(state)}")
    print("normal exit: no requeue", flush=True)

    # Tessera stopped preempted after saving: the job requeues itself.
    proc, state = fake.start("exit:75")
    rc, out = fake.finish(proc)
    harness.check(rc == 75, f"preempted: train.sbatch returned {rc}\n{out}")
    check_ranks_ran(state, out)
    harness.check(requeues(state) == [f"requeue {JOB_ID}"], f"requeue calls: {requeues(state)}")
    print("exit 75: requeued", flush=True)

    # Slurm's warning signal reaches the batch shell only; it must reach every rank.
    proc, state = fake.start("signal")
    deadline = time.monotonic() + 60
    ready = [os.path.join(state, f"rank{r}.ready") for r in range(NTASKS)]
    while not all(os.path.exists(p) for p in ready):
        if proc.poll() is not None or time.monotonic() > deadline:
            rc, out = fake.finish(proc)
            harness.fail(f"ranks never became ready (rc {rc})\n{out}")
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGUSR1)
    rc, out = fake.finish(proc)
    for r in range(NTASKS):
        got = read(os.path.join(state, f"rank{r}.signal"), "").strip()
        harness.check(got == "USR1", f"rank {r}: signal file says {got!r}\n{out}")
    harness.check(rc == 75, f"USR1: train.sbatch returned {rc}\n{out}")
    harness.check(requeues(state) == [f"requeue {JOB_ID}"], f"requeue calls: {requeues(state)}")
    harness.check("received SIGUSR1" in out, f"no log of the forwarded signal\n{out}")
    print("USR1 to the batch shell: forwarded to both ranks, requeued", flush=True)

    # Any other failure is reported as is and not requeued.
    proc, state = fake.start("exit:3")
    rc, out = fake.finish(proc)
    harness.check(rc == 3, f"comm failure: train.sbatch returned {rc}\n{out}")
    harness.check(requeues(state) == [], f"failure requeued: {requeues(state)}")
    print("exit 3: passed through, no requeue", flush=True)

    # The requeue limit stops a job that would otherwise be preempted forever.
    proc, state = fake.start("exit:75", restart_count=5, extra_env={"TESSERA_MAX_REQUEUES": "5"})
    rc, out = fake.finish(proc)
    harness.check(rc == 75 and requeues(state) == [],
                  f"limit: rc {rc}, requeues {requeues(state)}\n{out}")
    harness.check("not requeueing" in out, f"no log of the limit\n{out}")
    print("requeue limit honoured", flush=True)

    # Outside a Slurm job the script refuses clearly.
    p = subprocess.run(["bash", os.path.join(harness.source_dir(), "launch", "slurm",
                                             "run_tessera.sh"), "--config", "x.yaml"],
                       env={k: v for k, v in os.environ.items() if not k.startswith("SLURM_")},
                       capture_output=True, text=True, timeout=30)
    harness.check(p.returncode == 2 and "sbatch" in p.stderr, f"outside Slurm: {p}")
    print("PASS", flush=True)


if __name__ == "__main__":
    sys.exit(main())
