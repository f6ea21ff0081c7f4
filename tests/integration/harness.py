"""Shared plumbing for integration tests that drive the real `tessera` binary.

Every script is called by CTest as: script.py --tessera BIN --mpirun MPIRUN --scratch DIR [...]
and exits non-zero on the first failed check. Subprocesses always run with a timeout.
"""
import argparse
import os
import shutil
import subprocess
import sys


def parse_args(extra=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--tessera", required=True)
    ap.add_argument("--mpirun", required=True)
    ap.add_argument("--scratch", required=True)
    if extra:
        extra(ap)
    args = ap.parse_args()
    shutil.rmtree(args.scratch, ignore_errors=True)
    os.makedirs(args.scratch)
    return args


def source_dir():
    return os.environ.get("TESSERA_TEST_SOURCE_DIR",
                          os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))


def mpirun_cmd(args, np, *cmd):
    return [args.mpirun, "-np", str(np), "--oversubscribe", "--bind-to", "none", *cmd]


def run(cmd, timeout=60, env=None, check_rc=None, cwd=None):
    """Runs cmd; returns CompletedProcess (text). check_rc: expected exit code or None."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env,
                           cwd=cwd)
    except subprocess.TimeoutExpired as e:
        fail(f"timed out after {timeout}s: {' '.join(cmd)}\nstdout: {e.stdout}\nstderr: {e.stderr}")
    if check_rc is not None and p.returncode != check_rc:
        fail(f"exit code {p.returncode}, expected {check_rc}: {' '.join(cmd)}\n"
             f"stdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr, flush=True)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path
