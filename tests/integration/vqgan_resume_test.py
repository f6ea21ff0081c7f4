"""SIGKILL and resume of a VQGAN run (issue 13): 2 ranks train a tiny vqgan-fmnist (EMA codebook,
synchronous BatchNorm, discriminator from step 6, lazy R1 every 3 steps); another run of the same
configuration is killed with SIGKILL once its step-10 checkpoint exists and is resumed to the end.
Both optimizers' state, the autoencoder, the codebook, the discriminator and its BatchNorm
statistics end bitwise equal to the uninterrupted run's."""
import os

import numpy as np

from harness import check, parse_args, run
from trainer_support import base_overrides, checkpoints, fmnist_test_split, kill_group, load, \
    start, wait_for

args = parse_args()
data = fmnist_test_split(args)
CFG = os.path.join(os.environ.get("TESSERA_TEST_SOURCE_DIR", "."), "configs", "vqgan_fmnist.yaml")
STEPS = 80

o = {k: v for k, v in (s.split("=", 1) for s in base_overrides(data))}
o.pop("optim.warmup_steps")
o.update({"model.ch": 8, "model.ch_mult": "[1,2]", "model.attn_resolutions": "[]",
          "model.mid_attention": "false", "model.z_channels": 8, "model.embed_dim": 8,
          "model.norm_groups": 4, "quantizer.codebook_size": 32, "discriminator.ndf": 8,
          "discriminator.n_layers": 1, "optim.generator.warmup_steps": 5,
          "loss.disc_start": 6, "loss.r1_gamma": 1.0, "loss.r1_every": 3,
          "run.steps": STEPS, "run.log_every": 10, "checkpoint.every": 5,
          "checkpoint.async": "true", "data.batch_size": 4})
overrides = [f"{k}={v}" for k, v in o.items()]


def cmd(run_dir):
    return [args.mpirun, "-np", "2", "--oversubscribe", "--bind-to", "none", args.tessera, "train",
            "--config", CFG, "--run-dir", run_dir, *overrides]


straight = os.path.join(args.scratch, "straight")
run(cmd(straight), timeout=300, check_rc=0)

interrupted = os.path.join(args.scratch, "interrupted")
proc, log = start(cmd(interrupted), os.path.join(args.scratch, "a.log"))
step10 = os.path.join(interrupted, "checkpoints", "step-00000010.h5")
try:
    wait_for(lambda: os.path.exists(step10) or proc.poll() is not None, 120, "step 10")
    check(proc.poll() is None, "the run finished before it could be killed")
finally:
    kill_group(proc)  # SIGKILL to mpirun and every rank
    log.close()
killed_at = max(int(os.path.basename(p)[5:13]) for p in checkpoints(interrupted))
check(killed_at < STEPS, f"killed too late (checkpoint {killed_at})")
p = run(cmd(interrupted), timeout=300, check_rc=0)
check("resuming from" in p.stderr, "the second run did not resume")

a, a_attrs = load(checkpoints(straight)[-1])
b, b_attrs = load(checkpoints(interrupted)[-1])
check(set(a) == set(b), f"different tensors: {set(a) ^ set(b)}")
check(any(k.startswith("discriminator/") for k in a) and
      any(k.startswith("optim/discriminator/") for k in a), f"no discriminator state: {sorted(a)}")
different = [k for k in a if not np.array_equal(a[k], b[k])]
check(not different, f"not bitwise equal after resume from step {killed_at}: {different[:5]}")
for key in ("step", "optim/generator/steps", "optim/discriminator/steps"):
    check(a_attrs[key] == b_attrs[key], f"{key}: {a_attrs[key]} vs {b_attrs[key]}")
check(a_attrs["optim/discriminator/steps"] == STEPS - 6, f"{a_attrs}")
print(f"ok: {len(a)} tensors bitwise equal (killed after checkpoint {killed_at})")
