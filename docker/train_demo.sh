#!/usr/bin/env bash
# The training job of docker/compose.yaml: converts Debian's Fashion-MNIST (installed in the CPU
# image) to HDF5 once, then trains on NP ranks with Prometheus metrics served to the compose
# network on METRICS_PORT + rank. A restarted container resumes from the run directory.
#   train_demo.sh [key=value overrides...]
# Environment: NP (default 2), CONFIG (configs/vqvae_fmnist.yaml), RUN_DIR
# (runs/vqvae-fmnist), METRICS_PORT (9400).
set -euo pipefail
cd "$(dirname "$0")/.."

mkdir -p runs/data
for split in train test; do
  out=runs/data/fmnist-$split.h5
  [[ -f $out ]] || tessera convert fmnist --split "$split" --out "$out"
done

exec launch/mpirun.sh -np "${NP:-2}" --oversubscribe train \
  --config "${CONFIG:-configs/vqvae_fmnist.yaml}" --run-dir "${RUN_DIR:-runs/vqvae-fmnist}" \
  metrics.port="${METRICS_PORT:-9400}" metrics.bind=0.0.0.0 "$@"
