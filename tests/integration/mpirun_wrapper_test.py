"""launch/mpirun.sh: argument split, Open MPI defaults, environment forwarding, root handling.

    mpirun_wrapper_test.py --tessera BIN --mpirun MPIRUN --scratch DIR

1. With a recording fake mpirun: the defaults are added, mpirun options stay before the binary,
   tessera's arguments after it (spaces intact), TESSERA_*/OMP_NUM_THREADS are forwarded with
   -x, --allow-run-as-root appears exactly when running as root, `--` separates explicitly.
2. With the real mpirun and a fake tessera: 2 ranks run with the forwarded environment.
3. With the real mpirun and the real tessera: `info --json` sees a world of 2.
"""
import json
import os
import stat

import harness

FAKE_MPIRUN = """#!/usr/bin/env bash
printf '%s\\n' "$@" > "$WRAPPER_TEST_OUT/mpirun.args"
"""

FAKE_TESSERA = """#!/usr/bin/env bash
out=$WRAPPER_TEST_OUT/rank${OMPI_COMM_WORLD_RANK:?}
printf '%s\\n' "$@" > "$out.args"
echo "${TESSERA_WRAPPER_PROBE:-unset} ${OMP_NUM_THREADS:-unset}" > "$out.env"
"""


def make_exe(path, text):
    harness.write(path, text)
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
    return path


def read_lines(path):
    with open(path) as f:
        return f.read().splitlines()


def main():
    args = harness.parse_args()
    script = os.path.join(harness.source_dir(), "launch", "mpirun.sh")
    out = os.path.join(args.scratch, "out")
    os.makedirs(out)
    fake_mpirun = make_exe(os.path.join(args.scratch, "fake-mpirun"), FAKE_MPIRUN)
    fake_tessera = make_exe(os.path.join(args.scratch, "fake-tessera"), FAKE_TESSERA)
    env = {"WRAPPER_TEST_OUT": out, "TESSERA_BIN": fake_tessera, "OMP_NUM_THREADS": "2",
           "TESSERA_WRAPPER_PROBE": "probe value"}
    tessera_args = ["train", "--config", "configs/a b.yaml", "optim.lr=1e-3"]

    # 1. Command line as mpirun receives it.
    harness.run(["bash", script, "-np", "3", "--host", "localhost:3", *tessera_args],
                env={**env, "MPIRUN": fake_mpirun}, check_rc=0, timeout=30)
    got = read_lines(os.path.join(out, "mpirun.args"))
    binary_at = got.index(fake_tessera)
    mpi_part, tessera_part = got[:binary_at], got[binary_at + 1:]
    harness.check(tessera_part == tessera_args, f"tessera arguments: {tessera_part}")
    for flag in (["--bind-to", "none"], ["--map-by", "slot"], ["-np", "3"],
                 ["--host", "localhost:3"], ["-x", "OMP_NUM_THREADS"],
                 ["-x", "TESSERA_WRAPPER_PROBE"], ["-x", "PATH"]):
        pairs = list(zip(mpi_part, mpi_part[1:]))
        harness.check(tuple(flag) in pairs, f"mpirun arguments lack {flag}: {mpi_part}")
    as_root = os.geteuid() == 0
    harness.check(("--allow-run-as-root" in mpi_part) == as_root,
                  f"--allow-run-as-root when euid={os.geteuid()}: {mpi_part}")

    harness.run(["bash", script, "-np", "2", "--", "info"],
                env={**env, "MPIRUN": fake_mpirun}, check_rc=0, timeout=30)
    got = read_lines(os.path.join(out, "mpirun.args"))
    harness.check(got[-2:] == [fake_tessera, "info"] and "--" not in got,
                  f"explicit -- separator: {got}")

    p = harness.run(["bash", script, "-np", "2"], env={**env, "MPIRUN": fake_mpirun}, timeout=30)
    harness.check(p.returncode == 2 and "usage" in p.stderr,
                  f"no subcommand: rc {p.returncode}, {p.stderr}")
    print("command line: ok", flush=True)

    # 2. Real mpirun, fake tessera: both ranks ran with the forwarded environment.
    harness.run(["bash", script, "-np", "2", "--oversubscribe", *tessera_args],
                env={**env, "MPIRUN": args.mpirun}, check_rc=0, timeout=60)
    for r in range(2):
        harness.check(read_lines(os.path.join(out, f"rank{r}.args")) == tessera_args,
                      f"rank {r} arguments")
        harness.check(read_lines(os.path.join(out, f"rank{r}.env")) == ["probe value 2"],
                      f"rank {r} environment: {read_lines(os.path.join(out, f'rank{r}.env'))}")
    print("2 ranks with forwarded environment: ok", flush=True)

    # 3. Real tessera.
    harness.check(os.access(args.tessera, os.X_OK), f"no tessera binary at {args.tessera}")
    p = harness.run(["bash", script, "-np", "2", "--oversubscribe", "info", "--json"],
                    env={"TESSERA_BIN": args.tessera, "MPIRUN": args.mpirun}, check_rc=0,
                    timeout=90)
    lines = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    harness.check(len(lines) == 1 and len(lines[0].get("world", [])) == 2,
                  f"tessera info --json under the wrapper: {p.stdout}\n{p.stderr}")
    print("tessera info --json: world of 2", flush=True)
    print("PASS", flush=True)


if __name__ == "__main__":
    main()
