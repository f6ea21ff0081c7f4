"""A real one-node Slurm for integration tests (launch/slurm/local_cluster.sh) and helpers to
submit Tessera's batch scripts to it and follow their jobs.

    # exits 77 (CTest: skipped) where Slurm cannot run
    with LocalSlurm("name", args.scratch) as slurm:
        job = slurm.sbatch(["--time=1"], script_args, env={...})
        slurm.wait_for(job, lambda j: j["JobState"] == "COMPLETED", 120, "completion")

The daemons are started by the script and always stopped by pid when the block ends (also on a
failed check); a cluster left behind by a killed test is stopped before the next start.
"""
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
import zlib

import h5py
import numpy as np

import harness

SKIP = 77


def cluster_script():
    return os.path.join(harness.source_dir(), "launch", "slurm", "local_cluster.sh")


def skip(reason):
    print(f"SKIP: {reason}", flush=True)
    sys.exit(SKIP)


class LocalSlurm:
    def __init__(self, name, scratch, cpus=8):
        # Short (munge's socket lives here: 108-byte limit) and fixed per test and build tree, so
        # that a rerun finds and stops what a killed run left, while the same test of another
        # checkout may run at the same time.
        tag = hashlib.sha1(os.path.abspath(scratch).encode()).hexdigest()[:8]
        self.dir = f"/tmp/tessera-slurm-{name}-{tag}"
        self.cpus = cpus
        self.env = dict(os.environ, SLURM_CONF=os.path.join(self.dir, "slurm.conf"))
        self.started = False

    def __enter__(self):
        if os.geteuid() != 0:
            skip("starting slurmctld/slurmd needs root")
        missing = [p for p in ("munged", "slurmctld", "slurmd", "sbatch", "srun", "scontrol")
                   if not shutil.which(p)]
        if missing:
            skip(f"not installed: {missing} (launch/install_deps.sh installs Slurm and munge)")
        if os.path.exists(os.path.join(self.dir, "slurm.conf")):
            subprocess.run([cluster_script(), "stop", self.dir], capture_output=True, timeout=120)
        shutil.rmtree(self.dir, ignore_errors=True)
        p = subprocess.run([cluster_script(), "start", self.dir, str(self.cpus)],
                           capture_output=True, text=True, timeout=120)
        self.started = True
        if p.returncode != 0:
            self.stop()
            harness.fail(f"local_cluster.sh start failed ({p.returncode}):\n{p.stdout}{p.stderr}"
                         f"\n{self.logs()}")
        print(p.stdout.strip(), flush=True)
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def stop(self):
        if not self.started:
            return
        self.started = False
        p = subprocess.run([cluster_script(), "stop", self.dir], capture_output=True, text=True,
                           timeout=180)
        if p.returncode != 0:
            print(f"local_cluster.sh stop: {p.stdout}{p.stderr}", file=sys.stderr, flush=True)

    def logs(self, tail=3000):
        out = []
        for name in ("slurmctld.log", "slurmd.log"):
            path = os.path.join(self.dir, name)
            if os.path.exists(path):
                with open(path, errors="replace") as f:
                    out.append(f"--- {name}\n" + f.read()[-tail:])
        return "\n".join(out)

    def cmd(self, *argv, timeout=60, check=True):
        p = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                           env=self.env)
        if check and p.returncode != 0:
            harness.fail(f"{' '.join(argv)} exited {p.returncode}:\n{p.stdout}{p.stderr}")
        return p

    def sbatch(self, sbatch_args, script_args, env=None, script=None):
        """Submits train.sbatch (or `script`) and returns the job id."""
        script = script or os.path.join(harness.source_dir(), "launch", "slurm", "train.sbatch")
        exports = ",".join(["ALL"] + [f"{k}={v}" for k, v in (env or {}).items()])
        p = self.cmd("sbatch", "--parsable", f"--export={exports}", *sbatch_args, script,
                     *script_args)
        return p.stdout.strip().split(";")[0]

    def job(self, job_id):
        """scontrol's view of a job as a dict (JobState, Restarts, ExitCode, ...)."""
        p = self.cmd("scontrol", "show", "job", "--oneliner", job_id, check=False)
        if p.returncode != 0:
            return {}
        fields = {}
        for m in re.finditer(r"(\w[\w/:]*)=(\S*)", p.stdout):
            fields.setdefault(m.group(1), m.group(2))
        return fields

    def wait_for(self, job_id, predicate, timeout, what, log=None):
        """Polls the job every 0.2 s until predicate(job dict) holds; fails after timeout."""
        deadline = time.monotonic() + timeout
        j = {}
        while time.monotonic() < deadline:
            j = self.job(job_id)
            if j and predicate(j):
                return j
            time.sleep(0.2)
        extra = read(log)[-4000:] if log else ""
        harness.fail(f"job {job_id}: timed out after {timeout}s waiting for {what}; last state "
                     f"{j.get('JobState')} restarts {j.get('Restarts')}\n{extra}\n{self.logs()}")

    def wait_done(self, job_id, timeout, log=None):
        """Waits until the job reached a final state; returns its dict."""
        final = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"}
        return self.wait_for(job_id, lambda j: j["JobState"] in final, timeout,
                             "a final state", log)


def read(path, default=""):
    if not path or not os.path.exists(path):
        return default
    with open(path, errors="replace") as f:
        return f.read()


def verify_checkpoint(path):
    """Checks every CRC-32 Tessera records (trainer/checkpoint/checkpoint_file.h) as an outside
    reader would; returns the root attributes. Fails naming the first mismatch."""
    with h5py.File(path, "r") as f:
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
        manifest = attrs["tessera_manifest"].rstrip("\0")
        lines = manifest.splitlines()
        harness.check(lines and lines[-1].startswith("end "), f"{path}: no manifest end")
        body = manifest[:manifest.rindex("end ")].encode()
        harness.check(int(lines[-1].split()[1], 16) == zlib.crc32(body),
                      f"{path}: manifest CRC mismatch")
        for line in lines[1:-1]:
            kind, crc, name = line.split(" ", 2)
            if kind != "tensor":
                continue
            ds = f[name]
            data = np.ascontiguousarray(ds[()])
            raw = data.astype(data.dtype.newbyteorder("<"), copy=False).tobytes()
            got = zlib.crc32(raw) if data.size else 0
            harness.check(got == int(crc, 16), f"{path}: tensor {name} CRC mismatch")
    return attrs


def log_times(text, pattern):
    """Timestamps (seconds since the epoch) of log lines matching `pattern`, in order. Both
    Tessera's log and run_tessera.sh's start with [YYYY-mm-dd HH:MM:SS.mmm]."""
    out = []
    for line in text.splitlines():
        m = re.match(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3})\]", line)
        if m and re.search(pattern, line):
            out.append(time.mktime(time.strptime(m.group(1)[:19], "%Y-%m-%d %H:%M:%S")) +
                       float(m.group(1)[19:]))
    return out
