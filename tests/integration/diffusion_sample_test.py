"""`tessera sample` and training sample previews (issue 14) with the real binary, on a tiny UNet
trained for a few steps on Fashion-MNIST's test split. Scenarios (--scenario):

- sample: 1 and 2 ranks write the same PNG and the same HDF5 images (noise keyed by sample
  index, chunks of --batch aligned to the index); the HDF5 file is a Tessera image file (N x H x
  W x C uint8) that `tessera train` reads as data; every sampler of the process runs; DDIM with
  eta 0 gives the same images twice, another seed other images; bad arguments exit 2 naming the
  flag.
- preview: a 2-rank run with comm.timeout = 2 s whose sample previews take 4 s longer on rank 0
  (debug.preview_sample_delay) still ends with exit 0, writes every samples-step-*.png, and no
  rank reports a timeout (the previews gather on their own communicator with a long deadline).
"""
import glob
import os

import h5py
import numpy as np

from harness import check, mpirun_cmd, parse_args, run, source_dir
from trainer_support import checkpoints, fmnist_test_split

args = parse_args(lambda ap: ap.add_argument("--scenario", required=True))
T = args.tessera
CONFIG = os.path.join(source_dir(), "configs", "ddpm_fmnist.yaml")
TINY = {
    "unet.ch": 8, "unet.ch_mult": "[1,2]", "unet.num_res_blocks": 1, "unet.attn_resolutions": "[]",
    "unet.mid_attention": "false", "unet.norm_groups": 4,
}


def overrides(data, **extra):
    o = {**TINY, "run.steps": 4, "run.log_every": 2, "run.image_every": 0,
         "run.eval_at_end": "false", "run.threads": 1, "data.train": data, "data.test": "",
         "data.batch_size": 8, "checkpoint.every": 0, "checkpoint.async": "false",
         "log.progress": "false", "comm.timeout": 60, "optim.warmup_steps": 0,
         "optim.schedule": "constant", "optim.ema": "[0.9]", "sample.steps": 4, "sample.n": 6}
    o.update(extra)
    return [f"{k}={v}" for k, v in o.items()]


def train(np_, run_dir, ovr, timeout=300):
    cmd = [T, "train", "--config", CONFIG, "--run-dir", run_dir, "--no-resume", *ovr]
    return run(mpirun_cmd(args, np_, *cmd) if np_ > 1 else cmd, timeout=timeout, check_rc=0)


def sample(np_, *argv, check_rc=0):
    cmd = [T, "sample", *argv]
    return run(mpirun_cmd(args, np_, *cmd) if np_ > 1 else cmd, timeout=300, check_rc=check_rc)


def images(path):
    with h5py.File(path, "r") as f:
        return f["images"][()]


def scenario_sample():
    data = fmnist_test_split(args)
    run_dir = os.path.join(args.scratch, "run")
    train(1, run_dir, overrides(data))
    ckpt = checkpoints(run_dir)[-1]
    out = {}
    for np_ in (1, 2):
        png = os.path.join(args.scratch, f"np{np_}.png")
        h5 = os.path.join(args.scratch, f"np{np_}.h5")
        p = sample(np_, "--checkpoint", ckpt, "--n", "10", "--steps", "5", "--batch", "3",
                   "--sampler", "ddim", "--seed", "3", "--out", png, "--h5", h5)
        check(os.path.getsize(png) > 100, f"{png} written")
        out[np_] = (images(h5), open(png, "rb").read())
        print(p.stderr.strip().splitlines()[-1])
    a, b = out[1][0], out[2][0]
    check(a.shape == (10, 28, 28, 1) and a.dtype == np.uint8, f"{a.shape} {a.dtype}")
    check(np.array_equal(a, b), f"1 vs 2 ranks: {np.count_nonzero(a != b)} pixels differ")
    check(out[1][1] == out[2][1], "1 vs 2 ranks: the PNGs differ")
    check(a.std() > 0, "the samples are not constant")
    print("ok: 1 and 2 ranks write the same 10 images and the same PNG")

    # DDIM eta 0 is deterministic (the 1-rank run again, batched differently); the seed matters.
    again = os.path.join(args.scratch, "again.h5")
    sample(1, "--checkpoint", ckpt, "--n", "10", "--steps", "5", "--batch", "3", "--sampler",
           "ddim", "--eta", "0", "--seed", "3", "--out", os.path.join(args.scratch, "again.png"),
           "--h5", again)
    check(np.array_equal(images(again), a), "DDIM eta 0: the same images twice")
    other = os.path.join(args.scratch, "other.h5")
    sample(1, "--checkpoint", ckpt, "--n", "10", "--steps", "5", "--batch", "3", "--seed", "4",
           "--out", os.path.join(args.scratch, "other.png"), "--h5", other)
    check(not np.array_equal(images(other), a), "another seed, other images")

    # Every Gaussian sampler, live weights; the samples are training data for `tessera train`.
    for name in ("ddpm", "ddim", "dpm++2m"):
        h5 = os.path.join(args.scratch, f"{name}.h5")
        sample(1, "--checkpoint", ckpt, "--n", "4", "--steps", "4", "--sampler", name, "--eta",
               "1", "--weights", "live", "--out", os.path.join(args.scratch, f"{name}.png"),
               "--h5", h5)
        x = images(h5)
        check(x.shape == (4, 28, 28, 1), f"{name}: {x.shape}")
    train(1, os.path.join(args.scratch, "on-samples"),
          overrides(os.path.join(args.scratch, "ddim.h5"), **{"run.steps": 1, "data.batch_size": 4}))

    png = os.path.join(args.scratch, "x.png")
    for argv, needle in [
        (["--sampler", "euler"], "--sampler"),
        (["--sampler", "bogus"], "--sampler"),
        (["--steps", "5000"], "--steps"),
        (["--guidance", "2"], "--guidance"),
        (["--eta", "-1"], "--eta"),
        (["--n", "0"], "--n"),
        (["--weights", "best"], "--weights"),
    ]:
        p = sample(1, "--checkpoint", ckpt, "--out", png, *argv, check_rc=2)
        check(needle in p.stderr, f"{argv}: '{needle}' not in {p.stderr}")
        print(f"exit 2: {p.stderr.strip().splitlines()[-1]}")
    print("ok")


def scenario_preview():
    data = fmnist_test_split(args)
    run_dir = os.path.join(args.scratch, "preview")
    p = train(2, run_dir, overrides(data, **{
        "run.steps": 10, "run.image_every": 5, "comm.timeout": 2,
        "debug.preview_sample_delay": 4}), timeout=200)
    grids = sorted(os.path.basename(g)
                   for g in glob.glob(os.path.join(run_dir, "samples", "samples-step-*.png")))
    check(grids == ["samples-step-00000005.png", "samples-step-00000010.png"], f"grids {grids}")
    check("timed out" not in p.stderr and "timeout" not in p.stderr.lower(), p.stderr[-3000:])
    print("ok")


{"sample": scenario_sample, "preview": scenario_preview}[args.scenario]()
