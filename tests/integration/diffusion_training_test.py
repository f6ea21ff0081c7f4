"""The diffusion task (issue 14) end to end with the real `tessera train` binary on Fashion-MNIST's
test split. Scenarios (--scenario):

- equivalence: 2 ranks x 4 images equal one process with 8 images in 2 micro-batches
  (comm.grad_accum=2) bit for bit after 5 steps: every parameter, Adam moment, EMA weight and the
  loss-aware sampler's history. The run exercises every keyed draw: loss-aware timesteps (T = 8,
  so the sampler leaves its uniform warm-up after the first step and importance weights apply),
  noise, keyed dropout, class labels with label dropout, random flips, the v objective with
  min-SNR weighting.
- flow_equivalence: the same for flow matching (logit-normal times, stratified).
- learns: 2 ranks train the ddpm_fmnist.yaml UNet for 60 steps; the loss of the last logging
  window is well below the first, and the loss by timestep quartile is reported.
- config_errors: an unknown key in `diffusion` (file and override), a bad choice and a bad
  relation exit 2 naming the key.
- resume: 6 steps in one go equal 3 steps plus a resume to 6 (checkpoint.every=3) bit for bit,
  at 2 ranks with loss-aware timesteps (the sampler's state is in the checkpoint) and an EMA.
"""
import json
import os

import numpy as np

from harness import check, mpirun_cmd, parse_args, run, source_dir, write
from trainer_support import checkpoints, fmnist_test_split, load

args = parse_args(lambda ap: ap.add_argument("--scenario", required=True))
CONFIG = os.path.join(source_dir(), "configs", "ddpm_fmnist.yaml")

# A tiny UNet (8 and 16 channels at 28 and 14 pixels, no attention): a step takes milliseconds.
TINY = {
    "unet.ch": 8, "unet.ch_mult": "[1,2]", "unet.num_res_blocks": 1, "unet.attn_resolutions": "[]",
    "unet.mid_attention": "false", "unet.norm_groups": 4, "unet.dropout": 0.1,
}


def overrides(data, **extra):
    o = {
        "run.steps": 5, "run.log_every": 5, "run.image_every": 0, "run.eval_at_end": "false",
        "run.threads": 1, "data.train": data, "data.test": "", "data.batch_size": 8,
        "checkpoint.every": 0, "checkpoint.async": "false", "log.progress": "false",
        "comm.timeout": 60, "optim.warmup_steps": 0, "optim.schedule": "constant",
    }
    o.update(extra)
    return [f"{k}={v}" for k, v in o.items()]


def train(np_, run_dir, ovr, check_rc=0, timeout=300):
    cmd = [args.tessera, "train", "--config", CONFIG, "--run-dir", run_dir, *ovr]
    if np_ > 1:
        cmd = mpirun_cmd(args, np_, *cmd)
    return run(cmd, timeout=timeout, check_rc=check_rc)


def final(run_dir):
    return load(checkpoints(run_dir)[-1])


def bitwise(a, b, what):
    check(set(a) == set(b), f"{what}: different tensors: {sorted(set(a) ^ set(b))[:5]}")
    unequal = [k for k in a if not np.array_equal(a[k], b[k])]
    check(not unequal, f"{what}: not bitwise equal: {unequal[:5]}")


def metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def equivalence(extra):
    data = fmnist_test_split(args)
    runs = {}
    for name, np_, batch, accum in (("ranks2", 2, 4, 1), ("accum2", 1, 8, 2)):
        run_dir = os.path.join(args.scratch, name)
        train(np_, run_dir, overrides(data, **{**TINY, **extra, "data.batch_size": batch,
                                               "comm.grad_accum": accum}))
        runs[name] = final(run_dir)
    (a, a_attrs), (b, b_attrs) = runs["ranks2"], runs["accum2"]
    check(a_attrs["step"] == b_attrs["step"] == 5, f"steps {a_attrs['step']} {b_attrs['step']}")
    check(a_attrs["samples"] == b_attrs["samples"] == 40, "40 global samples consumed by both")
    check(any(k.startswith("ema/") for k in a), "the EMA weights are checkpointed")
    bitwise(a, b, "2 ranks x 4 vs 1 x 8 in 2 micro-batches")
    print(f"ok: {len(a)} tensors bitwise equal (2 ranks x 4 vs 1 x 8 in 2 micro-batches)")
    return a


def scenario_equivalence():
    a = equivalence({
        "diffusion.timesteps": 8, "sample.steps": 8, "diffusion.timestep_sampling": "loss_aware",
        "diffusion.loss_aware_history": 1, "diffusion.prediction": "v",
        "diffusion.weighting": "min_snr", "unet.num_classes": 10, "unet.label_dropout": 0.3,
        "data.hflip": "true", "optim.ema": "[0.9]"})
    filled = a["timestep_sampler/filled"]
    check(filled.min() >= 1, f"the loss-aware sampler must have left its warm-up: {filled}")


def scenario_flow_equivalence():
    equivalence({
        "diffusion.process": "flow", "diffusion.time_distribution": "logit_normal",
        "diffusion.timestep_sampling": "stratified", "sample.sampler": "euler",
        "optim.ema": "[0.9]"})


def scenario_learns():
    data = fmnist_test_split(args)
    run_dir = os.path.join(args.scratch, "learns")
    train(2, run_dir, overrides(data, **{"run.steps": 60, "run.log_every": 10,
                                         "data.batch_size": 16, "optim.warmup_steps": 10,
                                         "optim.schedule": "cosine"}), timeout=500)
    lines = metrics(run_dir)
    check(len(lines) == 6, f"6 reports expected, got {len(lines)}")
    first, last = lines[0]["loss"], lines[-1]["loss"]
    rate = np.mean([m["steps_per_s"] for m in lines[1:]])
    print(f"loss over steps 0-9: {first:.4f}; over steps 50-59: {last:.4f}; "
          f"{rate:.2f} steps/s at 2 ranks x 16")
    check(last < 0.5 * first, f"the loss did not fall: {first} -> {last}")
    quartiles = [lines[-1].get(f"loss_q{q}") for q in range(1, 5)]
    check(all(q is not None for q in quartiles), f"loss by timestep quartile: {quartiles}")
    print("loss by timestep quartile at the end:", " ".join(f"{q:.4f}" for q in quartiles))
    check(lines[-1].get("model_tflops_per_device", 0) > 0, "model FLOP/s are reported")
    print("ok")


def scenario_config_errors():
    bad_yaml = os.path.join(args.scratch, "bad.yaml")
    write(bad_yaml, f"include: {CONFIG}\ndiffusion:\n  timestepz: 10\n")
    cases = [
        (["--config", bad_yaml], ["bad.yaml:3", "diffusion.timestepz", "diffusion.timesteps"]),
        (["--config", CONFIG, "diffusion.sampling=uniform"], ["diffusion.sampling"]),
        (["--config", CONFIG, "diffusion.schedule=cosinus"], ["diffusion.schedule", "cosine"]),
        (["--config", CONFIG, "diffusion.process=flow", "diffusion.timestep_sampling=loss_aware"],
         ["diffusion.timestep_sampling"]),
        (["--config", CONFIG, "unet.attn_resolutions=[5]"], ["unet.attn_resolutions"]),
        (["--config", CONFIG, "unet.ch_mult=[1,2.5]"], ["unet.ch_mult"]),
        (["--config", CONFIG, "sample.sampler=euler"], ["sample.sampler"]),
        (["--config", CONFIG, "model.hidden=64"], ["model"]),
    ]
    for i, (argv, needles) in enumerate(cases):
        p = run([args.tessera, "train", *argv, "--run-dir", os.path.join(args.scratch, f"r{i}")],
                timeout=60)
        check(p.returncode == 2, f"{argv[1:]}: exit {p.returncode}, expected 2\n{p.stderr}")
        for needle in needles:
            check(needle in p.stderr, f"{argv[1:]}: '{needle}' not in\n{p.stderr}")
        print(f"exit 2: {p.stderr.strip().splitlines()[-1]}")
    print("ok")


def scenario_resume():
    data = fmnist_test_split(args)
    extra = {**TINY, "diffusion.timesteps": 8, "sample.steps": 8,
             "diffusion.timestep_sampling": "loss_aware", "diffusion.loss_aware_history": 2,
             "optim.ema": "[0.9]", "optim.ema_warmup": "true", "checkpoint.every": 3,
             "data.batch_size": 4}
    straight = os.path.join(args.scratch, "straight")
    train(2, straight, overrides(data, **{**extra, "run.steps": 6}))
    resumed = os.path.join(args.scratch, "resumed")
    train(2, resumed, overrides(data, **{**extra, "run.steps": 3}))
    check(os.path.basename(checkpoints(resumed)[-1]) == "step-00000003.h5", "stopped at 3")
    p = train(2, resumed, overrides(data, **{**extra, "run.steps": 6}))
    check("resuming from" in p.stderr, "the second run did not resume")
    (a, a_attrs), (b, b_attrs) = final(straight), final(resumed)
    for key in ("step", "epoch", "samples"):
        check(a_attrs[key] == b_attrs[key], f"{key}: {a_attrs[key]} vs {b_attrs[key]}")
    check(a_attrs["step"] == 6, f"step {a_attrs['step']}")
    check(a["timestep_sampler/filled"].min() >= 1, "the sampler's history must matter")
    bitwise(a, b, "6 steps vs 3 + resume 3")
    print(f"ok: {len(a)} tensors bitwise equal after resume")


{"equivalence": scenario_equivalence, "flow_equivalence": scenario_flow_equivalence,
 "learns": scenario_learns, "config_errors": scenario_config_errors,
 "resume": scenario_resume}[args.scenario]()
