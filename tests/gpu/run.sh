#!/usr/bin/env bash
# The GPU machine's check (README, "GPU"), one script so that one device call does it all:
# builds Tessera against PyTorch's CUDA LibTorch with NCCL, then runs what only a GPU can run:
#   - `tessera info` (alone and under mpirun) must report the GPU, CUDA and NCCL;
#   - the communicator suite on CUDA tensors: NCCL at world size 1 (the machine has one GPU and
#     NCCL refuses two ranks on one device), the MPI backend with host staging at world sizes 1
#     and 2 (where Auto must detect the shared GPU and fall back from NCCL to MPI);
#   - the VQ-VAE quick-start config trained on the GPU (one rank), with evaluation;
#   - `tessera bench train` on the GPU (and on that machine's CPU for scale), `tessera bench
#     data` (the loader vs a raw H5Dread) on its cores;
#   - what the rest of the CTest suite says in the CUDA build (bounded in time);
#   - two ranks sharing the GPU, with a checkpoint and a resume (last, for time).
# tests/gpu/crash_probe.sh diagnoses crashes of the CUDA build's test binaries.
# Usage: bash tests/gpu/run.sh [DATA_DIR]
#   DATA_DIR holds fmnist_train.h5 and fmnist_test.h5 (`tessera convert fmnist`), default
#   .gpu-debs, which also holds Debian's prometheus-cpp/civetweb/stb packages (GPU.md).
# Logs go to $OUT (the device tool's folder) or $BUILD/out; the summary is printed last.
# TESSERA_GPU_BUILD (default build-gpu) and TESSERA_GPU_CUDA (default ON) exist to dry-run the
# script's plumbing on a CPU machine.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
build=${TESSERA_GPU_BUILD:-build-gpu}
out=${OUT:-$build/out}
mkdir -p "$out"
data=${1:-.gpu-debs}
summary="$out/summary.txt"
: >"$summary"
log="$out/tests.log"
: >"$log"
jobs=$(nproc)

note() { echo "$*" >>"$summary"; }
# step NAME CMD...: runs CMD with its output in tests.log, records PASS/FAIL and the seconds.
step() {
  local name=$1 t0=$SECONDS rc=0
  shift
  echo "=== $name: $*" >>"$log"
  "$@" >>"$log" 2>&1 || rc=$?
  if [ "$rc" -eq 0 ]; then
    note "PASS $name ($((SECONDS - t0)) s)"
  else
    note "FAIL $name (exit $rc, $((SECONDS - t0)) s)"
  fi
  return "$rc"
}
finish() {
  echo "----- summary -----"
  cat "$summary"
  exit "${1:-0}"
}

if compgen -G ".gpu-debs/*.deb" >/dev/null; then
  for d in .gpu-debs/*.deb; do dpkg -x "$d" /; done
  ldconfig
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1
note "$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader)"

# ---- configure and build (all cores; -k 0 collects every compile error in one pass) ----
prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>/dev/null)
# CMAKE_POLICY_VERSION_MINIMUM: Debian's prometheus-cpp config predates what CMake 4 accepts.
step configure cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_POLICY_VERSION_MINIMUM=3.5 \
  "-DTESSERA_CUDA=${TESSERA_GPU_CUDA:-ON}" ${prefix:+"-DCMAKE_PREFIX_PATH=$prefix"} || finish 1
t0=$SECONDS
if ninja -C "$build" -k 0 -j "$jobs" >"$out/build.log" 2>&1; then
  note "PASS build ($((SECONDS - t0)) s, $jobs jobs)"
else
  note "FAIL build ($((SECONDS - t0)) s); first errors:"
  grep -E "error:|undefined reference" "$out/build.log" | awk '!seen[$0]++' | head -40 >>"$summary"
  finish 1
fi
grep -E "tessera: LibTorch" "$log" | tail -1 >>"$summary"

tessera=$build/trainer/tessera
comm_test=$build/tests/comm/test_comm

# ---- info: the GPU, CUDA and NCCL ----
step info "$tessera" info
sed -n '/^tessera /,/^world/p' "$log" | tail -12 >>"$summary"
step info_reports_gpu_cuda_nccl bash -c \
  "$tessera info | grep -E '^  CUDA +[1-9]' && $tessera info | grep -E '^  NCCL +[0-9]' &&
   $tessera info | grep -E 'cuda:0'"
step info_mpirun_np2 mpirun -np 2 --bind-to none "$tessera" info

# ---- the communicator suite on CUDA tensors ----
export TESSERA_TEST_DEVICE=cuda:0
step comm_cuda_nccl_world1 "$comm_test"
grep -E "^\[  (PASSED|SKIPPED|FAILED) " "$log" | tail -3 >>"$summary"
step comm_cuda_mpi_np1 mpirun -np 1 --bind-to none "$comm_test"
step comm_cuda_mpi_np2 mpirun -np 2 --bind-to none "$comm_test"
grep -E "^\[  (PASSED|SKIPPED|FAILED) " "$log" | tail -3 >>"$summary"
unset TESSERA_TEST_DEVICE

# ---- training on the GPU ----
cfg=configs/vqvae_fmnist.yaml
if [ -f "$data/fmnist_train.h5" ]; then
  common=(--config "$cfg" "data.train=$data/fmnist_train.h5" "data.test=$data/fmnist_test.h5"
    run.device=cuda run.threads=4)
  step train_cuda_1rank "$tessera" train "${common[@]}" --run-dir "$build/run1" --no-resume
  [ -f "$build/run1"/eval.json ] && note "  eval: $(cat "$build/run1/eval.json")"
  grep -E "steps/s" "$log" | tail -1 >>"$summary"
  grep -o '"device_memory_bytes": *[0-9.e+]*' "$build/run1/metrics.jsonl" | tail -1 |
    sed 's/^/  metrics.jsonl /' >>"$summary"
else
  note "SKIP training: no $data/fmnist_train.h5"
fi

# ---- benchmarks (JSON lines) ----
bench="$out/bench.jsonl"
: >"$bench"
step bench_train_cuda bash -c "$tessera bench train --config $cfg data.train= run.device=cuda \
  --steps 500 >>$bench"
step bench_train_cuda_bs256 bash -c "$tessera bench train --config $cfg data.train= \
  run.device=cuda data.batch_size=256 --steps 300 >>$bench"
if [ -f "$data/fmnist_train.h5" ]; then
  for format in float uint8; do
    step "bench_train_cuda_hdf5_$format" bash -c "$tessera bench train --config $cfg \
      data.train=$data/fmnist_train.h5 run.device=cuda data.format=$format --steps 300 >>$bench"
  done
fi
step bench_train_host_cpu bash -c "$tessera bench train --config $cfg data.train= run.device=cpu \
  --steps 40 >>$bench"
step bench_train_cuda_np2_mpi bash -c "mpirun -np 2 --bind-to none $tessera bench train \
  --config $cfg data.train= run.device=cuda --steps 200 >>$bench"
sed 's/^/  /' "$bench" >>"$summary"

# ---- the data loader vs a raw sequential H5Dread (issue 4), on this machine's cores ----
data_bench() {  # data_bench NAME FILE OVERRIDES...
  local name=$1 file=$2
  shift 2
  step "bench_data_$name" bash -c "$tessera bench data --config $cfg data.train=$file $* \
    >>$bench"
  tail -2 "$bench" | python3 -c 'import json, sys
l, r = (json.loads(x) for x in sys.stdin)
print("  data %s: loader %.0f images/s, raw H5Dread %.0f, ratio %.2f" % (sys.argv[1],
      l["images_per_s"], r["images_per_s"], l["images_per_s"] / r["images_per_s"]))' "$name" \
    >>"$summary"
}
if [ -f "$data/fmnist_train.h5" ]; then
  data_bench fmnist_cached "$data/fmnist_train.h5" --steps 20000 data.batch_size=256 data.hflip=true
  data_bench fmnist_block_uncached "$data/fmnist_train.h5" --steps 20000 data.batch_size=256 \
    data.hflip=true data.cache=none data.shuffle=block
fi
big=$build/big64.h5
if step make_big64 "$build/tests/data/make_random_images" "$big" 90000 64 64 3 256; then
  big_args=(--steps 3000 model.in_channels=3 model.image_size=64 data.batch_size=256
    data.shuffle=block data.cache=none data.hflip=true)
  cat "$big" >/dev/null
  for w in 1 2 4; do data_bench "big64_uint8_w$w" "$big" "${big_args[@]}" data.workers=$w; done
  for w in 2 4 8; do
    data_bench "big64_float_w$w" "$big" "${big_args[@]}" data.workers=$w data.format=float
  done
  rm -f "$big"
fi

# ---- the rest of the suite in the CUDA build (informative; bounded) ----
t0=$SECONDS
(cd "$build" && timeout 100 ctest -j "$jobs" --timeout 80 --output-on-failure -E "comm_mpi_np|comm_single" \
  >"$out/ctest.log" 2>&1)
note "ctest (CUDA build, $((SECONDS - t0)) s): $(grep -E 'tests passed|tests failed' \
  "$out/ctest.log" | tail -1)"
grep -E "\(Failed\)|\(Timeout\)|\(SEGFAULT\)|\(Subprocess aborted\)" "$out/ctest.log" |
  head -30 >>"$summary"

# ---- two ranks sharing the GPU, checkpoint and resume (verified before; last for time) ----
if [ -f "$data/fmnist_train.h5" ]; then
  step train_cuda_2ranks_shared_gpu mpirun -np 2 --bind-to none "$tessera" train "${common[@]}" \
    --run-dir "$build/run2" --no-resume run.steps=200 checkpoint.every=100 run.log_every=50
  step resume_cuda_2ranks mpirun -np 2 --bind-to none "$tessera" train "${common[@]}" \
    --run-dir "$build/run2" run.steps=300 checkpoint.every=100 run.log_every=50
  step resumed_from_step_200 grep -qE "resuming from .*step-0*200\.h5" "$log"
fi

finish 0
