"""Non-finite guard (issue 6): a NaN loss injected on one rank makes every rank skip the step;
skips are counted; after guard.max_skips in a row the run rolls back to its last checkpoint and
goes on; when NaNs persist through guard.max_rollbacks rollbacks the run ends with code 5."""
import os

from harness import check, parse_args
from trainer_support import base_overrides, checkpoints, fmnist_test_split, load, train

args = parse_args()
data = fmnist_test_split(args)


def overrides(nan_steps, **extra):
    return base_overrides(data, **{
        "run.steps": 20, "checkpoint.every": 10, "debug.nan_at_step": 12,
        "debug.nan_steps": nan_steps, "debug.nan_rank": 1, "guard.max_skips": 3,
        "guard.max_rollbacks": 1, "guard.rollback_lr_factor": 0.5, **extra})


run_dir = os.path.join(args.scratch, "recovers")
p = train(args, 2, run_dir, overrides(3))
check(p.stderr.count("update skipped") >= 3, "skips are logged")
check("rolled back to" in p.stderr and "step 10" in p.stderr, p.stderr[-3000:])
_, attrs = load(checkpoints(run_dir)[-1])
check(attrs["step"] == 20, f"final step {attrs['step']}")
check(attrs["skipped_steps"] == 3 and attrs["rollbacks"] == 1,
      f"skipped {attrs['skipped_steps']}, rollbacks {attrs['rollbacks']}")
check(abs(attrs["lr_factor"] - 0.5) < 1e-12, f"lr factor {attrs['lr_factor']}")

p = train(args, 2, os.path.join(args.scratch, "diverges"), overrides(1000), check_rc=5)
check("training diverged" in p.stderr, p.stderr[-2000:])
print("ok")
