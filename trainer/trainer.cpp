#include "trainer/trainer.h"

#include <ATen/Parallel.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "comm/communicator.h"
#include "comm/model_sync.h"
#include "comm/mpi_session.h"
#include "core/error.h"
#include "data/image_file.h"
#include "data/loader.h"
#include "trainer/agreement.h"
#include "trainer/blas_info.h"
#include "trainer/checkpoint/checkpoint_file.h"
#include "trainer/checkpoint/checkpoint_store.h"
#include "trainer/comm_stats_reducer.h"
#include "trainer/device.h"
#include "trainer/inference.h"
#include "trainer/metrics/jsonl_writer.h"
#include "trainer/metrics/training_metrics.h"
#include "trainer/optim/lr_schedule.h"
#include "trainer/preemption.h"
#include "trainer/progress/progress_reporter.h"
#include "trainer/state_io.h"
#include "trainer/task_factory.h"

namespace tessera::trainer {
namespace fs = std::filesystem;
namespace {

using Clock = std::chrono::steady_clock;

double secondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Sums since the last log line.
struct LogWindow {
  std::vector<std::string> terms;
  std::vector<double> sums;
  std::int64_t steps = 0;
  std::int64_t samples = 0;  // global
  double data_wait = 0;
  double comm = 0;
  double exposed = 0;
  std::int64_t bytes = 0;
  Clock::time_point start = Clock::now();

  void add(const StepResult& r) {
    if (terms.empty()) {
      for (const auto& [name, v] : r.losses) terms.push_back(name);
      sums.assign(terms.size(), 0.0);
    }
    if (!r.applied) return;
    for (std::size_t i = 0; i < sums.size() && i < r.losses.size(); ++i)
      sums[i] += r.losses[i].second;
    ++steps;
  }
  void reset() {
    std::fill(sums.begin(), sums.end(), 0.0);
    steps = samples = bytes = 0;
    data_wait = comm = exposed = 0;
    start = Clock::now();
  }
};

class TrainingRun {
 public:
  TrainingRun(const TrainerOptions& options, const comm::MpiSession& mpi);
  TrainingSummary run();

 private:
  void synchroniseModels();
  void setUp();
  std::optional<TrainingState> loadAgreed(const std::string& what, bool latest, std::string* path);
  void resume();
  bool applyState(const std::optional<TrainingState>& state, bool rollback);
  void runStep();
  void rollback();
  void report();
  void writeImages();
  void saveCheckpoint(bool wait);
  void pollCheckpoint();
  bool agreeStop();
  void evaluateAtEnd();
  TrainingState stateToSave();
  std::int64_t globalBatch() const { return cfg_.data.batch_size * world_.size; }

  const TrainerOptions& options_;
  const TrainConfig& cfg_;
  comm::World world_;
  c10::Device device_;
  fs::path run_dir_;
  std::unique_ptr<comm::Communicator> control_;
  std::unique_ptr<comm::Communicator> grads_;
  std::unique_ptr<Task> task_;
  ModuleList modules_;
  std::unique_ptr<CheckpointStore> store_;  // rank 0 only
  std::unique_ptr<data::Loader> loader_;
  TrainingMetrics metrics_;
  std::unique_ptr<JsonlWriter> jsonl_;          // rank 0 only
  std::unique_ptr<ProgressReporter> progress_;  // rank 0 only
  PreemptionMonitor monitor_;
  Clock::time_point started_ = Clock::now();

  std::int64_t step_ = 0;        // optimizer steps taken
  data::DataPosition position_;  // where the next batch starts
  std::int64_t samples_ = 0;     // global samples consumed since the run began
  double lr_factor_ = 1.0;       // lowered by rollbacks
  std::int64_t skipped_ = 0, consecutive_skips_ = 0, rollbacks_ = 0, attempts_ = 0;
  double last_grad_norm_ = 0, last_lr_ = 0, last_loss_ = 0;
  std::int64_t last_saved_step_ = -1;
  std::int64_t reported_saves_ = 0, reported_failures_ = 0;  // store stats already in metrics
  LogWindow window_;
  at::Tensor preview_;                             // images shown in reconstruction grids
  std::optional<TrainingState> snapshot_buffers_;  // host tensors of the last save (rank 0)
  std::unique_ptr<std::ofstream> index_dump_;      // test only: debug.dump_indices
};

// The run directory and its samples/ folder; a path that is not a directory (or cannot become
// one) is the user's error, named.
void createRunDirectory(const fs::path& dir) {
  std::error_code ec;
  if (fs::exists(dir, ec) && !fs::is_directory(dir, ec)) {
    throw InputError("run directory '" + dir.string() + "' exists and is not a directory");
  }
  fs::create_directories(dir / "samples", ec);
  if (ec) {
    throw InputError("run directory '" + dir.string() + "': cannot create it (" + ec.message() +
                     ")");
  }
}

MetricsOptions metricsOptions(const TrainConfig& cfg, const comm::World& w) {
  MetricsOptions o;
  o.port = cfg.metrics.port;
  o.bind = cfg.metrics.bind;
  o.job = cfg.run.name;
  o.rank = w.rank;
  o.local_rank = w.local_rank;
  return o;
}

TrainingRun::TrainingRun(const TrainerOptions& options, const comm::MpiSession& mpi)
    : options_(options),
      cfg_(options.config),
      world_(mpi.world()),
      device_(selectDevice(cfg_.run.device, world_)),
      run_dir_(options.run_dir),
      metrics_(metricsOptions(cfg_, world_)),
      monitor_(PreemptionMonitor::parseSignals(cfg_.run.stop_signals, "run.stop_signals")) {
  at::set_num_threads(intraOpThreads(cfg_.run.threads, world_));
  comm::CommOptions co;
  co.timeout = std::chrono::milliseconds(static_cast<std::int64_t>(cfg_.comm.timeout * 1000));
  control_ = comm::makeControlCommunicator(mpi, co);
  grads_ = comm::makeCommunicator(mpi, device_, co);
  if (const std::string warning = blasWarning(blasInfo()); !warning.empty()) spdlog::warn(warning);
  task_ = makeTask(cfg_, device_, *grads_);
  modules_ = task_->modules();
  spdlog::info("run {} in {}: {} rank(s), device {}, {} thread(s) per rank, global batch {}",
               cfg_.run.name, run_dir_.string(), world_.size, device_.str(), at::get_num_threads(),
               globalBatch());
}

// Every rank checks the files it will read and reads the preview images from the test file (or
// the training file): every rank computes the previews, the same work everywhere, so no rank
// reaches its next collective a preview's time before the others; rank 0 writes them. Rank 0
// also prepares the run directory. Local work only: a failure anywhere ends every rank at once
// (runAgreed).
void TrainingRun::setUp() {
  runAgreed(*control_, "setup", [&] {
    const data::ImageShape expected = loaderOptions(cfg_, world_).expected;
    const data::ImageFile train =
        data::ImageFile::open(cfg_.data.train, cfg_.data.dataset, &expected);
    if (cfg_.data.test.empty()) {
      preview_ = readFirstImages(train, 8);
    } else {
      preview_ =
          readFirstImages(data::ImageFile::open(cfg_.data.test, cfg_.data.dataset, &expected), 8);
    }
    if (!world_.isRoot()) return;
    createRunDirectory(run_dir_);
    std::ofstream(run_dir_ / "config.yaml") << toYaml(cfg_);
    store_ = std::make_unique<CheckpointStore>(
        CheckpointStoreOptions{(run_dir_ / "checkpoints").string(), cfg_.checkpoint.keep_last,
                               cfg_.checkpoint.keep_every, cfg_.checkpoint.async});
    jsonl_ = std::make_unique<JsonlWriter>((run_dir_ / "metrics.jsonl").string());
  });
}

void TrainingRun::synchroniseModels() {
  for (const auto& [name, module] : modules_) {
    comm::NamedTensors named;
    for (const auto& item : module->named_parameters())
      named.emplace_back(item.key(), item.value());
    comm::verifySameParameters(*control_, named, name);
  }
  std::vector<at::Tensor> all;
  for (auto& [name, t] : moduleTensors(modules_)) all.push_back(t);
  torch::NoGradGuard no_grad;
  comm::broadcastFromRoot(*grads_, all, 0);
}

// Rank 0 reads what to start from and sends it to everybody. A failure to read (a corrupt file
// given with --resume, an I/O error) ends every rank with its real exit code (runAgreed), so no
// rank waits in a collective that the others will never enter.
std::optional<TrainingState> TrainingRun::loadAgreed(const std::string& what, bool latest,
                                                     std::string* path) {
  std::optional<TrainingState> state;
  runAgreed(*control_, what, [&] {
    if (!world_.isRoot()) return;
    if (!latest) {
      *path = options_.resume;
      state = readCheckpointFile(*path);
    } else {
      store_->wait();
      state = store_->loadLatest(path);
    }
  });
  auto shared = broadcastState(*control_, state);
  *path = broadcastString(*control_, *path);
  return shared;
}

void TrainingRun::resume() {
  if (options_.no_resume) {
    spdlog::info("starting from scratch (--no-resume)");
    return;
  }
  std::string path;
  const auto state = loadAgreed("resume", options_.resume.empty(), &path);
  if (!state) {
    spdlog::info("starting from scratch");
    return;
  }
  spdlog::info("resuming from {}", path);
  applyState(state, /*rollback=*/false);
}

bool TrainingRun::applyState(const std::optional<TrainingState>& state, bool rollback) {
  if (!state) return false;
  const auto tensors = tensorMap(*state);
  restoreModules(modules_, tensors);
  task_->restoreState(tensors, state->ints);
  auto get = [&](const char* key, std::int64_t fallback) {
    auto it = state->ints.find(key);
    return it == state->ints.end() ? fallback : it->second;
  };
  step_ = get("step", 0);
  metrics_.setStep(step_);
  last_saved_step_ = step_;
  if (rollback) return true;  // keep consuming new data: the batches that diverged stay behind
  position_ = {get("epoch", 0), get("consumed", 0)};
  samples_ = get("samples", 0);
  skipped_ = get("skipped_steps", 0);
  rollbacks_ = get("rollbacks", 0);
  if (auto it = state->reals.find("lr_factor"); it != state->reals.end()) lr_factor_ = it->second;
  const std::int64_t old_world = get("world_size", world_.size);
  const std::int64_t old_batch = get("global_batch", globalBatch());
  if (old_world != world_.size) {
    spdlog::info("checkpoint was written by {} rank(s), continuing on {}", old_world, world_.size);
  }
  if (old_batch != globalBatch()) {
    spdlog::warn(
        "global batch changes from {} to {} on resume: the optimisation is not the one "
        "the checkpoint's run would have continued",
        old_batch, globalBatch());
  }
  return true;
}

TrainingState TrainingRun::stateToSave() {
  // The previous save has finished (CheckpointStore::wait), so its buffers can be reused.
  store_->wait();
  TrainingState s = snapshot(*task_, modules_, snapshot_buffers_ ? &*snapshot_buffers_ : nullptr);
  snapshot_buffers_ = TrainingState{};
  snapshot_buffers_->tensors = s.tensors;  // shares storage
  s.ints["step"] = step_;
  s.ints["epoch"] = position_.epoch;
  s.ints["consumed"] = position_.consumed;
  s.ints["samples"] = samples_;
  s.ints["world_size"] = world_.size;
  s.ints["global_batch"] = globalBatch();
  s.ints["skipped_steps"] = skipped_;
  s.ints["rollbacks"] = rollbacks_;
  s.reals["lr_factor"] = lr_factor_;
  s.texts["config"] = toYaml(cfg_);
  s.texts["task"] = task_->name();
  return s;
}

// Every rank holds the same state (data parallelism), so rank 0 alone snapshots and writes.
// Waiting saves (end of training, preemption) also tell every rank whether they committed.
void TrainingRun::saveCheckpoint(bool wait) {
  if (step_ == last_saved_step_) return;
  last_saved_step_ = step_;
  bool committed = false;
  if (world_.isRoot()) {
    store_->save(stateToSave());
    if (wait) {
      committed = store_->wait().value_or(false);
      pollCheckpoint();
    }
  }
  if (!wait) return;
  at::Tensor flag = torch::tensor({committed ? 1.0f : 0.0f});
  control_->broadcast({flag}, 0, {"broadcast", "checkpoint outcome", step_, -1});
  if (flag.item<float>() > 0) {
    spdlog::info("checkpoint of step {} committed", step_);
  } else {
    spdlog::error(
        "checkpoint of step {} could not be saved (see rank 0's log); the previous "
        "checkpoint is intact",
        step_);
  }
}

void TrainingRun::pollCheckpoint() {
  if (!store_) return;
  const SaveStats s = store_->stats();
  if (s.saves > reported_saves_) {
    reported_saves_ = s.saves;
    metrics_.checkpointSaved(s.last_seconds, s.last_bytes, s.last_success_unix);
  }
  while (reported_failures_ < s.failed_saves) {
    ++reported_failures_;
    metrics_.checkpointFailed();
  }
}

void TrainingRun::runStep() {
  const auto t0 = Clock::now();
  const double wait0 = loader_->waitSeconds();
  const data::Batch batch = loader_->next();
  const double waited = loader_->waitSeconds() - wait0;

  LrScheduleOptions lr;
  lr.peak = cfg_.optim.lr;
  lr.min = cfg_.optim.min_lr;
  lr.warmup_steps = cfg_.optim.warmup_steps;
  lr.total_steps = cfg_.run.steps;
  lr.cosine = cfg_.optim.schedule == LrSchedule::kCosine;

  StepContext ctx;
  ctx.step = step_;
  ctx.lr = learningRate(lr, step_) * lr_factor_;
  // Test-only fault injection (debug.nan_*): this rank reports a non-finite step, as a NaN loss
  // or gradient would make it; the task never knows.
  const auto& d = cfg_.debug;
  const bool inject = d.nan_at_step >= 0 && attempts_ >= d.nan_at_step &&
                      attempts_ < d.nan_at_step + d.nan_steps &&
                      (d.nan_rank < 0 || d.nan_rank == world_.rank);
  ctx.agree_finite = [this, inject](bool ok) {
    at::Tensor t = torch::tensor({ok && !inject ? 1.0f : 0.0f});
    control_->allReduce({t}, comm::ReduceOp::kMin, {"allreduce", "finite agreement", step_, -1});
    return t.item<float>() > 0;
  };
  ++attempts_;
  if (index_dump_) {
    *index_dump_ << step_;
    const at::Tensor idx = batch.indices.contiguous();
    for (std::int64_t i = 0; i < idx.numel(); ++i)
      *index_dump_ << ' ' << idx[i].item<std::int64_t>();
    *index_dump_ << '\n' << std::flush;
  }
  const StepResult result = task_->step(batch, ctx);
  position_ = batch.next;
  samples_ += globalBatch();

  window_.add(result);
  window_.samples += globalBatch();
  window_.data_wait += waited;
  for (const comm::ReducerStats* s : task_->commStats()) {
    window_.comm += s->comm_seconds;
    window_.exposed += s->exposed_seconds;
    window_.bytes += s->bytes;
    metrics_.allReduce(s->comm_seconds, s->bytes,
                       s->comm_seconds > 0 ? 1 - s->exposed_seconds / s->comm_seconds : 0);
  }
  metrics_.stepCompleted(batch.images.size(0), secondsSince(t0), waited);

  if (!result.applied) {
    ++skipped_;
    ++consecutive_skips_;
    metrics_.skippedStep();
    spdlog::warn(
        "step {}: non-finite loss or gradient on some rank, update skipped ({} in a row, "
        "{} in total)",
        step_, consecutive_skips_, skipped_);
    if (consecutive_skips_ >= cfg_.guard.max_skips) rollback();
    return;
  }
  consecutive_skips_ = 0;
  last_grad_norm_ = result.grad_norm;
  last_lr_ = ctx.lr;
  last_loss_ = result.losses.empty() ? 0 : result.losses[0].second;
  ++step_;
  metrics_.setStep(step_);
  task_->afterStep(step_ - 1);
  if (progress_)
    progress_->update(step_, last_loss_, globalBatch() / std::max(1e-9, secondsSince(t0)));
}

void TrainingRun::rollback() {
  ++rollbacks_;
  if (rollbacks_ > cfg_.guard.max_rollbacks) {
    throw Diverged("training diverged: " + std::to_string(cfg_.guard.max_skips) +
                   " consecutive non-finite steps after " +
                   std::to_string(cfg_.guard.max_rollbacks) + " rollback(s)");
  }
  std::string path;
  const auto state = loadAgreed("rollback", /*latest=*/true, &path);
  if (!state) {
    throw Diverged("training diverged: " + std::to_string(cfg_.guard.max_skips) +
                   " consecutive non-finite steps and no checkpoint to roll back to");
  }
  applyState(state, /*rollback=*/true);
  lr_factor_ *= cfg_.guard.rollback_lr_factor;
  consecutive_skips_ = 0;
  spdlog::warn("rolled back to {} (step {}), learning-rate factor now {} (rollback {} of {})", path,
               step_, lr_factor_, rollbacks_, cfg_.guard.max_rollbacks);
}

void TrainingRun::report() {
  // Loss terms averaged over ranks and steps: one small all-reduce.
  std::vector<double> values = window_.sums;
  values.push_back(static_cast<double>(window_.steps));
  at::Tensor t = torch::tensor(values, torch::kDouble);
  control_->allReduce({t}, comm::ReduceOp::kSum, {"allreduce", "log reduction", step_, -1});
  const double steps_total = t[static_cast<std::int64_t>(values.size()) - 1].item<double>();
  const double elapsed = secondsSince(window_.start);
  const double steps_per_s = window_.steps / std::max(elapsed, 1e-9);
  const double samples_per_s = window_.samples / std::max(elapsed, 1e-9);

  JsonObject line;
  line.add("step", step_).add("epoch", position_.epoch).add("samples", samples_);
  std::string text;
  for (std::size_t i = 0; i < window_.terms.size(); ++i) {
    const double mean =
        steps_total > 0 ? t[static_cast<std::int64_t>(i)].item<double>() / steps_total : 0;
    line.add(window_.terms[i], mean);
    metrics_.setLoss(window_.terms[i], mean);
    text += spdlog::fmt_lib::format(" {} {:.5f}", window_.terms[i], mean);
  }
  line.add("lr", last_lr_).add("grad_norm", last_grad_norm_);
  line.add("steps_per_s", steps_per_s).add("samples_per_s", samples_per_s);
  line.add("data_wait_fraction", window_.data_wait / std::max(elapsed, 1e-9));
  line.add("comm_seconds", window_.comm / std::max<std::int64_t>(1, window_.steps));
  line.add("comm_hidden_fraction", window_.comm > 0 ? 1 - window_.exposed / window_.comm : 0.0);
  line.add("skipped_steps", skipped_);
  std::string values_text;
  for (const auto& [name, v] : task_->values()) {
    line.add(name, v);
    metrics_.taskValue(name, v);
    values_text += spdlog::fmt_lib::format(" {} {:.4g}", name, v);
  }
  task_->publishMetrics(metrics_);
  metrics_.setLearningRate(last_lr_);
  metrics_.setGradNorm(last_grad_norm_);
  metrics_.setSamplesPerSecond(samples_per_s);
  // Model FLOP/s per device and, with metrics.peak_tflops, model FLOPs utilisation.
  const double flops_per_image = task_->trainingFlopsPerImage();
  if (flops_per_image > 0) {
    const double tflops = flops_per_image * samples_per_s / world_.size / 1e12;
    line.add("model_tflops_per_device", tflops);
    if (cfg_.metrics.peak_tflops > 0) {
      line.add("mfu", tflops / cfg_.metrics.peak_tflops);
      metrics_.modelFlopsUtilization(tflops / cfg_.metrics.peak_tflops);
    }
  }
  const std::int64_t device_bytes = deviceMemoryInUse(device_);
  if (device_bytes >= 0) {
    line.add("device_memory_bytes", device_bytes);
    metrics_.deviceMemory(static_cast<double>(device_bytes));
  }
  if (jsonl_) jsonl_->write(line);
  const double eta = (cfg_.run.steps - step_) / std::max(steps_per_s, 1e-9);
  spdlog::info(
      "step {}/{}{} | lr {:.3g} | {:.2f} steps/s {:.0f} img/s | data wait {:.1f}% |{} | "
      "ETA {:.0f}s",
      step_, cfg_.run.steps, text, last_lr_, steps_per_s, samples_per_s,
      100 * window_.data_wait / std::max(elapsed, 1e-9), values_text, eta);
  window_.reset();
}

void TrainingRun::writeImages() {
  const at::Tensor recon = task_->reconstruct(preview_);
  if (!world_.isRoot() || !recon.defined()) return;
  const fs::path path =
      run_dir_ / "samples" / spdlog::fmt_lib::format("recon-step-{:08d}.png", step_);
  writeReconstructionGrid(path.string(), preview_, recon, preview_.size(0));
}

bool TrainingRun::agreeStop() {
  const bool timed_out = cfg_.run.max_time > 0 && secondsSince(started_) >= cfg_.run.max_time;
  at::Tensor t = torch::tensor({monitor_.requested() ? 1.0f : 0.0f, timed_out ? 1.0f : 0.0f});
  control_->allReduce({t}, comm::ReduceOp::kMax, {"allreduce", "stop agreement", step_, -1});
  if (t[0].item<float>() > 0) {
    spdlog::warn(
        "stop requested by a signal{}: saving step {} and exiting",
        monitor_.signal() ? spdlog::fmt_lib::format(" (signal {} here)", monitor_.signal()) : "",
        step_);
    return true;
  }
  if (t[1].item<float>() > 0) {
    spdlog::warn("time budget run.max_time={}s reached: saving step {} and exiting",
                 cfg_.run.max_time, step_);
    return true;
  }
  return false;
}

void TrainingRun::evaluateAtEnd() {
  if (!cfg_.run.eval_at_end || cfg_.data.test.empty()) return;
  const data::ImageShape expected{cfg_.model.image_size, cfg_.model.image_size,
                                  cfg_.model.in_channels};
  const data::ImageFile file = data::ImageFile::open(cfg_.data.test, cfg_.data.dataset, &expected);
  CommStatsReducer reducer(*control_, "evaluation");
  const JsonObject result = task_->evaluate(file, reducer, 256);
  if (!world_.isRoot() || result.empty()) return;
  std::ofstream(run_dir_ / "eval.json") << result.str() << "\n";
  spdlog::info("evaluation on {}: {}", cfg_.data.test, result.str());
}

TrainingSummary TrainingRun::run() {
  synchroniseModels();
  setUp();
  resume();
  const std::int64_t start_step = step_;

  runAgreed(*control_, "loader setup", [&] {
    loader_ =
        std::make_unique<data::Loader>(loaderOptions(cfg_, world_, device_.is_cuda()), position_);
  });
  if (cfg_.debug.dump_indices) {
    index_dump_ = std::make_unique<std::ofstream>(
        run_dir_ / spdlog::fmt_lib::format("indices-rank{}.txt", world_.rank), std::ios::app);
  }

  if (world_.isRoot()) {
    // On a terminal a live progress line; in batch logs the periodic report lines suffice.
    progress_ = std::make_unique<ProgressReporter>(cfg_.run.steps, step_, cfg_.run.log_every,
                                                   cfg_.log.progress && ::isatty(STDERR_FILENO));
  }

  spdlog::info("training steps {}..{} ({} steps per epoch)", step_, cfg_.run.steps,
               loader_->stepsPerEpoch());
  while (step_ < cfg_.run.steps) {
    const std::int64_t before = step_;
    runStep();
    pollCheckpoint();
    const bool advanced = step_ > before;
    if (advanced && step_ % cfg_.run.log_every == 0) report();
    if (advanced && cfg_.run.image_every > 0 && step_ % cfg_.run.image_every == 0) writeImages();
    if (advanced && cfg_.checkpoint.every > 0 && step_ % cfg_.checkpoint.every == 0) {
      saveCheckpoint(/*wait=*/false);
    }
    if (agreeStop()) {
      saveCheckpoint(/*wait=*/true);
      if (progress_) progress_->finish();
      throw Preempted("preempted at step " + std::to_string(step_) +
                      " after saving; run again to resume");
    }
  }
  if (progress_) progress_->finish();
  if (window_.steps > 0) report();
  saveCheckpoint(/*wait=*/true);
  writeImages();
  evaluateAtEnd();
  TrainingSummary summary;
  summary.steps = step_ - start_step;
  summary.skipped_steps = skipped_;
  summary.seconds = secondsSince(started_);
  return summary;
}

}  // namespace

TrainingSummary train(const TrainerOptions& options, const comm::MpiSession& mpi) {
  TrainingRun run(options, mpi);
  return run.run();
}

}  // namespace tessera::trainer
