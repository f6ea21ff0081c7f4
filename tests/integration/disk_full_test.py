"""Failed saves (issue 6): when checkpoints cannot be written (a file-size limit makes every write
beyond 1 MB fail with EFBIG, like a full disk), the earlier checkpoints stay intact, each failure
is logged and counted, and training goes on to the end. One process without a launcher: Open MPI
itself cannot start under a 1 MB file-size limit (its shared-memory segments are files)."""
import os
import resource
import signal
import subprocess

from harness import check, parse_args
from trainer_support import base_overrides, checkpoints, fmnist_test_split, load, train_cmd

args = parse_args()
data = fmnist_test_split(args)
run_dir = os.path.join(args.scratch, "run")
ckdir = os.path.join(run_dir, "checkpoints")


def overrides(n):
    return base_overrides(data, **{"run.steps": n, "checkpoint.every": 5, "run.log_every": 5})


subprocess.run(train_cmd(args, 1, run_dir, overrides(10)), check=True, capture_output=True,
               timeout=300)
before = {p: open(p, "rb").read() for p in checkpoints(run_dir)}
latest_before = open(os.path.join(ckdir, "latest")).read()


def limit_file_size():
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))


p = subprocess.run(train_cmd(args, 1, run_dir, overrides(20)), capture_output=True, text=True,
                   timeout=300, preexec_fn=limit_file_size)
check(p.returncode == 0, f"training must go on: exit {p.returncode}\n{p.stderr[-3000:]}")
failures = [l for l in p.stderr.splitlines() if "rank 0" in l and "error" in l and "checkpoint" in l]
check(len(failures) >= 2, f"failed saves are logged: {failures}")
after = {p: open(p, "rb").read() for p in checkpoints(run_dir)}
check(after == before, f"earlier checkpoints changed or new ones appeared: {sorted(after)}")
check(open(os.path.join(ckdir, "latest")).read() == latest_before, "latest pointer moved")
check(not [f for f in os.listdir(ckdir) if f.endswith(".tmp")], "a .tmp was left behind")
metrics = open(os.path.join(run_dir, "metrics.jsonl")).read().splitlines()
check(any('"step": 20' in l for l in metrics), "training reached step 20")
print("ok:", failures[0])
