"""Setup errors met by some ranks only end every rank within seconds, with the message and the
real exit code: a data.test file missing on one rank's node, a run directory that is a regular
file (only rank 0 creates it), a corrupt checkpoint given with --resume (only rank 0 reads it).
comm.timeout is 300 s, so a rank left waiting in a collective would blow the 30 s bound."""
import os
import time

from harness import check, mpirun_cmd, parse_args, run, write
from trainer_support import base_overrides, fmnist_test_split, train_cmd

args = parse_args()
data = fmnist_test_split(args)
overrides = base_overrides(data, **{"comm.timeout": 300})


def timed(cmd, what):
    started = time.monotonic()
    p = run(cmd, timeout=120)
    seconds = time.monotonic() - started
    print(f"{what}: exit {p.returncode} after {seconds:.1f} s", flush=True)
    check(seconds < 30, f"{what}: took {seconds:.1f} s\n{p.stderr[-3000:]}")
    return p


def ranks_named(stderr, needle):
    return {r for r in (0, 1) if any(f"[rank {r}]" in line and needle in line
                                     for line in stderr.splitlines())}


# data.test missing on rank 1's "node" only (MPMD: the two ranks get different paths).
missing = os.path.join(args.scratch, "not-here", "test.h5")
cfg_cmd = train_cmd(args, 1, os.path.join(args.scratch, "missing-test"), overrides)
cmd = [args.mpirun, "--oversubscribe", "--bind-to", "none", "-np", "1", *cfg_cmd, f"data.test={data}",
       ":", "-np", "1", *cfg_cmd, f"data.test={missing}"]
p = timed(cmd, "data.test missing on rank 1")
check(p.returncode == 2, f"exit code {p.returncode}, expected 2\n{p.stderr[-3000:]}")
check(ranks_named(p.stderr, missing) == {0, 1},
      f"both ranks name {missing}:\n{p.stderr[-3000:]}")

# The run directory is a regular file: rank 0 alone creates run directories.
not_a_dir = write(os.path.join(args.scratch, "run-dir-is-a-file"), "x\n")
p = timed(train_cmd(args, 2, not_a_dir, overrides), "run directory is a file")
check(p.returncode == 2, f"exit code {p.returncode}, expected 2\n{p.stderr[-3000:]}")
check(ranks_named(p.stderr, "is not a directory") == {0, 1}, p.stderr[-3000:])
check("filesystem error" not in p.stderr, p.stderr[-3000:])

# A corrupt checkpoint given with --resume: rank 0 reads it; every rank ends with exit 2.
bad = write(os.path.join(args.scratch, "corrupt.h5"), "not an HDF5 file\n")
p = timed(train_cmd(args, 2, os.path.join(args.scratch, "bad-resume"), overrides,
                    extra=("--resume", bad)), "corrupt --resume")
check(p.returncode == 2, f"exit code {p.returncode}, expected 2\n{p.stderr[-3000:]}")
check(ranks_named(p.stderr, "corrupt.h5") == {0, 1}, p.stderr[-3000:])

# One process: the same messages, exit 2 (no MPI agreement needed).
p = timed(train_cmd(args, 1, not_a_dir, overrides), "one rank, run directory is a file")
check(p.returncode == 2 and "is not a directory" in p.stderr, p.stderr[-3000:])
print("ok")
