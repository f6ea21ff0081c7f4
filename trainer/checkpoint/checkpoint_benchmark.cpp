#include "trainer/checkpoint/checkpoint_benchmark.h"

#include <ATen/ops/empty.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <optional>
#include <thread>

#include "core/error.h"
#include "core/file_tree.h"
#include "trainer/checkpoint/checkpoint_store.h"

namespace tessera::trainer {
namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

TrainingState makeState(std::int64_t bytes) {
  TrainingState state;
  const std::int64_t per_tensor = std::max<std::int64_t>(1, bytes / 3 / 4);
  const char* names[] = {"model/weights", "optim/0/exp_avg", "optim/0/exp_avg_sq"};
  std::uint32_t x = 12345;
  for (const char* name : names) {
    at::Tensor t = at::empty({per_tensor}, at::TensorOptions().dtype(at::kFloat));
    float* p = t.data_ptr<float>();
    for (std::int64_t i = 0; i < per_tensor; ++i) {
      x = x * 1664525u + 1013904223u;
      p[i] = static_cast<float>(x >> 8) * (1.0f / 16777216.0f) - 0.5f;
    }
    state.tensors.emplace_back(name, t);
  }
  state.ints["step"] = 0;
  state.texts["config"] = "benchmark: true\n";
  return state;
}

TrainingState snapshot(const TrainingState& state) {
  TrainingState copy = state;
  for (auto& entry : copy.tensors) entry.second = entry.second.clone();
  return copy;
}

}  // namespace

JsonObject benchmarkCheckpoint(const std::string& dir, std::int64_t bytes, int repeats) {
  namespace fs = std::filesystem;
  const TrainingState state = makeState(bytes);
  const std::string sync_dir = (fs::path(dir) / "bench-sync").string();
  const std::string async_dir = (fs::path(dir) / "bench-async").string();
  double sync_blocked = 0, async_blocked = 0, async_snapshot = 0, write_seconds = 0;
  {
    CheckpointStore store({sync_dir, 2, 0, false});
    for (int r = 0; r < repeats; ++r) {
      TrainingState s = state;
      s.ints["step"] = r + 1;
      const double before = store.stats().blocked_seconds;
      store.save(std::move(s));
      sync_blocked += store.stats().blocked_seconds - before;
      if (store.wait() != true) throw Error("checkpoint benchmark: a synchronous save failed");
    }
  }
  // The asynchronous store, once with a fresh snapshot per save and once copying into the
  // previous snapshot's buffers (safe once its save finished; saves fresh page faults).
  double reused_blocked = 0, reused_snapshot = 0;
  for (const bool reuse : {false, true}) {
    CheckpointStore store({async_dir, 2, 0, true});
    TrainingState buffers = snapshot(state);
    for (int r = 0; r < repeats; ++r) {
      const auto start = Clock::now();
      TrainingState s;
      if (reuse) {
        for (std::size_t i = 0; i < state.tensors.size(); ++i) {
          buffers.tensors[i].second.copy_(state.tensors[i].second);
        }
        s = buffers;
      } else {
        s = snapshot(state);
      }
      (reuse ? reused_snapshot : async_snapshot) += since(start);
      s.ints["step"] = r + 1;
      const double before = store.stats().blocked_seconds;
      store.save(std::move(s));
      (reuse ? reused_blocked : async_blocked) += store.stats().blocked_seconds - before;
      // Training goes on while the writer works; the next save comes after this one finished.
      std::optional<bool> outcome;
      while (!(outcome = store.poll())) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      if (!*outcome) throw Error("checkpoint benchmark: an asynchronous save failed");
      if (!reuse) write_seconds += store.stats().last_seconds;
    }
  }
  std::error_code ec;
  removeTree(sync_dir, ec);
  removeTree(async_dir, ec);
  const double n = repeats;
  const double mb = static_cast<double>(state.bytes()) / 1e6;
  JsonObject out;
  out.add("benchmark", "checkpoint")
      .add("bytes", state.bytes())
      .add("repeats", repeats)
      .add("sync_blocked_s", sync_blocked / n)
      .add("async_blocked_s", async_blocked / n)
      .add("async_snapshot_s", async_snapshot / n)
      .add("async_ratio", async_blocked / sync_blocked)
      .add("async_ratio_with_snapshot", (async_blocked + async_snapshot) / sync_blocked)
      .add("async_reused_snapshot_s", reused_snapshot / n)
      .add("async_ratio_with_reused_snapshot", (reused_blocked + reused_snapshot) / sync_blocked)
      .add("write_s", write_seconds / n)
      .add("write_mb_per_s", mb / (write_seconds / n));
  return out;
}

}  // namespace tessera::trainer
