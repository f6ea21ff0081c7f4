"""A crashed rank (issue 6): SIGKILL one of 3 ranks mid-training; the others exit non-zero within
the collective deadline + 15 s instead of hanging, and a restarted job resumes from the last good
checkpoint."""
import os
import signal
import time

from harness import check, parse_args
from trainer_support import (base_overrides, checkpoints, fmnist_test_split, kill_group, load,
                             rank_pids, start, train, train_cmd, wait_for)

DEADLINE = 5

args = parse_args()
data = fmnist_test_split(args)
run_dir = os.path.join(args.scratch, "run")
overrides = base_overrides(data, **{"run.steps": 100000, "checkpoint.every": 5,
                                    "comm.timeout": DEADLINE})
proc, log = start(train_cmd(args, 3, run_dir, overrides), os.path.join(args.scratch, "run.log"))
try:
    wait_for(lambda: len(checkpoints(run_dir)) >= 1, 120, "a first checkpoint")
    pids = rank_pids(proc.pid)
    check(sorted(pids) == [0, 1, 2], f"rank pids {pids}")
    os.kill(pids[2], signal.SIGKILL)
    t0 = time.monotonic()
    rc = proc.wait(timeout=DEADLINE + 15)
    elapsed = time.monotonic() - t0
finally:
    if proc.poll() is None:
        kill_group(proc)
    log.close()
check(rc != 0, "the job must fail")
check(elapsed <= DEADLINE + 15, f"took {elapsed:.1f}s")


def gone(pid):
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] in "ZX"
    except OSError:
        return True


# mpirun has exited; its SIGKILLs reach the ranks within moments.
wait_for(lambda: all(gone(pid) for pid in pids.values()), 10, "every rank process to end")

last = load(checkpoints(run_dir)[-1])[1]["step"]
p = train(args, 3, run_dir, base_overrides(data, **{"run.steps": last + 5, "checkpoint.every": 5}))
check("resuming from" in p.stderr, p.stderr[-2000:])
print(f"ok: job ended {elapsed:.1f}s after the kill (exit {rc}); resumed from step {last}")
