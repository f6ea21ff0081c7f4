"""Bit-exact resume (issue 6): 2 ranks train 60 steps; another run of the same configuration is
killed with SIGKILL once its step-15 checkpoint exists, then resumed to 60. The final parameters,
codebook, EMA weights and optimizer state are bitwise equal."""
import os
import signal

import numpy as np

from harness import check, parse_args, run
from trainer_support import (base_overrides, checkpoints, fmnist_test_split, kill_group, load,
                             start, train, train_cmd, wait_for)

args = parse_args()
data = fmnist_test_split(args)
overrides = base_overrides(data, **{
    "run.steps": 60, "checkpoint.every": 5, "checkpoint.async": "true", "optim.ema": "[0.99]",
    "data.batch_size": 32, "quantizer.restart_every": 10, "quantizer.restart_threshold": 0.5})

straight = os.path.join(args.scratch, "straight")
train(args, 2, straight, overrides)

interrupted = os.path.join(args.scratch, "interrupted")
proc, log = start(train_cmd(args, 2, interrupted, overrides), os.path.join(args.scratch, "a.log"))
step15 = os.path.join(interrupted, "checkpoints", "step-00000015.h5")
try:
    wait_for(lambda: os.path.exists(step15) or proc.poll() is not None, 120, "step 15")
    check(proc.poll() is None, "the run finished before it could be killed")
finally:
    kill_group(proc)  # SIGKILL to mpirun and every rank
    log.close()
killed_at = max(int(os.path.basename(p)[5:13]) for p in checkpoints(interrupted))
check(killed_at < 60, f"killed too late (checkpoint {killed_at})")
p = train(args, 2, interrupted, overrides)
check("resuming from" in p.stderr, "the second run did not resume")

a, a_attrs = load(checkpoints(straight)[-1])
b, b_attrs = load(checkpoints(interrupted)[-1])
check(set(a) == set(b), f"different tensors: {set(a) ^ set(b)}")
different = [k for k in a if not np.array_equal(a[k], b[k])]
check(not different, f"not bitwise equal after resume from step {killed_at}: {different[:5]}")
for key in ("step", "epoch", "consumed", "samples"):
    check(a_attrs[key] == b_attrs[key], f"{key}: {a_attrs[key]} vs {b_attrs[key]}")
print(f"ok: {len(a)} tensors bitwise equal (killed after checkpoint {killed_at})")
