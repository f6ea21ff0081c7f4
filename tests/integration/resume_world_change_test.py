"""Resuming on a different number of ranks (issue 6): 2 ranks consume 10 steps of the epoch and
stop; the run resumes on 3 ranks for 10 more. Across both runs no sample is repeated or skipped:
the samples seen are exactly the first 200 of the epoch's order (which a 1-rank run with one
global batch of 200 reads), and the changed global batch is warned about."""
import glob
import os

from harness import check, parse_args
from trainer_support import base_overrides, fmnist_test_split, train

args = parse_args()
data = fmnist_test_split(args)


def consumed(run_dir):
    out = []
    for path in sorted(glob.glob(os.path.join(run_dir, "indices-rank*.txt"))):
        for line in open(path):
            out.extend(int(x) for x in line.split()[1:])
    return out


run_dir = os.path.join(args.scratch, "run")
train(args, 2, run_dir, base_overrides(data, **{"run.steps": 10, "data.batch_size": 4,
                                                 "debug.dump_indices": "true"}))
check(len(consumed(run_dir)) == 80, "2 ranks x 4 x 10 steps")
p = train(args, 3, run_dir, base_overrides(data, **{"run.steps": 20, "data.batch_size": 4,
                                                     "debug.dump_indices": "true"}))
check("global batch changes from 8 to 12" in p.stderr, p.stderr[-2000:])
seen = consumed(run_dir)
check(len(seen) == 80 + 120, f"{len(seen)} samples")
check(len(set(seen)) == len(seen), "a sample was repeated")

reference = os.path.join(args.scratch, "reference")
train(args, 1, reference, base_overrides(data, **{"run.steps": 1, "data.batch_size": 200,
                                                   "debug.dump_indices": "true"}))
check(set(seen) == set(consumed(reference)), "a sample was skipped")
print("ok: 200 samples over 2 then 3 ranks, each once, the epoch's first 200")
