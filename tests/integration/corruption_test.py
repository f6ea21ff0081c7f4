"""Corrupt checkpoints (issue 6): a flipped byte or a truncated newest checkpoint makes the run
resume from the previous one, with a log line saying why; a half-written .tmp is ignored and
removed; an explicit --resume of a corrupt file is a clear error (exit 2)."""
import os

from harness import check, parse_args
from trainer_support import base_overrides, checkpoints, fmnist_test_split, load, train

args = parse_args()
data = fmnist_test_split(args)
run_dir = os.path.join(args.scratch, "run")
ckdir = os.path.join(run_dir, "checkpoints")


def steps(n):
    return base_overrides(data, **{"run.steps": n, "checkpoint.every": 10})


def name(step):
    return os.path.join(ckdir, f"step-{step:08d}.h5")


train(args, 2, run_dir, steps(20))
check([os.path.basename(p) for p in checkpoints(run_dir)] == ["step-00000010.h5", "step-00000020.h5"],
      f"{checkpoints(run_dir)}")

# A flipped byte in the middle of the newest checkpoint.
with open(name(20), "r+b") as f:
    f.seek(os.path.getsize(name(20)) // 2)
    b = f.read(1)
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([b[0] ^ 0x40]))
p = train(args, 2, run_dir, steps(25))
check("step-00000020.h5" in p.stderr and f"resuming from {name(10)}" in p.stderr,
      f"no fallback to step 10:\n{p.stderr[-3000:]}")
skip_lines = [l for l in p.stderr.splitlines() if "step-00000020.h5" in l and "resuming" not in l]
check(skip_lines, "the skip is logged with its reason")
print("flip:", skip_lines[0])

# A truncated newest checkpoint (step 25 now).
with open(name(25), "r+b") as f:
    f.truncate(os.path.getsize(name(25)) // 2)
p = train(args, 2, run_dir, steps(30))
check(f"resuming from {name(20)}" in p.stderr, f"no fallback to step 20:\n{p.stderr[-3000:]}")

# A half-written .tmp left by a crash is ignored and cleaned up.
tmp = name(99) + ".tmp"
with open(tmp, "wb") as f:
    f.write(b"\x89HDF\r\n\x1a\n half written")
p = train(args, 2, run_dir, steps(35))
check(not os.path.exists(tmp), ".tmp not removed")
check(".tmp" in p.stderr, "the cleanup is logged")
_, attrs = load(checkpoints(run_dir)[-1])
check(attrs["step"] == 35, f"final step {attrs['step']}")

# An explicit --resume of a corrupt checkpoint is the user's input: exit 2 naming the file.
p = train(args, 2, os.path.join(args.scratch, "other"), steps(40), check_rc=2,
          extra=("--resume", name(25)))
check(name(25) in p.stderr, p.stderr[-2000:])
print("ok")
