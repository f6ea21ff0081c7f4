"""Latent diffusion end to end (issue 14) with the real binary, on a tiny VQ-VAE trained for a
few steps on Fashion-MNIST's test split:

- `tessera encode` under 1 and 2 ranks writes the same file: N x h x w x D uint8 latents, the
  labels, and the latent range and autoencoder as attributes; the 8-bit latents snap back to
  their own code vector at >= 99% of positions (the command counts and logs it);
- a diffusion run with `latent.autoencoder` trains on that file and `tessera sample` from it
  writes 28 x 28 x 1 images (decoded), the same under 1 and 2 ranks;
- errors: latents of another autoencoder, a mirrored latent file (data.hflip), a checkpoint
  without a latent space (a diffusion checkpoint), a latent file trained on as images (no
  latent.autoencoder), images of the wrong shape: each exits non-zero naming the setting or
  file.
"""
import os
import re

import h5py
import numpy as np

from harness import check, mpirun_cmd, parse_args, run, source_dir
from trainer_support import base_overrides, checkpoints, fmnist_test_split

args = parse_args()
T = args.tessera
SRC = source_dir()
VQ_SMALL = {"model.hidden": 16, "model.res_hidden": 8, "model.res_blocks": 1,
            "quantizer.codebook_size": 32, "quantizer.code_dim": 8, "run.steps": 12}
LDM_SMALL = {
    "unet.ch": 8, "unet.ch_mult": "[1]", "unet.num_res_blocks": 1, "unet.attn_resolutions": "[]",
    "unet.mid_attention": "false", "unet.norm_groups": 4, "data.image_size": 7,
    "data.channels": 8, "run.steps": 4, "run.log_every": 2, "run.image_every": 2,
    "run.eval_at_end": "false", "run.threads": 1, "data.test": "", "data.batch_size": 8,
    "checkpoint.every": 0, "checkpoint.async": "false", "log.progress": "false",
    "comm.timeout": 60, "optim.warmup_steps": 0, "optim.ema": "[0.9]", "sample.steps": 4,
    "sample.n": 6,
}


def tessera(np_, *argv, check_rc=0, timeout=300):
    cmd = [T, *argv]
    return run(mpirun_cmd(args, np_, *cmd) if np_ > 1 else cmd, timeout=timeout,
               check_rc=check_rc)


def train_vq(run_dir, seed):
    cfg = os.path.join(SRC, "configs", "vqvae_fmnist.yaml")
    o = base_overrides(data, **VQ_SMALL, **{"run.seed": seed})
    tessera(1, "train", "--config", cfg, "--run-dir", run_dir, "--no-resume", *o)


def train_ldm(run_dir, latents, autoencoder, np_=1, check_rc=0, **extra):
    cfg = os.path.join(SRC, "configs", "ldm_fmnist.yaml")
    o = {**LDM_SMALL, "data.train": latents, "latent.autoencoder": autoencoder, **extra}
    return tessera(np_, "train", "--config", cfg, "--run-dir", run_dir, "--no-resume",
                   *[f"{k}={v}" for k, v in o.items()], check_rc=check_rc)


def read(path):
    with h5py.File(path, "r") as f:
        d = f["images"]
        return d[()], f["labels"][()], dict(d.attrs)


data = fmnist_test_split(args)
vq_dir = os.path.join(args.scratch, "vq")
train_vq(vq_dir, 1234)
vq_ckpt = checkpoints(vq_dir)[-1]

# encode: 1 vs 2 ranks, the file's form, the recovered codes.
files = {}
for np_ in (1, 2):
    out = os.path.join(args.scratch, f"latents-np{np_}.h5")
    p = tessera(np_, "encode", "--checkpoint", os.path.join(vq_dir, "checkpoints"), "--data", data,
                "--out", out, "--n", "600", "--batch", "64")
    line = [l for l in p.stderr.splitlines() if "snap back" in l][-1]
    print(line)
    m = re.search(r"at ([0-9.]+)% of (\d+) positions", line)
    check(m is not None, f"no recovery figure in: {line}")
    check(float(m.group(1)) >= 99.0 and int(m.group(2)) == 600 * 49,
          f"codes recovered from the 8-bit latents: {m.group(1)}% of {m.group(2)}")
    files[np_] = read(out)
(a, la, attrs), (b, lb, _) = files[1], files[2]
check(a.shape == (600, 7, 7, 8) and a.dtype == np.uint8, f"latent file {a.shape} {a.dtype}")
check(np.array_equal(a, b) and np.array_equal(la, lb),
      f"1 vs 2 ranks: {np.count_nonzero(a != b)} bytes differ")
with h5py.File(data, "r") as f:
    check(np.array_equal(la, f["labels"][:600]), "the labels are the images' labels")
lo, hi = attrs["tessera_latent_lower"], attrs["tessera_latent_upper"]
check(lo.shape == (8,) and np.all(hi > lo), f"latent range attributes {lo} {hi}")
ae = attrs["tessera_latent_autoencoder"]
ae = ae.decode() if isinstance(ae, bytes) else ae
check(ae == vq_ckpt, f"autoencoder attribute {ae!r}, expected {vq_ckpt!r}")
check(0 < a.std() and a.min() >= 0, "latents are not constant")
print("ok: encode writes the same latents, labels and attributes under 1 and 2 ranks")

# Errors of encode.
p = tessera(1, "encode", "--checkpoint", vq_ckpt, "--data", os.path.join(args.scratch,
            "latents-np1.h5"), "--out", os.path.join(args.scratch, "x.h5"), check_rc=None)
check(p.returncode != 0 and "latents-np1.h5" in p.stderr,
      f"images of the wrong shape: exit {p.returncode}: {p.stderr[-400:]}")
p = tessera(1, "encode", "--checkpoint", vq_ckpt, "--data", data, "--out",
            os.path.join(args.scratch, "latents-np1.h5"), "--n", "10", check_rc=None)
check(p.returncode != 0 and "exists" in p.stderr, f"existing output: {p.stderr[-400:]}")
print("ok: encode rejects images of the wrong shape and an existing output")

# A latent diffusion run on those latents, its previews and `tessera sample`.
ldm_dir = os.path.join(args.scratch, "ldm")
train_ldm(ldm_dir, os.path.join(args.scratch, "latents-np1.h5"), os.path.join(vq_dir, "checkpoints"))
previews = sorted(f for f in os.listdir(os.path.join(ldm_dir, "samples")) if f.endswith(".png"))
check(len(previews) >= 1, f"sample previews: {previews}")
ldm_ckpt = checkpoints(ldm_dir)[-1]
imgs = {}
for np_ in (1, 2):
    h5 = os.path.join(args.scratch, f"samples-np{np_}.h5")
    tessera(np_, "sample", "--checkpoint", ldm_ckpt, "--n", "5", "--batch", "2", "--steps", "3",
            "--out", os.path.join(args.scratch, f"samples-np{np_}.png"), "--h5", h5)
    with h5py.File(h5, "r") as f:
        imgs[np_] = f["images"][()]
check(imgs[1].shape == (5, 28, 28, 1), f"decoded samples {imgs[1].shape}")
check(np.array_equal(imgs[1], imgs[2]), "1 vs 2 ranks: the decoded samples differ")
print("ok: latent diffusion trains, previews and samples 28x28x1 images, same on 1 and 2 ranks")

# Errors of latent training.
other_dir = os.path.join(args.scratch, "vq-other")
train_vq(other_dir, 99)
p = train_ldm(os.path.join(args.scratch, "bad1"), os.path.join(args.scratch, "latents-np1.h5"),
              checkpoints(other_dir)[-1], check_rc=None)
check(p.returncode != 0 and "data.train" in p.stderr and "encode the data again" in p.stderr,
      f"latents of another autoencoder: exit {p.returncode}: {p.stderr[-600:]}")
p = train_ldm(os.path.join(args.scratch, "bad2"), os.path.join(args.scratch, "latents-np1.h5"),
              vq_ckpt, check_rc=None, **{"data.hflip": "true"})
check(p.returncode == 2 and "data.hflip" in p.stderr, f"hflip: {p.returncode}: {p.stderr[-400:]}")
p = train_ldm(os.path.join(args.scratch, "bad3"), data, ldm_ckpt, check_rc=None,
              **{"data.image_size": 28, "data.channels": 1})
check(p.returncode != 0 and "latent.autoencoder" in p.stderr and "no quantised latent space" in
      p.stderr, f"a diffusion checkpoint as autoencoder: {p.returncode}: {p.stderr[-400:]}")
p = train_ldm(os.path.join(args.scratch, "bad4"), os.path.join(args.scratch, "latents-np1.h5"),
              "", check_rc=None, **{"data.channels": 0})
check(p.returncode == 2 and "latent.autoencoder" in p.stderr,
      f"a latent file without latent.autoencoder: {p.returncode}: {p.stderr[-400:]}")
print("ok: another autoencoder's latents, data.hflip, a checkpoint without latents and latents "
      "without an autoencoder are refused")
