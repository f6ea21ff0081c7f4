#!/usr/bin/env bash
# Side-by-side comparison with a PyTorch DDP peer on vqvae-fmnist (docs/benchmarks.md):
# alternates Tessera and the peer at 1 and 2 ranks for ROUNDS rounds in one session, 1 thread
# per rank, and prints one JSON line per run plus the median steps/s of each and their ratios.
#   PEER=path/to/vqvae_ddp_peer.py launch/bench_vs_peer.sh [ROUNDS]   (the peer needs python3-torch)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
tessera=${TESSERA_BIN:-build/trainer/tessera}
peer=${PEER:?set PEER to the peer program (a PyTorch DDP script printing JSON lines)}
[ -f "$peer" ] || { echo "bench_vs_peer: PEER=$peer: no such file" >&2; exit 2; }
export OMP_NUM_THREADS=1
mpi=(mpirun --oversubscribe --bind-to none -x OMP_NUM_THREADS)
[ "$(id -u)" -eq 0 ] && mpi+=(--allow-run-as-root)
out=$(mktemp)
for _ in $(seq "$rounds"); do
  for np in 1 2; do
    "${mpi[@]}" -np "$np" "$tessera" bench train --config configs/bench/vqvae_fmnist.yaml \
      --steps 60 2>/dev/null | sed 's/^/tessera /' | tee -a "$out"
    "${mpi[@]}" -np "$np" /usr/bin/python3 "$peer" --steps 30 2>/dev/null | sed 's/^/peer /' \
      | tee -a "$out"
  done
done
/usr/bin/python3 - "$out" <<'PY'
import json, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    who, js = line.split(" ", 1)
    d = json.loads(js)
    runs.setdefault((who, d["world"]), []).append(d["steps_per_s"])
med = {k: statistics.median(v) for k, v in runs.items()}
print(json.dumps({f"{w}_np{n}_steps_per_s": round(v, 3) for (w, n), v in sorted(med.items())}))
print(json.dumps({
    "ratio_np2_vs_peer": round(med[("tessera", 2)] / med[("peer", 2)], 2),
    "ratio_np1_vs_peer": round(med[("tessera", 1)] / med[("peer", 1)], 2),
    "weak_scaling_tessera": round(med[("tessera", 2)] / med[("tessera", 1)], 2),
    "weak_scaling_peer": round(med[("peer", 2)] / med[("peer", 1)], 2)}))
PY
rm -f "$out"
