"""Distributed codebook (issue 5): after 50 steps with dead-code restarts on N ranks, the codebook
and its EMA buffers are bitwise identical on every rank. Every rank hashes its buffers after every
step and compares across ranks (quantizer.hash_check_every=1); the run counts mismatches in its
checkpoint and logs each one, and there must be none."""
import os

from harness import check, parse_args
from trainer_support import base_overrides, checkpoints, fmnist_test_split, load, train

args = parse_args(lambda ap: ap.add_argument("--np", type=int, required=True))
data = fmnist_test_split(args)
run_dir = os.path.join(args.scratch, "run")
p = train(args, args.np, run_dir, base_overrides(data, **{
    "run.steps": 50, "run.log_every": 25, "data.batch_size": 4, "quantizer.restart_every": 10,
    "quantizer.restart_threshold": 0.5, "quantizer.hash_check_every": 1}), timeout=400)
tensors, attrs = load(checkpoints(run_dir)[-1])
check(attrs["codebook/mismatches"] == 0, f"codebook mismatches: {attrs['codebook/mismatches']}")
check("differ between ranks" not in p.stderr, p.stderr[-2000:])
check(int(tensors["model/quantizer.restarts"][0]) > 0, "no dead-code restart happened")
print(f"ok ({int(tensors['model/quantizer.restarts'][0])} codes restarted, 50 hash checks)")
