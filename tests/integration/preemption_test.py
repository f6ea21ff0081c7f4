"""Preemption (issue 6): SIGUSR1 to one rank makes every rank save the same step and exit with
code 75; the next run resumes from it. A time budget ends a run the same way; a second signal
exits at once."""
import os
import re
import signal

from harness import check, parse_args
from trainer_support import (base_overrides, checkpoints, fmnist_test_split, kill_group, load,
                             rank_pids, start, train, train_cmd, wait_for)

args = parse_args()
data = fmnist_test_split(args)
run_dir = os.path.join(args.scratch, "run")
overrides = base_overrides(data, **{"run.steps": 100000, "run.log_every": 5})
log_path = os.path.join(args.scratch, "usr1.log")
proc, log = start(train_cmd(args, 2, run_dir, overrides), log_path)
try:
    jsonl = os.path.join(run_dir, "metrics.jsonl")
    wait_for(lambda: os.path.exists(jsonl) and os.path.getsize(jsonl) > 0, 120, "training")
    pids = rank_pids(proc.pid)
    check(sorted(pids) == [0, 1], f"rank pids: {pids}")
    os.kill(pids[1], signal.SIGUSR1)  # one rank only
    rc = proc.wait(timeout=60)
finally:
    if proc.poll() is None:
        kill_group(proc)
    log.close()
text = open(log_path).read()
check(rc == 75, f"exit code {rc}, expected 75 (preempted)\n{text[-3000:]}")
check(len(re.findall(r"stop requested by a signal", text)) >= 2, "every rank agrees to stop")
saved = checkpoints(run_dir)
check(len(saved) == 1, f"checkpoints: {saved}")
_, attrs = load(saved[-1])
stop_step = int(attrs["step"])
check(f"checkpoint of step {stop_step} committed" in text, "ranks learn that the save committed")

p = train(args, 2, run_dir, base_overrides(data, **{"run.steps": stop_step + 5}))
check(f"step-{stop_step:08d}.h5" in p.stderr and "resuming from" in p.stderr, p.stderr[-2000:])
_, attrs = load(checkpoints(run_dir)[-1])
check(attrs["step"] == stop_step + 5, f"final step {attrs['step']}")

# A wall-clock budget stops like a preemption.
budget_dir = os.path.join(args.scratch, "budget")
p = train(args, 2, budget_dir, base_overrides(data, **{"run.steps": 100000, "run.max_time": 2}),
          check_rc=75, timeout=120)
check("time budget" in p.stderr and checkpoints(budget_dir), p.stderr[-2000:])

# Two signals: exit at once without waiting for the step boundary.
proc, log = start(train_cmd(args, 1, os.path.join(args.scratch, "twice"), overrides),
                  os.path.join(args.scratch, "twice.log"))
try:
    wait_for(lambda: os.path.exists(os.path.join(args.scratch, "twice", "metrics.jsonl")), 120,
             "training")
    os.kill(proc.pid, signal.SIGTERM)
    os.kill(proc.pid, signal.SIGTERM)
    rc = proc.wait(timeout=30)
finally:
    if proc.poll() is None:
        kill_group(proc)
    log.close()
check(rc == 75, f"exit code after two signals {rc}")
print(f"ok (stopped and resumed at step {stop_step})")
