#!/usr/bin/env bash
# The main job of the README's quick start, on a fresh Debian bookworm machine:
# installs dependencies, builds `tessera`, converts Debian's Fashion-MNIST to HDF5, trains the
# vqvae-fmnist VQ-VAE on 2 MPI ranks (~5 minutes on 2 cores), writes reconstruction grids and
# prints the test-set PSNR and codebook usage.
#   launch/quickstart.sh [key=value overrides...]     e.g. launch/quickstart.sh run.steps=100
# Environment: BUILD_DIR (default build), NP (ranks, default 2), RUN_DIR (default runs/vqvae-fmnist).
set -euo pipefail
cd "$(dirname "$0")/.."

launch/install_deps.sh

build_dir=${BUILD_DIR:-build}
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
if [ ! -f "$build_dir/CMakeCache.txt" ]; then
  cmake -S . -B "$build_dir" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release
fi
cmake --build "$build_dir" --parallel "$(nproc)" --target tessera
tessera="$build_dir/trainer/tessera"

mkdir -p runs/data
for split in train test; do
  out=runs/data/fmnist-$split.h5
  [ -f "$out" ] || "$tessera" convert fmnist --split "$split" --out "$out"
done

run_dir=${RUN_DIR:-runs/vqvae-fmnist}
TESSERA_BIN="$tessera" launch/mpirun.sh -np "${NP:-2}" train \
  --config configs/vqvae_fmnist.yaml --run-dir "$run_dir" "$@"

echo
grids=("$run_dir"/samples/recon-step-*.png)
echo "Reconstructions (originals over reconstructions): ${grids[-1]}"
if [ -f "$run_dir/eval.json" ]; then
  json=$(cat "$run_dir/eval.json")
  field() { sed -E "s/.*\"$1\": ([-0-9.e+]+).*/\1/" <<<"$json"; }
  printf 'Test set: PSNR %.2f dB, SSIM %.3f, codebook usage %.1f%% of 512 codes\n' \
    "$(field psnr)" "$(field ssim)" "$(awk "BEGIN{print 100*$(field codebook_usage)}")"
fi
