"""launch/slurm/train.sbatch under a real Slurm on this host (issue 17).

launch/slurm/local_cluster.sh starts munged, slurmctld and slurmd (one node, 8 CPUs offered) and
stops them by pid at the end. Then:
  * `srun --mpi=pmix -n 2 tessera info` sees 2 ranks with local ranks 0 and 1;
  * `sbatch train.sbatch` trains 2 tasks to the end (job COMPLETED, exit 0:0);
  * the same training in a job with a 1-minute limit and --signal=B:USR1@59: Slurm sends USR1
    before the limit, every rank saves, the job exits 75, requeues itself (Restarts grows) and
    resumes, as often as needed, until it completes; each segment resumes from the checkpoint the
    previous one saved, and the final checkpoint equals the uninterrupted job's bitwise (tensors,
    step, epoch, consumed, samples);
  * `scancel` of a running job leaves the newest checkpoint intact (CRCs verify) and the next
    submission resumes from it;
  * TESSERA_MAX_REQUEUES=1: the second USR1 ends the job (exit 75) without a requeue.
Prints the time from USR1 to exit 75 and from the requeue to the first resumed step.

    slurm_real_test.py --tessera BIN --mpirun MPIRUN --scratch DIR
"""
import glob
import json
import os
import re

import numpy as np

import harness
from harness import check
from real_slurm import LocalSlurm, log_times, read, verify_checkpoint
from trainer_support import base_overrides, checkpoints, fmnist_test_split, load

STEPS = 600  # long enough that the first USR1 (about 10-35 s in) comes before the end


def main():
    args = harness.parse_args()
    data = fmnist_test_split(args)
    src = harness.source_dir()
    config = os.path.join(src, "configs", "vqvae_fmnist.yaml")
    env = {"TESSERA_BIN": args.tessera, "TESSERA_HOME": src}

    def submit(slurm, name, run_dir, overrides, extra_sbatch=(), extra_env=None):
        sb = ["--nodes=1", "--ntasks-per-node=2", "--cpus-per-task=1", "--gpus-per-node=0",
              f"--job-name={name}", f"--output={args.scratch}/{name}-%j.out", *extra_sbatch]
        job = slurm.sbatch(sb, ["--config", config, "--run-dir", run_dir, *overrides],
                           env={**env, **(extra_env or {})})
        return job, os.path.join(args.scratch, f"{name}-{job}.out")

    with LocalSlurm("real", args.scratch) as slurm:
        # srun with PMIx: two ranks that know their place on the node.
        p = slurm.cmd("srun", "--mpi=pmix", "-n", "2", args.tessera, "info", timeout=120)
        ranks = sorted((json.loads(l.strip()) for l in p.stdout.splitlines()
                        if l.strip().startswith("{\"rank\"")), key=lambda r: r["rank"])
        check([(r["rank"], r["size"], r["local_rank"], r["local_size"]) for r in ranks] ==
              [(0, 2, 0, 2), (1, 2, 1, 2)], f"srun tessera info:\n{p.stdout}")
        print("srun --mpi=pmix -n 2 tessera info: 2 ranks", flush=True)

        # scancel first (short): the newest checkpoint survives, the next job resumes from it.
        cancel_dir = os.path.join(args.scratch, "cancel")
        job, log = submit(slurm, "cancel", cancel_dir,
                          base_overrides(data, **{"run.steps": 100000, "checkpoint.every": 20}))
        slurm.wait_for(job, lambda j: j["JobState"] == "RUNNING" and
                       len(checkpoints(cancel_dir)) >= 2, 180, "two checkpoints", log)
        slurm.cmd("scancel", job)
        j = slurm.wait_done(job, 120, log)
        check(j["JobState"] == "CANCELLED", f"scancel: state {j['JobState']}")
        saved = checkpoints(cancel_dir)
        check(saved, "no checkpoint after scancel")
        last = int(verify_checkpoint(saved[-1])["step"])
        for path in saved:
            verify_checkpoint(path)
        job2, log2 = submit(slurm, "cancel-resume", cancel_dir,
                            base_overrides(data, **{"run.steps": last + 10,
                                                    "checkpoint.every": 20}))
        j = slurm.wait_done(job2, 300, log2)
        text = read(log2)
        check(j["JobState"] == "COMPLETED" and j["ExitCode"] == "0:0",
              f"resume after scancel: {j['JobState']} {j['ExitCode']}\n{text[-3000:]}")
        check(f"resuming from {os.path.join(cancel_dir, 'checkpoints', f'step-{last:08d}.h5')}"
              in text, f"did not resume from step {last}:\n{text[-3000:]}")
        check(int(verify_checkpoint(checkpoints(cancel_dir)[-1])["step"]) == last + 10,
              "final step after resume")
        check(not glob.glob(os.path.join(cancel_dir, "checkpoints", "*.tmp")), ".tmp left")
        print(f"scancel: checkpoint of step {last} intact, next job resumed from it", flush=True)

        # The same run three ways, at once: uninterrupted; with a 1-minute limit (USR1, exit 75,
        # requeue, resume until done); with a 1-minute limit and at most one requeue.
        o = base_overrides(data, **{"run.steps": STEPS, "run.log_every": 1,
                                    "checkpoint.every": 100})
        straight_dir = os.path.join(args.scratch, "straight")
        limited_dir = os.path.join(args.scratch, "limited")
        capped_dir = os.path.join(args.scratch, "capped")
        limit = ["--time=1", "--signal=B:USR1@59"]
        straight, straight_log = submit(slurm, "straight", straight_dir, o)
        limited, limited_log = submit(slurm, "limited", limited_dir, o, limit)
        capped, capped_log = submit(slurm, "capped", capped_dir,
                                    base_overrides(data, **{"run.steps": 100000}), limit,
                                    {"TESSERA_MAX_REQUEUES": "1"})

        j = slurm.wait_done(straight, 600, straight_log)
        check(j["JobState"] == "COMPLETED" and j["ExitCode"] == "0:0" and j["Restarts"] == "0",
              f"straight: {j}\n{read(straight_log)[-3000:]}")
        print("sbatch train.sbatch: trained to the end", flush=True)

        j = slurm.wait_done(capped, 600, capped_log)
        text = read(capped_log)
        check(j["JobState"] == "FAILED" and j["ExitCode"] == "75:0" and j["Restarts"] == "1",
              f"TESSERA_MAX_REQUEUES=1: {j['JobState']} exit {j['ExitCode']} restarts "
              f"{j['Restarts']}\n{text[-3000:]}")
        check(text.count("requeueing job") == 1 and "not requeueing" in text, text[-3000:])
        print("TESSERA_MAX_REQUEUES=1: requeued once, then stopped", flush=True)

        j = slurm.wait_done(limited, 900, limited_log)
        text = read(limited_log)
        check(j["JobState"] == "COMPLETED" and j["ExitCode"] == "0:0",
              f"limited: {j['JobState']} {j['ExitCode']}\n{text[-4000:]}")
        segments = int(j["Restarts"]) + 1
        check(segments >= 2, f"the time limit never interrupted the run:\n{text[-3000:]}")

    # Each segment: USR1 before the limit, a save, exit 75, a requeue; the next resumes there.
    starts = log_times(text, r"\[slurm job \d+\] start \d+ on")
    usr1 = log_times(text, r"received SIGUSR1")
    exit75 = log_times(text, r"saved a checkpoint and stopped \(exit 75\)")
    requeued = log_times(text, r"requeueing job")
    check(len(starts) == segments and len(usr1) == segments - 1 and len(exit75) == segments - 1
          and len(requeued) == segments - 1,
          f"{segments} segments, starts {starts}, USR1 {usr1}, exit 75 {exit75}\n{text[-4000:]}")
    stops = [int(s) for s in re.findall(r"stop requested by a signal.*?saving step (\d+)", text)]
    resumed = [int(s) for s in re.findall(r"resuming from .*step-(\d+)\.h5", text)]
    check(sorted(set(stops)) == sorted(set(resumed)) and len(set(stops)) == segments - 1,
          f"saved at {stops}, resumed from {resumed}")
    for s, u in zip(starts, usr1):
        check(u - s < 60, f"USR1 {u - s:.1f} s after the start: not before the 1-minute limit")
    first_steps = []
    for seg, step in zip(text.split("requeueing job")[1:], sorted(set(resumed))):
        t = log_times(seg, rf"\bstep {step + 1}/{STEPS}\b")
        check(t, f"no step {step + 1} after resuming from {step}")
        first_steps.append(t[0])
    usr1_to_exit = [e - u for u, e in zip(usr1, exit75)]
    requeue_to_step = [f - r for r, f in zip(requeued, first_steps)]

    a, a_attrs = load(checkpoints(straight_dir)[-1])
    b, b_attrs = load(checkpoints(limited_dir)[-1])
    check(set(a) == set(b), f"different tensors: {set(a) ^ set(b)}")
    different = [k for k in a if not np.array_equal(a[k], b[k])]
    check(not different, f"requeued run differs from the uninterrupted one: {different[:5]}")
    for key in ("step", "epoch", "consumed", "samples"):
        check(a_attrs[key] == b_attrs[key], f"{key}: {a_attrs[key]} vs {b_attrs[key]}")
    print(f"time limit: {segments} segments (stopped at {sorted(set(stops))}), final checkpoint "
          f"bitwise equal to the uninterrupted job's", flush=True)
    print("USR1 -> exit 75 (s): " + ", ".join(f"{x:.2f}" for x in usr1_to_exit))
    print("requeue -> first resumed step (s): " + ", ".join(f"{x:.2f}" for x in requeue_to_step))
    print("PASS", flush=True)


if __name__ == "__main__":
    main()
