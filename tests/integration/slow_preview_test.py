"""Previews never kill a job: with comm.timeout = 2 s, a 2-rank run whose every preview PNG takes
4 s to write on rank 0 (debug.preview_write_delay, a slow file system) still finishes with exit
0, writes every grid, and no rank reports a collective timeout. Rank 0 writes grids in the
background; every rank computes them, so no rank reaches a collective a preview's time late."""
import glob
import os

from harness import check, parse_args
from trainer_support import base_overrides, fmnist_test_split, train

args = parse_args()
data = fmnist_test_split(args)
run_dir = os.path.join(args.scratch, "run")
p = train(args, 2, run_dir, base_overrides(data, **{
    "run.steps": 40, "run.image_every": 10, "comm.timeout": 2,
    "debug.preview_write_delay": 4}), timeout=200)
grids = sorted(glob.glob(os.path.join(run_dir, "samples", "recon-step-*.png")))
check(len(grids) == 4, f"grids {grids}")
check("timed out" not in p.stderr and "timeout" not in p.stderr.lower(), p.stderr[-3000:])
print("ok")
