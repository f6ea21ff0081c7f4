"""Two nodes on one machine (issue 17): network namespaces node-a and node-b joined by a veth
pair (tests/integration/two_nodes.py); mpirun on node-a starts 2 ranks per node over TCP.

  --scenario world      `tessera info`: ranks 0-1 on node-a, 2-3 on node-b, local ranks 0 and 1
                        and local size 2 on each; 30 training steps across the nodes give the
                        same final checkpoint, bitwise, as 4 ranks on one host (shared memory);
                        `tessera bench allreduce` across the nodes reports the reducer's and a
                        raw MPI_Allreduce's time for the same bytes (printed; the ratio is a
                        measurement, checked only against a loose floor on this shared machine).
  --scenario partition  the veth link goes down mid-run;
  --scenario kill-node  every process of node-b is killed mid-run (SIGKILL);
                        in both, every rank that is still alive ends within comm.timeout + 15 s,
                        with exit code 3 and an error naming the collective; the newest
                        checkpoint verifies, and a restart on one host resumes from it.

    two_node_test.py --tessera BIN --mpirun MPIRUN --scratch DIR --scenario NAME
"""
import json
import os
import re
import signal
import subprocess
import time

import numpy as np

import harness
from harness import check, fail
from real_slurm import verify_checkpoint
from trainer_support import base_overrides, checkpoints, fmnist_test_split, load, train
from two_nodes import TwoNodes

TIMEOUT = 10  # comm.timeout for the fault scenarios


def config():
    return os.path.join(harness.source_dir(), "configs", "vqvae_fmnist.yaml")


def world(args, nodes, data):
    p = nodes.mpirun(args, 2, [args.tessera, "info"], timeout=120)
    ranks = sorted((json.loads(l.strip()) for l in p.stdout.splitlines()
                    if l.strip().startswith('{"rank"')), key=lambda r: r["rank"])
    got = [(r["rank"], r["size"], r["host"], r["local_rank"], r["local_size"]) for r in ranks]
    check(got == [(0, 4, "node-a", 0, 2), (1, 4, "node-a", 1, 2), (2, 4, "node-b", 0, 2),
                  (3, 4, "node-b", 1, 2)], f"tessera info across the nodes:\n{p.stdout}")
    print("world: " + ", ".join(f"rank {r[0]} on {r[2]} local {r[3]}/{r[4]}" for r in got),
          flush=True)

    overrides = base_overrides(data, **{"run.steps": 30, "checkpoint.every": 15})
    two = os.path.join(args.scratch, "two-nodes")
    one = os.path.join(args.scratch, "one-host")
    t = time.monotonic()
    nodes.mpirun(args, 2, [args.tessera, "train", "--config", config(), "--run-dir", two,
                           *overrides], timeout=300)
    t_two = time.monotonic() - t
    t = time.monotonic()
    train(args, 4, one, overrides)
    t_one = time.monotonic() - t
    a, a_attrs = load(checkpoints(two)[-1])
    b, b_attrs = load(checkpoints(one)[-1])
    check(a_attrs["step"] == 30, f"two nodes stopped at step {a_attrs['step']}")
    check(set(a) == set(b), f"different tensors: {set(a) ^ set(b)}")
    different = [k for k in a if not np.array_equal(a[k], b[k])]
    check(not different, f"two nodes vs one host differ: {different[:5]}")
    for key in ("step", "epoch", "consumed", "samples"):
        check(a_attrs[key] == b_attrs[key], f"{key}: {a_attrs[key]} vs {b_attrs[key]}")
    print(f"training: {len(a)} tensors bitwise equal, two nodes over TCP {t_two:.1f} s, "
          f"one host {t_one:.1f} s", flush=True)

    p = nodes.mpirun(args, 2, [args.tessera, "bench", "allreduce", "--config", config(),
                               "--steps", "30", "--warmup", "5", "run.threads=1",
                               "data.batch_size=8"], timeout=300)
    bw = [json.loads(l) for l in p.stdout.splitlines() if '"allreduce_bandwidth"' in l]
    check(len(bw) == 1, f"bench allreduce output:\n{p.stdout}\n{p.stderr[-2000:]}")
    bw = bw[0]
    print(f"bench allreduce across the nodes (TCP, 4 ranks, {bw['bytes']} bytes): reducer "
          f"{bw['reducer_s'] * 1e3:.2f} ms mean / {bw['reducer_best_s'] * 1e3:.2f} ms best, raw "
          f"MPI_Allreduce {bw['raw_mpi_s'] * 1e3:.2f} ms mean / "
          f"{bw['raw_mpi_best_s'] * 1e3:.2f} ms best; ratio (raw time / reducer time) "
          f"{bw['ratio_vs_raw_mpi']:.2f} mean, {bw['ratio_best_vs_raw_mpi']:.2f} best", flush=True)
    check(bw["ranks"] == 4 and bw["raw_mpi_s"] > 0, f"{bw}")
    # A floor that catches a broken reducer, not noise: two cores run 4 ranks and their
    # TCP stacks here.
    check(bw["ratio_best_vs_raw_mpi"] >= 0.5, f"reducer far slower than raw MPI: {bw}")


def rank_exit_codes(scratch):
    out = {}
    for name in os.listdir(scratch):
        m = re.fullmatch(r"rank(\d+)\.rc", name)
        if m:
            with open(os.path.join(scratch, name)) as f:
                out[int(m.group(1))] = int(f.read().strip())
    return out


def fault(args, nodes, data, kind):
    run_dir = os.path.join(args.scratch, "run")
    overrides = base_overrides(data, **{"run.steps": 100000, "checkpoint.every": 10,
                                        "comm.timeout": TIMEOUT})
    # Each rank runs under a shell that records tessera's own exit code and output in files
    # (mpirun reports only the first failure and cannot hear from node-b after a partition). The
    # shell outlives the SIGTERM Open MPI sends when another rank aborts first, to see its
    # tessera end.
    record = (f'R={args.scratch}/rank$OMPI_COMM_WORLD_RANK; '
              'trap "echo wrapper got SIGTERM >> $R.log" TERM; '
              '"$@" > $R.log 2>&1; rc=$?; echo $rc > $R.rc; exit $rc')
    cmd = nodes.mpirun_cmd(args, 2, ["sh", "-c", record, "rank", args.tessera, "train",
                                     "--config", config(), "--run-dir", run_dir, *overrides])
    log_path = os.path.join(args.scratch, "run.log")
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, **nodes.env()}, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while len(checkpoints(run_dir)) < 2:
            if proc.poll() is not None or time.monotonic() > deadline:
                fail(f"no second checkpoint (rc {proc.poll()}):\n{open(log_path).read()[-3000:]}")
            time.sleep(0.05)
        pids = nodes.rank_pids()
        check(sorted(pids) == [0, 1, 2, 3], f"rank pids {pids}")
        survivors = dict(pids)
        t0 = time.monotonic()
        if kind == "partition":
            nodes.link_down()
        else:
            for pid in nodes.pids("node-b"):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            survivors = {r: v for r, v in pids.items() if v[1] == "node-a"}
        ended = {}
        bound = TIMEOUT + 15
        while len(ended) < len(survivors) and time.monotonic() - t0 < bound + 30:
            for r, (pid, _) in survivors.items():
                if r not in ended and gone(pid):
                    ended[r] = time.monotonic() - t0
            time.sleep(0.05)
        mpirun_end = None
        while proc.poll() is None and time.monotonic() - t0 < bound:
            time.sleep(0.05)
        if proc.poll() is not None:
            mpirun_end = time.monotonic() - t0
    finally:
        rc = proc.poll()
        if rc is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        log.close()
        for pid in nodes.pids("node-a") + nodes.pids("node-b"):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    text = open(log_path).read()
    for r in range(4):
        text += "\n" + harness_read(os.path.join(args.scratch, f"rank{r}.log"))
    codes = rank_exit_codes(args.scratch)
    print(f"{kind}: rank ends after the fault (s): "
          + ", ".join(f"rank {r} ({survivors[r][1]}) {ended.get(r, float('nan')):.2f}"
                      for r in sorted(survivors))
          + (f"; mpirun exited {rc} after {mpirun_end:.2f} s" if mpirun_end is not None else
             f"; mpirun still running {bound} s after the fault (killed by the test)")
          + f"; exit codes recorded {codes}", flush=True)
    errors = [l for l in text.splitlines() if "[error]" in l]
    print("\n".join(errors[:8]), flush=True)
    check(len(ended) == len(survivors),
          f"ranks {sorted(set(survivors) - set(ended))} still alive {bound + 30} s after the "
          f"fault\n{text[-4000:]}")
    last = max(ended.values())
    check(last <= bound, f"last rank ended {last:.1f} s after the fault (bound {bound} s)")
    if kind == "kill-node":
        # Open MPI notices the lost daemon of node-b at once (its TCP connections close) and
        # kills the whole job, usually long before any collective times out; a rank that did
        # time out first must have exited 3.
        lost = "ORTE has lost communication with a remote daemon" in text
        check(rc is not None and rc != 0 and mpirun_end is not None and mpirun_end <= bound,
              f"mpirun: rc {rc} after {mpirun_end} s\n{text[-3000:]}")
        for r in survivors:
            own = re.search(rf"\[rank {r}\] \[error\] .* did not complete within", text)
            check((own and codes.get(r) == 3) or (lost and codes.get(r) in (None, 137, 143)),
                  f"rank {r}: exit code {codes.get(r)}, own timeout error: {bool(own)}, "
                  f"launcher lost node-b: {lost}\n{text[-4000:]}")
        how = ("killed by mpirun after it lost node-b's daemon" if lost else "timed out")
        print(f"kill-node: node-a ranks {how}; mpirun exit {rc}", flush=True)
    aborted = re.findall(r"MPI_ABORT was invoked on rank (\d+) in communicator MPI_COMM_WORLD\s+"
                         r"with errorcode (\d+)", text)
    own = {r for r in survivors
           if re.search(rf"\[rank {r}\] \[error\] (allreduce|broadcast|barrier|allgather)"
                        rf".* did not complete within {TIMEOUT} s", text)}
    for r in (survivors if kind == "partition" else ()):
        # A rank ends on its own collective timeout: its error names the collective and it exits
        # 3 by MPI_Abort. Open MPI then ends the job's other processes it can reach (SIGTERM,
        # 143), and the aborting rank too when it has not exited a second later (SIGKILL, which
        # also ends the shell that records the code: none recorded). So: any rank has exit code
        # 3 or was ended by Open MPI after a MPI_Abort with code 3.
        code = codes.get(r)
        torn_down = code in (None, 137, 143) and (r in own or any(c == "3" for _, c in aborted))
        check(code == 3 or torn_down, f"rank {r}: exit code {code}, own timeout error: "
              f"{r in own}, MPI_Abort calls {aborted}\n{text[-4000:]}")
    if kind == "partition":
        check(3 in codes.values() or aborted, f"no rank exited 3: {codes}, {aborted}")
    for node in (("node-a", "node-b") if kind == "partition" else ()):
        # Each side of the partition detects it by itself: nothing reaches node-b from mpirun.
        check(any(r in own for r, v in survivors.items() if v[1] == node),
              f"no rank on {node} timed out by itself: own {sorted(own)}, codes {codes}")
    check(all(c == "3" for _, c in aborted), f"MPI_Abort codes {aborted}")
    named = re.search(r"ranks? [0-9, ]+ (on other nodes )?(unreachable|did not enter|missing)",
                      text)
    if kind == "partition" and not named:
        print("NOTE: the timeout errors name the collective but not the unreachable ranks: "
              "\"ranks on other nodes: not known\" (the peer board covers one node)", flush=True)

    saved = checkpoints(run_dir)
    check(saved, "no checkpoint")
    newest = int(verify_checkpoint(saved[-1])["step"])
    p = train(args, 2, run_dir, base_overrides(data, **{"run.steps": newest + 5}))
    check(f"step-{newest:08d}.h5" in p.stderr and "resuming from" in p.stderr,
          f"restart did not resume from step {newest}:\n{p.stderr[-2000:]}")
    check(int(verify_checkpoint(checkpoints(run_dir)[-1])["step"]) == newest + 5,
          "restart did not finish")
    print(f"{kind}: all surviving ranks ended within {last:.2f} s (bound {bound} s); newest "
          f"checkpoint (step {newest}) verifies; a restart on one host resumed from it",
          flush=True)


def harness_read(path):
    if not os.path.exists(path):
        return ""
    with open(path, errors="replace") as f:
        return f.read()


def gone(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in "ZX"
    except OSError:
        return True


def main():
    def extra(ap):
        ap.add_argument("--scenario", choices=["world", "partition", "kill-node"], required=True)

    args = harness.parse_args(extra)
    data = fmnist_test_split(args)
    with TwoNodes(args.scenario, args.scratch) as nodes:
        if args.scenario == "world":
            world(args, nodes, data)
        else:
            fault(args, nodes, data, args.scenario)
    print("PASS", flush=True)


if __name__ == "__main__":
    main()
