#!/usr/bin/env bash
# Why GoogleTest binaries of the CUDA build crashed where they deleted non-empty directories
# (core/file_tree.h): builds the suites that crashed against PyTorch's LibTorch, records into $OUT
# which library each std::filesystem symbol binds to (LD_DEBUG=bindings), the binary's
# DT_NEEDED order, the std::filesystem symbols libtorch_cpu.so exports, the stack at the fault,
# and whether a crash goes away with libstdc++ preloaded; then runs the suites.
# Usage: bash tests/gpu/crash_probe.sh   (on the GPU machine; carry .gpu-debs)
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
build=${TESSERA_GPU_BUILD:-build-gpu}
out=${OUT:-$build/out}
mkdir -p "$out"
if compgen -G ".gpu-debs/*.deb" >/dev/null; then
  for d in .gpu-debs/*.deb; do dpkg -x "$d" /; done
  ldconfig
fi
prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>/dev/null)
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_POLICY_VERSION_MINIMUM=3.5 \
  -DTESSERA_CUDA=ON ${prefix:+"-DCMAKE_PREFIX_PATH=$prefix"} >"$out/configure.log" 2>&1 ||
  { tail -20 "$out/configure.log"; exit 1; }
t0=$SECONDS
suites=(core/test_core data/test_data checkpoint/test_checkpoint metrics/test_metrics
  trainer/test_trainer_config)
ninja -C "$build" -j "$(nproc)" "${suites[@]/#/tests/}" >"$out/build.log" 2>&1 ||
  { grep -E "error" "$out/build.log" | head -20; exit 1; }
echo "built ${suites[*]} in $((SECONDS - t0)) s"
bin=$PWD/$build/tests/data/test_data
filter=ImageGrid.LaysOutImagesWithPadding
torch_lib=$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
echo "--- DT_NEEDED"
readelf -d "$bin" | grep NEEDED
echo "--- std::filesystem symbols defined by libtorch_cpu.so (first 12 of $(nm -D --defined-only \
  "$torch_lib/libtorch_cpu.so" | grep -c '_ZN.*St10filesystem'))"
nm -D --defined-only "$torch_lib/libtorch_cpu.so" | grep '_ZN.*St10filesystem' | head -12 | c++filt
echo "--- plain run"
timeout 60 "$bin" --gtest_filter=$filter >"$out/plain.log" 2>&1
echo "exit $?"
echo "--- bindings of std::filesystem symbols (normal run)"
LD_DEBUG=bindings LD_DEBUG_OUTPUT="$out/bindings" timeout 60 "$bin" --gtest_filter=$filter \
  >/dev/null 2>&1
cat "$out"/bindings.* | grep -E "St10filesystem" | sed -E 's/^ *[0-9]+: *//' | sort -u |
  c++filt >"$out/fs_bindings.txt"
echo "$(wc -l <"$out/fs_bindings.txt") bindings, $(grep -c "to [^ ]*libtorch" \
  "$out/fs_bindings.txt") of them to libtorch; those first:"
grep "to [^ ]*libtorch" "$out/fs_bindings.txt" | head -20
grep -v "to [^ ]*libtorch" "$out/fs_bindings.txt" | head -8
echo "--- stack at the fault"
cc -shared -fPIC -o "$build/segv_backtrace.so" tests/gpu/segv_backtrace.c -ldl
LD_PRELOAD="$PWD/$build/segv_backtrace.so" timeout 60 "$bin" --gtest_filter=$filter \
  >"$out/fault.log" 2>&1
echo "exit $?"
grep -E "^  (fault|ip|stack)" "$out/fault.log" | head -30 | while read -r kind addr rest; do
  obj=$(echo "$rest" | grep -oE '^[^(]+')
  off=$(echo "$rest" | grep -oE '\(\+0x[0-9a-f]+\)' | tr -d '()+')
  line=""
  [ -n "$obj" ] && [ -n "$off" ] && line=$(addr2line -f -C -e "$obj" "$off" 2>/dev/null | head -1)
  echo "$kind $addr $rest :: $line"
done
echo "--- with libstdc++ preloaded"
stdcxx=$(g++ -print-file-name=libstdc++.so.6)
LD_PRELOAD=$stdcxx timeout 60 "$bin" --gtest_filter=$filter >"$out/preload.log" 2>&1
echo "exit $? ($stdcxx)"
echo "--- the suites that crashed before (std::filesystem::remove_all)"
for suite in "${suites[@]}"; do
  timeout 100 "$build/tests/$suite" --gtest_brief=1 >"$out/${suite#*/}.log" 2>&1
  echo "$suite: exit $? $(grep -E '^\[  (PASSED|FAILED) ' "$out/${suite#*/}.log" | tr '\n' ' ')"
done
