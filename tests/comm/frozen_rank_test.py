"""A rank frozen with SIGSTOP mid-training: every other rank must exit non-zero within the
collective deadline + 15 s, its log must name the collective that timed out, and no process of
the job may be left behind.

Usage: frozen_rank_test.py --driver BIN --mpirun MPIRUN --np N --scratch DIR
"""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import time

TIMEOUT_MS = 3000
STOP_STEP = 3
GRACE_S = 15


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr, flush=True)
    sys.exit(1)


def alive(pid, driver):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().decode(errors="replace")
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return os.path.basename(driver) in cmdline and state != "Z"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--driver", required=True)
    ap.add_argument("--mpirun", required=True)
    ap.add_argument("--np", type=int, default=2)
    ap.add_argument("--scratch", required=True)
    args = ap.parse_args()
    shutil.rmtree(args.scratch, ignore_errors=True)
    os.makedirs(args.scratch)

    cmd = [args.mpirun, "-np", str(args.np), "--oversubscribe", "--bind-to", "none",
           args.driver, "--steps", "1000000", "--timeout-ms", str(TIMEOUT_MS),
           "--stop-rank", "1", "--stop-step", str(STOP_STEP), "--dir", args.scratch]
    log_path = os.path.join(args.scratch, "job.log")
    stopped_path = os.path.join(args.scratch, "stopped")
    # Start-up (loading LibTorch on oversubscribed cores) is not part of the budget.
    startup_budget = 60
    with open(log_path, "w") as log:
        job = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        pids = set()
        try:
            deadline = time.time() + startup_budget
            while not os.path.exists(stopped_path):
                if job.poll() is not None:
                    fail(f"job exited ({job.returncode}) before rank 1 froze:\n"
                         + open(log_path).read())
                if time.time() > deadline:
                    fail("rank 1 did not reach the freeze step within "
                         f"{startup_budget} s:\n" + open(log_path).read())
                time.sleep(0.05)
            with open(stopped_path) as f:
                stopped_at = float(f.read())
            limit = TIMEOUT_MS / 1000 + GRACE_S
            try:
                rc = job.wait(timeout=max(1.0, stopped_at + limit - time.time()))
            except subprocess.TimeoutExpired:
                fail(f"the job still runs {limit} s after rank 1 froze:\n" + open(log_path).read())
            ended = time.time() - stopped_at
        finally:
            for name in os.listdir(args.scratch):
                if name.endswith(".pid"):
                    with open(os.path.join(args.scratch, name)) as f:
                        pids.add(int(f.read()))
            leftovers = [p for p in pids if alive(p, args.driver)]
            try:
                os.killpg(job.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            for pid in leftovers:
                for sig in (signal.SIGCONT, signal.SIGKILL):
                    try:
                        os.kill(pid, sig)
                    except ProcessLookupError:
                        pass
            job.wait(timeout=30)

    log = open(log_path).read()
    print(log)
    print(f"job ended {ended:.1f} s after rank 1 froze, exit code {rc}")
    if rc == 0:
        fail("the job exited 0 although rank 1 froze")
    if ended > TIMEOUT_MS / 1000 + GRACE_S:
        fail(f"the job ended {ended:.1f} s after the freeze (limit {TIMEOUT_MS / 1000 + GRACE_S} s)")
    if f"did not complete within {TIMEOUT_MS // 1000} s" not in log:
        fail("no rank reported the collective that timed out")
    if "allreduce grads[driver]" not in log or "waiting on rank 1" not in log:
        fail("the timeout report does not name the collective and the frozen peer")
    if leftovers:
        # mpirun must tear the job down by itself; the test only cleans up after a failure.
        fail(f"processes left behind after the job ended: {leftovers}")
    print("ok")


if __name__ == "__main__":
    main()
