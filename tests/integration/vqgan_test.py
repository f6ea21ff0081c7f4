"""VQGAN task (issue 13) through the real binary on Fashion-MNIST with a tiny model:
- 2 ranks x 4 train the same generator and discriminator as 1 process x 8 (synchronous BatchNorm
  in the discriminator, adaptive weight from gradients averaged over ranks) within the bound below;
- before loss.disc_start the discriminator's optimizer never steps and the adversarial terms are
  absent from metrics.jsonl; after it, they are there and the discriminator steps every step;
- the reconstruction loss falls over a short run, the discriminator's accuracy after disc_start
  stays within [0.6, 0.97] (neither chance nor certainty), and eval/reconstruct work on the
  checkpoint;
- `bench train` reports the communication and its hidden fraction of each reducer."""
import json
import os

from harness import check, parse_args, run
from trainer_support import base_overrides, checkpoints, fmnist_test_split, load, rel_diff, train

args = parse_args()
data = fmnist_test_split(args)
CFG = os.path.join(os.environ.get("TESSERA_TEST_SOURCE_DIR", "."), "configs", "vqgan_fmnist.yaml")


def overrides(**extra):
    o = {k: v for k, v in (s.split("=", 1) for s in base_overrides(data))}
    o.pop("optim.warmup_steps")
    o.update({"model.ch": 8, "model.ch_mult": "[1,2]", "model.attn_resolutions": "[]",
              "model.mid_attention": "false", "model.z_channels": 8, "model.embed_dim": 8,
              "model.norm_groups": 4, "quantizer.codebook_size": 32, "discriminator.ndf": 8,
              "discriminator.n_layers": 1, "optim.generator.warmup_steps": 0,
              "optim.generator.schedule": "constant", "run.log_every": 2})
    o.update(extra)
    return [f"{k}={v}" for k, v in o.items()]


def vqgan(np_, run_dir, ovr, check_rc=0):
    cmd = [args.tessera, "train", "--config", CFG, "--run-dir", run_dir, *ovr]
    if np_ > 1:
        cmd = [args.mpirun, "-np", str(np_), "--oversubscribe", "--bind-to", "none", *cmd]
    return run(cmd, timeout=300, check_rc=check_rc)


def final(np_, batch, name, **extra):
    run_dir = os.path.join(args.scratch, name)
    vqgan(np_, run_dir, overrides(**{"data.batch_size": batch, "run.steps": 6,
                                     "loss.disc_start": 2, **extra}))
    return load(checkpoints(run_dir)[-1])[0], run_dir


one, _ = final(1, 8, "one")
two, two_dir = final(2, 4, "two")
worst = max((rel_diff(two[k], one[k]), k) for k in one
            if one[k].size and (k.startswith("generator/") or k.startswith("discriminator/")))
print(f"2 ranks x 4 vs 1 x 8 after 6 steps: worst relative difference {worst[0]:.3g} ({worst[1]})")
check(worst[0] <= 1e-4, f"2 ranks differ from 1 process: {worst}")

# disc_start: steps 0-1 without the discriminator, 2-5 with it.
lines = [json.loads(l) for l in open(os.path.join(two_dir, "metrics.jsonl"))]
check(len(lines) == 3, f"{len(lines)} lines")
check(not {"gen", "disc", "lambda", "discriminator/applied"} & set(lines[0]), str(lines[0]))
for line in lines[1:]:
    check(line["discriminator/applied"] == 2 and line["generator/applied"] == 2
          and "lambda" in line and "d_accuracy" in line, str(line))
_, attrs = load(checkpoints(two_dir)[-1])
check(attrs["optim/discriminator/steps"] == 4, f"discriminator steps {attrs}")
_, late_dir = final(1, 8, "late", **{"loss.disc_start": 100})
_, late_attrs = load(checkpoints(late_dir)[-1])
check(late_attrs["optim/discriminator/steps"] == 0 and late_attrs["optim/generator/steps"] == 6,
      f"before disc_start the discriminator must not step: {late_attrs}")

# A short run: the reconstruction loss falls, and after disc_start the discriminator's accuracy
# (the mean of the fractions of real logits > 0 and fake logits < 0) leaves chance but stays
# below certainty: at most 0.97 on every logged interval after disc_start, at least 0.6 from
# 40 discriminator steps on (measured: 0.55 at step 30, 0.62, 0.67, 0.73, 0.76, 0.77 at 80).
run_dir = os.path.join(args.scratch, "learn")
vqgan(2, run_dir, overrides(**{"data.batch_size": 8, "run.steps": 80, "run.log_every": 10,
                               "loss.disc_start": 20, "optim.discriminator.lr": 1e-3}))
lines = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl"))]
check(lines[-1]["rec"] < 0.9 * lines[0]["rec"], f"rec {lines[0]['rec']} -> {lines[-1]['rec']}")
accuracy = [(l["step"], l["d_accuracy"]) for l in lines if "d_accuracy" in l]
print(f"discriminator accuracy after disc_start: {accuracy}")
check(len(accuracy) == 6, str(accuracy))
check(all(a <= 0.97 for _, a in accuracy), f"the discriminator wins outright: {accuracy}")
check(all(a >= 0.6 for s, a in accuracy if s >= 60), f"the discriminator stays at chance: {accuracy}")
ckpt = checkpoints(run_dir)[-1]
p = run([args.tessera, "eval", "--checkpoint", ckpt, "--data", data, "--n", "64"],
        timeout=120, check_rc=0)
check("psnr" in p.stdout, p.stdout)

# bench train at 2 ranks reports each reducer (generator, discriminator) beside the total.
bench_ovr = [x for x in overrides(**{"loss.disc_start": 0}) if not x.startswith("run.")]
p = run([args.mpirun, "-np", "2", "--oversubscribe", "--bind-to", "none", args.tessera, "bench",
         "train", "--config", CFG, "--steps", "2", "--warmup", "1", *bench_ovr, "run.threads=1"],
        timeout=300, check_rc=0)
bench = json.loads(p.stdout.strip().splitlines()[-1])
for name in ("generator", "discriminator"):
    for key in ("comm_seconds_per_step_", "comm_hidden_fraction_"):
        check(key + name in bench, f"{key}{name} missing: {bench}")
    check(0 <= bench["comm_hidden_fraction_" + name] <= 1, str(bench))
print("bench train, 2 ranks: hidden fraction generator {:.3f}, discriminator {:.3f}".format(
    bench["comm_hidden_fraction_generator"], bench["comm_hidden_fraction_discriminator"]))
print("ok")
