"""Inference through the task a checkpoint names (issue 12): eval, reconstruct, export and sample
read the task and its stored configuration from the checkpoint; --weights ema uses the weight
EMA (checked against the checkpoint's own EMA tensors), live the live weights; a task that cannot
do something answers "not available" (exit 4)."""
import json
import os
import struct

import numpy as np

from harness import check, parse_args, run
from trainer_support import base_overrides, checkpoints, fmnist_test_split, load, train

args = parse_args()
T = args.tessera
data = fmnist_test_split(args)
run_dir = os.path.join(args.scratch, "ema-run")
train(args, 1, run_dir, base_overrides(data, **{"run.steps": 12, "optim.ema": "[0.9]",
                                                "optim.lr": 1e-3}), extra=("--no-resume",))
ckpt = checkpoints(run_dir)[-1]
tensors, attrs = load(ckpt)
check(attrs.get("task") == "vqvae", f"stored task name: {attrs.get('task')}")


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        body = f.read()
    meta = header.pop("__metadata__", {})
    out = {}
    for name, h in header.items():
        a, b = h["data_offsets"]
        out[name] = np.frombuffer(body[a:b], dtype=np.float32 if h["dtype"] == "F32" else np.uint8)
    return out, meta


# export: the default (EMA, since the run kept one) and --weights ema hold the EMA tensors;
# --weights live the live ones.
ema_name = "ema/model/0.9/encoder.0.weight"
check(ema_name in tensors and "model/encoder.0.weight" in tensors, sorted(tensors)[:8])
check(not np.array_equal(tensors[ema_name], tensors["model/encoder.0.weight"]),
      "EMA and live weights differ after 12 steps")
for choice, source in [(None, ema_name), ("ema", ema_name), ("live", "model/encoder.0.weight")]:
    out = os.path.join(args.scratch, f"export-{choice}.safetensors")
    cmd = [T, "export", "--checkpoint", ckpt, "--out", out]
    if choice:
        cmd += ["--weights", choice]
    run(cmd, check_rc=0)
    exported, meta = read_safetensors(out)
    check(np.array_equal(exported["encoder.0.weight"], tensors[source].ravel()),
          f"export --weights {choice}: encoder.0.weight is not {source}")
    check(meta.get("weights") == ("live" if choice == "live" else "ema 0.9"), meta.get("weights"))

# eval reports which weights it used, and the two give different (finite) results.
results = {}
for choice in ["ema", "live"]:
    p = run([T, "eval", "--checkpoint", ckpt, "--data", data, "--n", "256", "--weights", choice],
            check_rc=0)
    r = json.loads(p.stdout)
    check(r["task"] == "vqvae" and r["weights"] == ("ema 0.9" if choice == "ema" else "live"), r)
    results[choice] = r
check(results["ema"]["mse"] != results["live"]["mse"], f"eval results {results}")
p = run([T, "eval", "--checkpoint", ckpt, "--data", data, "--n", "64"], check_rc=0)
check(json.loads(p.stdout)["weights"] == "ema 0.9", "eval defaults to the EMA")

# reconstruct writes its grid; sample is not available for a VQ-VAE (exit 4, names the task).
png = os.path.join(args.scratch, "recon.png")
run([T, "reconstruct", "--checkpoint", ckpt, "--data", data, "--out", png, "--weights", "live"],
    check_rc=0)
check(os.path.getsize(png) > 100, "reconstruction grid written")
p = run([T, "sample", "--checkpoint", ckpt, "--out", os.path.join(args.scratch, "s.png")],
        check_rc=4)
check("task 'vqvae'" in p.stderr and "not available" in p.stderr, p.stderr)

# A run without an EMA: --weights ema is an input error naming the checkpoint; default is live.
plain = os.path.join(args.scratch, "plain-run")
train(args, 1, plain, base_overrides(data, **{"run.steps": 2}), extra=("--no-resume",))
plain_ckpt = checkpoints(plain)[-1]
p = run([T, "eval", "--checkpoint", plain_ckpt, "--data", data, "--n", "32", "--weights", "ema"],
        check_rc=2)
check("no weight EMA" in p.stderr and os.path.basename(plain_ckpt) in p.stderr, p.stderr)
p = run([T, "eval", "--checkpoint", plain_ckpt, "--data", data, "--n", "32"], check_rc=0)
check(json.loads(p.stdout)["weights"] == "live", p.stdout)
print("ok")
