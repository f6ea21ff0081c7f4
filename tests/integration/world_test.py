"""World discovery: `tessera info --json` under mpirun -np N sees N ranks with the right local
ranks, and a plain process (no launcher) is a world of one without MPI."""
import json

from harness import check, mpirun_cmd, parse_args, run

args = parse_args(lambda ap: ap.add_argument("--np", type=int, required=True))

p = run(mpirun_cmd(args, args.np, args.tessera, "info", "--json"), timeout=60, check_rc=0)
lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
check(len(lines) == 1, f"expected one JSON line from rank 0, got {p.stdout!r}")
info = json.loads(lines[0])
world = info["world"]
check(len(world) == args.np, f"expected {args.np} ranks, got {world}")
for r, w in enumerate(world):
    check(w["rank"] == r and w["size"] == args.np, f"rank entry {r} wrong: {w}")
    # All ranks of a test run share this one node.
    check(w["local_rank"] == r and w["local_size"] == args.np, f"local rank wrong: {w}")
    check(w["device"] == "cpu" or w["device"].startswith("cuda"), f"device: {w}")
check(info["mpi"].startswith("Open MPI") or "MPI" in info["mpi"], f"mpi version: {info['mpi']}")

if args.np == 1:
    p = run([args.tessera, "info", "--json"], timeout=30, check_rc=0)
    info = json.loads(p.stdout)
    check(info["mpi"] == "not launched", "plain process must not initialise MPI")
    check(info["world"] == [dict(rank=0, size=1, local_rank=0, local_size=1,
                                 host=info["world"][0]["host"], device=info["world"][0]["device"],
                                 threads=info["world"][0]["threads"])], f"{info['world']}")
print("ok")
