#include "trainer/checkpoint/checkpoint_store.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <system_error>
#include <utility>

#include "core/error.h"
#include "trainer/checkpoint/checkpoint_file.h"
#include "trainer/checkpoint/durable_file.h"

namespace tessera::trainer {
namespace {

namespace fs = std::filesystem;

constexpr const char* kLatest = "latest";
constexpr const char* kLatestTmp = "latest.tmp";
constexpr const char* kTmpSuffix = ".tmp";

double secondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

std::string joinPath(const std::string& dir, const std::string& name) {
  return (fs::path(dir) / name).string();
}

std::string errnoText(int err) {
  return std::strerror(err);
}

void renameOrThrow(const std::string& from, const std::string& to) {
  if (std::rename(from.c_str(), to.c_str()) != 0) {
    throw Error("checkpoint: renaming " + from + " to " + to + ": " + errnoText(errno));
  }
}

// Removes a file left by a failed save; failures are only logged (the save already failed).
void removeQuietly(const std::string& path) {
  if (path.empty()) return;
  std::error_code ec;
  if (!fs::exists(fs::symlink_status(path, ec))) return;
  if (!fs::remove(path, ec) || ec) {
    spdlog::warn("checkpoint: could not remove {}: {}", path,
                 ec ? ec.message() : std::string("not removed"));
  }
}

struct StepFile {
  std::int64_t step;
  std::string path;
};

// Committed checkpoints in `dir`, newest first.
std::vector<StepFile> stepFiles(const std::string& dir) {
  std::vector<StepFile> files;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const auto step = checkpointStepOf(it->path().filename().string());
    std::error_code type_ec;
    if (step && it->is_regular_file(type_ec)) files.push_back({*step, it->path().string()});
  }
  if (ec) spdlog::warn("checkpoint directory {}: listing failed: {}", dir, ec.message());
  std::sort(files.begin(), files.end(),
            [](const StepFile& a, const StepFile& b) { return a.step > b.step; });
  return files;
}

}  // namespace

std::string checkpointFileName(std::int64_t step) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "step-%08lld.h5", static_cast<long long>(step));
  return buf;
}

std::optional<std::int64_t> checkpointStepOf(const std::string& file_name) {
  const std::string prefix = "step-", suffix = ".h5";
  if (file_name.size() <= prefix.size() + suffix.size() || file_name.rfind(prefix, 0) != 0 ||
      file_name.compare(file_name.size() - suffix.size(), suffix.size(), suffix) != 0) {
    return std::nullopt;
  }
  const std::string digits =
      file_name.substr(prefix.size(), file_name.size() - prefix.size() - suffix.size());
  if (digits.size() > 18) return std::nullopt;
  std::int64_t step = 0;
  for (const char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
    step = step * 10 + (c - '0');
  }
  return step;
}

CheckpointStore::CheckpointStore(CheckpointStoreOptions options) : options_(std::move(options)) {
  if (options_.keep_last < 1) {
    throw ConfigError("checkpoint keep_last must be at least 1, not " +
                      std::to_string(options_.keep_last));
  }
  if (options_.keep_every < 0) {
    throw ConfigError("checkpoint keep_every must not be negative, not " +
                      std::to_string(options_.keep_every));
  }
  std::error_code ec;
  fs::create_directories(options_.dir, ec);
  if (ec || !fs::is_directory(options_.dir)) {
    throw Error("checkpoint directory " + options_.dir + ": cannot create it" +
                (ec ? ": " + ec.message() : std::string(": not a directory")));
  }
  for (fs::directory_iterator it(options_.dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    const bool stale_step = name.size() > 4 && name.compare(name.size() - 4, 4, kTmpSuffix) == 0 &&
                            checkpointStepOf(name.substr(0, name.size() - 4)).has_value();
    if (!stale_step && name != kLatestTmp) continue;
    std::error_code rm_ec;
    if (fs::remove(it->path(), rm_ec) && !rm_ec) {
      spdlog::warn("checkpoint: removed {}, left by an interrupted save", it->path().string());
    } else {
      spdlog::warn("checkpoint: could not remove stale {}: {}", it->path().string(),
                   rm_ec ? rm_ec.message() : std::string("not removed"));
    }
  }
}

CheckpointStore::~CheckpointStore() {
  joinWorker();
}

void CheckpointStore::joinWorker() {
  if (worker_.joinable()) worker_.join();
}

void CheckpointStore::finish(bool ok) {
  std::lock_guard<std::mutex> lock(mu_);
  running_ = false;
  unreported_ = ok;
}

void CheckpointStore::save(TrainingState state) {
  const auto start = std::chrono::steady_clock::now();
  validateTrainingState(state);
  if (state.step() < 0) throw Error("checkpoint: step " + std::to_string(state.step()) + " < 0");
  joinWorker();
  if (!options_.async) {
    finish(commit(state));
  } else {
    auto shared = std::make_shared<TrainingState>(std::move(state));
    {
      std::lock_guard<std::mutex> lock(mu_);
      running_ = true;
    }
    try {
      worker_ = std::thread([this, shared]() mutable {
        const bool ok = commit(*shared);
        shared.reset();  // frees the tensors before the outcome becomes visible
        finish(ok);
      });
    } catch (const std::system_error& e) {
      spdlog::warn("checkpoint: cannot start a writer thread ({}); saving synchronously", e.what());
      finish(commit(*shared));
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  stats_.blocked_seconds += secondsSince(start);
}

std::optional<bool> CheckpointStore::wait() {
  const auto start = std::chrono::steady_clock::now();
  joinWorker();
  std::lock_guard<std::mutex> lock(mu_);
  stats_.blocked_seconds += secondsSince(start);
  return std::exchange(unreported_, std::nullopt);
}

std::optional<bool> CheckpointStore::poll() {
  std::lock_guard<std::mutex> lock(mu_);
  if (running_) return std::nullopt;
  return std::exchange(unreported_, std::nullopt);
}

SaveStats CheckpointStore::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

bool CheckpointStore::commit(const TrainingState& state) {
  const auto start = std::chrono::steady_clock::now();
  const std::int64_t step = state.step();
  const std::string final_path = joinPath(options_.dir, checkpointFileName(step));
  const std::string tmp_path = final_path + kTmpSuffix;
  try {
    commitOrThrow(state, final_path, tmp_path);
  } catch (const std::exception& e) {
    removeQuietly(tmp_path);
    std::int64_t failed = 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      failed = ++stats_.failed_saves;
    }
    spdlog::error(
        "checkpoint: saving step {} failed ({} failed so far), earlier checkpoints are intact: {}",
        step, failed, e.what());
    return false;
  }
  const double seconds = secondsSince(start);
  const std::int64_t bytes = state.bytes();
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.saves;
    stats_.last_seconds = seconds;
    stats_.last_bytes = bytes;
    stats_.last_success_unix =
        std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
    stats_.last_committed_step = step;
  }
  spdlog::info("checkpoint: saved step {} to {} ({:.1f} MiB in {:.2f} s)", step, final_path,
               static_cast<double>(bytes) / (1 << 20), seconds);
  prune(step);
  return true;
}

void CheckpointStore::commitOrThrow(const TrainingState& state, const std::string& final_path,
                                    const std::string& tmp_path) {
  writeCheckpointFile(tmp_path, state);
  std::error_code ec;
  const bool replaces = fs::exists(fs::symlink_status(final_path, ec));
  renameOrThrow(tmp_path, final_path);
  try {
    fsyncDirectory(options_.dir);
    const std::string latest_tmp = joinPath(options_.dir, kLatestTmp);
    try {
      const std::string pointer = fs::path(final_path).filename().string() + "\n";
      writeFileDurably(latest_tmp, pointer.data(), pointer.size());
      renameOrThrow(latest_tmp, joinPath(options_.dir, kLatest));
    } catch (...) {
      removeQuietly(latest_tmp);
      throw;
    }
    fsyncDirectory(options_.dir);
  } catch (...) {
    // `latest` still names the previous checkpoint; a newer file beside it would be loaded only
    // after it, so the save did not happen. A replaced file of the same step stays: it is
    // complete, and the old one is gone.
    if (!replaces) removeQuietly(final_path);
    throw;
  }
}

void CheckpointStore::prune(std::int64_t committed_step) {
  const std::vector<StepFile> files = stepFiles(options_.dir);
  int kept_newest = 0;
  for (const StepFile& f : files) {
    const bool newest = kept_newest < options_.keep_last;
    if (newest) ++kept_newest;
    const bool milestone = options_.keep_every > 0 && f.step % options_.keep_every == 0;
    if (newest || milestone || f.step == committed_step) continue;
    std::error_code ec;
    if (fs::remove(f.path, ec) && !ec) {
      spdlog::info("checkpoint: removed {} (keep_last {}, keep_every {})", f.path,
                   options_.keep_last, options_.keep_every);
    } else {
      spdlog::warn("checkpoint: could not remove old {}: {}", f.path,
                   ec ? ec.message() : std::string("not removed"));
    }
  }
}

std::vector<std::string> CheckpointStore::list() const {
  std::vector<std::string> paths;
  for (const StepFile& f : stepFiles(options_.dir)) paths.push_back(f.path);
  return paths;
}

std::optional<TrainingState> CheckpointStore::loadLatest(std::string* path) const {
  const std::vector<StepFile> files = stepFiles(options_.dir);
  std::vector<StepFile> candidates;
  const std::string latest_path = joinPath(options_.dir, kLatest);
  std::error_code ec;
  if (fs::exists(fs::symlink_status(latest_path, ec))) {
    std::ifstream in(latest_path);
    std::string name;
    std::getline(in, name);
    const auto step = checkpointStepOf(name);
    if (!in && !in.eof()) {
      spdlog::warn("checkpoint: cannot read {}; trying checkpoints by step", latest_path);
    } else if (!step) {
      spdlog::warn("checkpoint: {} does not name a checkpoint ('{}'); trying checkpoints by step",
                   latest_path, name.substr(0, 100));
    } else if (!fs::exists(fs::symlink_status(joinPath(options_.dir, name), ec))) {
      spdlog::warn("checkpoint: {} names {}, which does not exist; trying checkpoints by step",
                   latest_path, name);
    } else {
      candidates.push_back({*step, joinPath(options_.dir, name)});
    }
  } else if (!files.empty()) {
    spdlog::warn("checkpoint: {} is missing; trying checkpoints by step", latest_path);
  }
  for (const StepFile& f : files) {
    if (candidates.empty() || f.path != candidates.front().path) candidates.push_back(f);
  }
  for (const StepFile& candidate : candidates) {
    try {
      TrainingState state = readCheckpointFile(candidate.path);
      const auto stored = state.ints.find("step");
      if (stored == state.ints.end() || stored->second != candidate.step) {
        throw Error(
            "holds step " +
            (stored == state.ints.end() ? std::string("(none)") : std::to_string(stored->second)) +
            ", its name says " + std::to_string(candidate.step));
      }
      spdlog::info("checkpoint: loaded {} (step {})", candidate.path, candidate.step);
      if (path != nullptr) *path = candidate.path;
      return state;
    } catch (const std::exception& e) {
      spdlog::warn("checkpoint: skipping {}: {}", candidate.path, e.what());
    }
  }
  if (!candidates.empty()) {
    spdlog::error("checkpoint: none of the {} checkpoint(s) in {} verifies", candidates.size(),
                  options_.dir);
  }
  return std::nullopt;
}

}  // namespace tessera::trainer
