#!/usr/bin/env bash
# Runs tessera under Open MPI's mpirun with defaults that suit it:
#
#   launch/mpirun.sh -np 2 train --config configs/vqvae_fmnist.yaml [key=value ...]
#   launch/mpirun.sh -np 16 --hostfile hosts -- train --config big.yaml
#
# Arguments up to the first tessera subcommand (train, sample, reconstruct, convert, eval,
# bench, export, info) or up to `--` go to mpirun; the rest go to tessera. Added to mpirun:
#   --bind-to none --map-by slot   Tessera runs its own thread pools (LibTorch, data loader,
#                                  checkpoint writer); binding each rank to one core starves them
#   -x OMP_NUM_THREADS -x NCCL_* -x TESSERA_* -x PATH -x LD_LIBRARY_PATH
#                                  the environment that decides behaviour reaches remote nodes
#   --allow-run-as-root            only when run as root (containers)
# Environment: TESSERA_BIN (default: build/trainer/tessera of this checkout, else `tessera` on
# PATH), MPIRUN (default mpirun). Set OMP_NUM_THREADS to about cores / ranks per node.
set -euo pipefail

usage() {
  echo "usage: $0 [mpirun options] [--] <tessera subcommand> [arguments]" >&2
  echo "example: $0 -np 2 train --config configs/vqvae_fmnist.yaml" >&2
  exit 2
}

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${TESSERA_BIN:-}
if [[ -z $bin ]]; then
  if [[ -x $repo/build/trainer/tessera ]]; then
    bin=$repo/build/trainer/tessera
  elif ! bin=$(command -v tessera); then
    echo "$0: no tessera binary: build it in $repo/build, put it on PATH or set TESSERA_BIN" >&2
    exit 2
  fi
fi
mpirun=${MPIRUN:-mpirun}

mpi_args=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --)
      shift
      break
      ;;
    train | sample | reconstruct | convert | eval | bench | export | info) break ;;
    *)
      mpi_args+=("$1")
      shift
      ;;
  esac
done
[[ $# -gt 0 ]] || usage

defaults=(--bind-to none --map-by slot)
forward=(PATH LD_LIBRARY_PATH OMP_NUM_THREADS)
while read -r name; do
  case $name in
    TESSERA_* | NCCL_*) forward+=("$name") ;;
  esac
done < <(compgen -e)
for name in "${forward[@]}"; do
  if [[ -n ${!name+set} ]]; then
    defaults+=(-x "$name")
  fi
done
if [[ $(id -u) -eq 0 ]]; then
  defaults+=(--allow-run-as-root)
fi

exec "$mpirun" "${defaults[@]}" "${mpi_args[@]}" "$bin" "$@"
