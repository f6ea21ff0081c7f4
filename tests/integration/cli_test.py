"""The command line: help for every subcommand, documented exit codes, clear config errors."""
import json
import os

from harness import check, parse_args, run, write

args = parse_args()
T = args.tessera

p = run([T, "--help"], check_rc=0)
for sub in ["train", "sample", "reconstruct", "convert", "eval", "bench", "export", "info"]:
    check(sub in p.stdout, f"--help does not list {sub}")
    run([T, sub, "--help"], check_rc=0)
check("75 preempted" in p.stdout, "--help documents exit codes")

run([T], check_rc=2)
p = run([T, "frobnicate"], check_rc=2)
check("unknown command 'frobnicate'" in p.stderr and "train" in p.stderr, p.stderr)
p = run([T, "trian", "--config", "x.yaml"], check_rc=2)
check("did you mean 'train'" in p.stderr, p.stderr)
run([T, "train"], check_rc=2)                       # --config is required
run([T, "bench", "fly", "--config", "x"], check_rc=2)
run([T, "train", "--config", "x", "--resume", "a", "--no-resume"], check_rc=2)

# A typo in a config: exit 2, the message names file, key and suggestion.
cfg = write(os.path.join(args.scratch, "typo.yaml"), "run:\n  steps: 3\noptim:\n  lrr: 0.1\n")
p = run([T, "train", "--config", cfg], check_rc=2)
check("unknown key 'optim.lrr'" in p.stderr and "did you mean 'optim.lr'" in p.stderr
      and "typo.yaml:4" in p.stderr, f"config typo message: {p.stderr}")
p = run([T, "train", "--config", cfg, "optim.lrr=1"], check_rc=2)
check("optim.lrr" in p.stderr, p.stderr)
p = run([T, "train", "--config", os.path.join(args.scratch, "missing.yaml")], check_rc=2)
check("missing.yaml" in p.stderr and "no such file" in p.stderr, p.stderr)

# tessera info names the BLAS LibTorch calls, and warns when it is the reference one.
p = run([T, "info"], check_rc=0)
check("BLAS        OpenBLAS" in p.stdout and "warning" not in p.stderr, p.stdout + p.stderr)
reference = "/usr/lib/x86_64-linux-gnu/blas/libblas.so.3"
if os.path.exists(reference):
    p = run([T, "info"], check_rc=0, env={"LD_PRELOAD": reference})
    check("reference (netlib)" in p.stdout and "reference BLAS" in p.stderr,
          p.stdout + p.stderr)

# bench train --profile writes a Chrome trace of the timed steps, op by op; other benchmarks
# refuse the flag.
repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
bench_cfg = os.path.join(repo, "configs", "bench", "vqvae_fmnist.yaml")
trace = os.path.join(args.scratch, "trace.json")
p = run([T, "bench", "train", "--config", bench_cfg, "--steps", "2", "--warmup", "1",
         "--profile", trace], check_rc=0, timeout=120)
line = json.loads(p.stdout.strip().splitlines()[-1])
check(line["bench"] == "train" and line["steps"] == 2 and line["params"] == 658625, p.stdout)
events = json.load(open(trace))
names = {e.get("name") for e in events}
check("aten::convolution_backward" in names and "aten::mkldnn_convolution" in names,
      f"trace lacks the step's convolutions: {sorted(n for n in names if n)[:20]}")
p = run([T, "bench", "data", "--config", bench_cfg, "--profile", trace], check_rc=2)
check("--profile" in p.stderr and "bench train" in p.stderr, p.stderr)

# A checkpoint that does not exist: exit 2, named (sample of a real VQ-VAE checkpoint answers
# "not available", exit 4: inference_test.py).
p = run([T, "sample", "--checkpoint", "c.h5", "--out", "x.png"], check_rc=2)
check("c.h5" in p.stderr, p.stderr)
print("ok")
