"""Helpers for tests that train with the real `tessera` binary: small data, runs, checkpoints."""
import glob
import os
import subprocess
import time

import h5py
import numpy as np

from harness import check, fail, mpirun_cmd, run


def fmnist_test_split(args):
    """Debian's Fashion-MNIST test split (10,000 images) converted into the scratch directory."""
    out = os.path.join(args.scratch, "fmnist-test.h5")
    if not os.path.exists(out):
        run([args.tessera, "convert", "fmnist", "--split", "test", "--out", out], timeout=60,
            check_rc=0)
    return out


def base_overrides(data, **extra):
    """A small, fast vqvae-fmnist run: per-rank batch 8, few logs, no images, no evaluation."""
    o = {
        "run.steps": 10, "run.log_every": 5, "run.image_every": 0, "run.eval_at_end": "false",
        "run.threads": 1, "data.train": data, "data.test": "", "data.batch_size": 8,
        "checkpoint.every": 0, "checkpoint.async": "false", "log.progress": "false",
        "comm.timeout": 60, "optim.warmup_steps": 0,
    }
    o.update(extra)
    return [f"{k}={v}" for k, v in o.items()]


def train_cmd(args, np_, run_dir, overrides, extra=()):
    cfg = os.path.join(os.environ.get("TESSERA_TEST_SOURCE_DIR", "."), "configs",
                       "vqvae_fmnist.yaml")
    cmd = [args.tessera, "train", "--config", cfg, "--run-dir", run_dir, *extra, *overrides]
    return mpirun_cmd(args, np_, *cmd) if np_ > 1 else cmd


def train(args, np_, run_dir, overrides, check_rc=0, timeout=300, extra=()):
    return run(train_cmd(args, np_, run_dir, overrides, extra), timeout=timeout, check_rc=check_rc)


def checkpoints(run_dir):
    return sorted(glob.glob(os.path.join(run_dir, "checkpoints", "step-*.h5")))


def load(path):
    """(tensors, attrs) of a checkpoint as numpy arrays, as a Python user reads it."""
    tensors, attrs = {}, {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                tensors[name] = obj[()]
        f.visititems(visit)
        for k, v in f.attrs.items():
            attrs[k] = v.decode() if isinstance(v, bytes) else v
    return tensors, attrs


def rel_diff(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    denom = max(np.linalg.norm(b), 1e-12)
    return float(np.linalg.norm(a - b) / denom)


def wait_for(predicate, timeout, what):
    """Polls predicate() until true; fails after `timeout` seconds naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    fail(f"timed out after {timeout}s waiting for {what}")


def start(cmd, log_path, env=None):
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    log = open(log_path, "w")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=full_env,
                            start_new_session=True), log


def rank_pids(mpirun_pid):
    """{rank: pid} of the processes mpirun started (read from their environment)."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid != mpirun_pid:
                continue
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
            if b"OMPI_COMM_WORLD_RANK" in env:
                out[int(env[b"OMPI_COMM_WORLD_RANK"])] = int(pid)
        except (OSError, ValueError, IndexError):
            continue
    return out


def kill_group(proc):
    try:
        os.killpg(proc.pid, 9)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)
