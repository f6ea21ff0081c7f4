"""Soak (issue 17): one train.sbatch job under the real local Slurm for at least --duration
seconds (default 630), preempted over and over: a 3-minute time limit with --signal=B:USR1@60,
so each segment gets USR1 after about 2 minutes, saves, exits 75, requeues itself and resumes.
Checkpoints every 25 steps (a second or two), written asynchronously, keep_last 3.

Sampled once a second, for every rank of every segment: resident memory (VmRSS) and open file
descriptors; the checkpoint directory's files. Checks:
  * after a segment's first 20 s (warm-up), its ranks' RSS stays within 16 MiB of the warm-up
    value (two checkpoints' worth of tensors; a leak per checkpoint written shows within the
    segment's 50+ saves) and their open fds within 2 of it; no segment starts higher than the
    first by more than 16 MiB;
  * never more than keep_last + 1 step-*.h5 files (the newest may be committed before the oldest
    is removed) and one .tmp; none left at the end, and every remaining checkpoint verifies;
  * every segment after the first resumes from exactly the step the previous one saved; the
    steps of all segments add up to the last step; data position (samples = step x global batch,
    epoch x dataset + consumed = samples) holds in every kept checkpoint.
The job is cancelled while pending after its last requeue; the cluster is stopped by pid.

    slurm_soak_test.py --tessera BIN --mpirun MPIRUN --scratch DIR [--duration S]
"""
import glob
import os
import re
import time

import harness
from harness import check
from real_slurm import LocalSlurm, read, verify_checkpoint
from trainer_support import base_overrides, checkpoints, fmnist_test_split

KEEP_LAST = 3
WARMUP_S = 20
RSS_SLACK = 16 << 20
FD_SLACK = 2
GLOBAL_BATCH = 16  # 2 ranks x 8
DATASET = 10000    # Fashion-MNIST test split


def job_ranks(job, slurm_conf):
    """{rank: pid} of the tessera processes of Slurm job `job` of the cluster at `slurm_conf`
    (other tests' clusters number their jobs from 1 too)."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() != "tessera":
                    continue
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
        except OSError:
            continue
        if env.get(b"SLURM_JOB_ID") == job.encode() and b"SLURM_PROCID" in env and \
                env.get(b"SLURM_CONF") == slurm_conf.encode():
            out[int(env[b"SLURM_PROCID"])] = int(pid)
    return out


def usage(pid):
    """(rss bytes, open fds) of a live process, None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmRSS:"))
        return rss, len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, StopIteration):
        return None


def main():
    def extra(ap):
        ap.add_argument("--duration", type=float, default=630)

    args = harness.parse_args(extra)
    data = fmnist_test_split(args)
    src = harness.source_dir()
    run_dir = os.path.join(args.scratch, "run")
    ckdir = os.path.join(run_dir, "checkpoints")
    overrides = base_overrides(data, **{
        "run.steps": 10 ** 7, "run.log_every": 25, "checkpoint.every": 25,
        "checkpoint.async": "true", "checkpoint.keep_last": KEEP_LAST})
    samples = {}  # (segment, rank, pid) -> [(seconds into the segment, rss, fds)]
    seg_start = {}
    max_h5 = max_tmp = 0

    with LocalSlurm("soak", args.scratch) as slurm:
        job = slurm.sbatch(
            ["--nodes=1", "--ntasks-per-node=2", "--cpus-per-task=1", "--gpus-per-node=0",
             "--time=3", "--signal=B:USR1@60", "--job-name=soak",
             f"--output={args.scratch}/soak-%j.out"],
            ["--config", os.path.join(src, "configs", "vqvae_fmnist.yaml"), "--run-dir", run_dir,
             *overrides], env={"TESSERA_BIN": args.tessera, "TESSERA_HOME": src})
        log = os.path.join(args.scratch, f"soak-{job}.out")
        t0 = time.monotonic()
        j = {}
        # Sample for --duration seconds, then on until the running segment has ended in a
        # requeue (at most 240 s more); the job is cancelled while it waits to start again.
        last = None
        while True:
            j = slurm.job(job)
            elapsed = time.monotonic() - t0
            if last is None and elapsed >= args.duration:
                last = int(j.get("Restarts", 0))
            if last is not None and j.get("JobState") == "PENDING" and \
                    int(j.get("Restarts", 0)) > last:
                break
            check(elapsed < args.duration + 240,
                  f"no requeue within 240 s after {args.duration} s\n{read(log)[-3000:]}")
            # SIGNALING: slurmctld has a --signal (USR1) pending for the running job, a
            # transient state of a healthy segment.
            check(j.get("JobState") in ("PENDING", "RUNNING", "SIGNALING", "COMPLETING",
                                        "REQUEUED"),
                  f"job {job} in state {j.get('JobState')}\n{read(log)[-4000:]}")
            segment = int(j.get("Restarts", 0))
            if j["JobState"] == "RUNNING":
                for rank, pid in job_ranks(job, slurm.env["SLURM_CONF"]).items():
                    u = usage(pid)
                    if u:
                        start = seg_start.setdefault((segment, pid), time.monotonic())
                        samples.setdefault((segment, rank, pid), []).append(
                            (time.monotonic() - start, *u))
            names = os.listdir(ckdir) if os.path.isdir(ckdir) else []
            max_h5 = max(max_h5, sum(n.endswith(".h5") for n in names))
            max_tmp = max(max_tmp, sum(n.endswith(".tmp") for n in names))
            time.sleep(1)
        slurm.cmd("scancel", job)
        j = slurm.wait_done(job, 60, log)
        segments = int(j["Restarts"])  # every started segment ended in a requeue
    text = read(log)
    elapsed = time.monotonic() - t0

    # Segments: each ends with USR1 -> save -> exit 75 -> requeue, the next resumes there.
    stops = [int(s) for s in re.findall(r"\[rank 0\] \[warning\] stop requested by a signal.*?"
                                        r"saving step (\d+)", text)]
    resumed = [int(s) for s in re.findall(r"resuming from .*step-(\d+)\.h5", text)]
    # A segment lasts 100-150 s (USR1 comes at a time-limit check ~60 s before the limit) plus
    # ~15 s until the requeued job runs again.
    check(segments >= max(2, int(args.duration // 160)),
          f"only {segments} segments in {elapsed:.0f} s")
    check(len(stops) == segments and text.count("requeueing job") == segments,
          f"{segments} segments, stops {stops}\n{text[-3000:]}")
    check(resumed == stops[:-1], f"saved at {stops}, resumed from {resumed}")
    firsts = [0] + resumed
    check(sum(b - a for a, b in zip(firsts, stops)) == stops[-1] and
          all(b > a for a, b in zip(firsts, stops)), f"step counters: {firsts} -> {stops}")

    names = os.listdir(ckdir)
    check(not [n for n in names if n.endswith(".tmp")], f".tmp left: {names}")
    check(max_h5 <= KEEP_LAST + 1 and max_tmp <= 1,
          f"checkpoint dir grew to {max_h5} checkpoints and {max_tmp} .tmp")
    kept = checkpoints(run_dir)
    check(len(kept) <= KEEP_LAST, f"kept {kept}")
    check(int(verify_checkpoint(kept[-1])["step"]) == stops[-1],
          f"newest checkpoint {kept[-1]}, last stop at {stops[-1]}")
    for path in kept:
        a = verify_checkpoint(path)
        check(a["samples"] == a["step"] * GLOBAL_BATCH and
              a["epoch"] * DATASET + a["consumed"] == a["samples"],
              f"{path}: data position {a['step']} {a['epoch']} {a['consumed']} {a['samples']}")
    check(not glob.glob(os.path.join(ckdir, "*.tmp")), ".tmp left")

    # Memory and descriptors per segment and rank.
    first_warm = {}
    worst_rss = worst_fd = 0
    report = []
    for (segment, rank, _), rows in sorted(samples.items()):
        warm = [r for r in rows if r[0] >= WARMUP_S]
        if len(warm) < 5:
            continue  # a segment cut short before its warm-up ended
        rss0, fd0 = warm[0][1], warm[0][2]
        d_rss = max(r[1] for r in warm) - rss0
        d_fd = max(r[2] for r in warm) - fd0
        worst_rss, worst_fd = max(worst_rss, d_rss), max(worst_fd, d_fd)
        first_warm.setdefault(rank, rss0)
        report.append(f"segment {segment} rank {rank}: {len(warm)} samples over "
                      f"{warm[-1][0] - warm[0][0]:.0f} s, RSS {rss0 >> 20} MiB +{d_rss >> 10} KiB,"
                      f" fds {fd0} +{d_fd}")
        check(d_rss <= RSS_SLACK, f"segment {segment} rank {rank}: RSS grew {d_rss >> 20} MiB "
              f"after warm-up: {[r[1] >> 20 for r in warm]}")
        check(d_fd <= FD_SLACK, f"segment {segment} rank {rank}: fds grew by {d_fd}: "
              f"{[r[2] for r in warm]}")
        check(rss0 <= first_warm[rank] + RSS_SLACK,
              f"segment {segment} rank {rank} starts at {rss0 >> 20} MiB, the first at "
              f"{first_warm[rank] >> 20} MiB")
    check(len(report) >= 2 * segments - 1,
          f"too few segments long enough to measure: {report}")
    print("\n".join(report))
    print(f"soak: {elapsed:.0f} s, {segments} segments, stops at {stops}; worst growth after "
          f"warm-up RSS {worst_rss >> 10} KiB (bound {RSS_SLACK >> 20} MiB), fds {worst_fd} "
          f"(bound {FD_SLACK}); checkpoint dir at most {max_h5} checkpoints + {max_tmp} .tmp")
    print("PASS", flush=True)


if __name__ == "__main__":
    main()
