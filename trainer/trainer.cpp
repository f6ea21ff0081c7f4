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
#include "trainer/fault_injection.h"
#include "trainer/inference.h"
#include "trainer/metrics/jsonl_writer.h"
#include "trainer/metrics/training_metrics.h"
#include "trainer/optim/lr_schedule.h"
#include "trainer/preemption.h"
#include "trainer/previews.h"
#include "trainer/progress/progress_reporter.h"
#include "trainer/run_counters.h"
#include "trainer/sample_quality.h"
#include "trainer/state_io.h"
#include "trainer/step_log.h"
#include "trainer/task_factory.h"

namespace tessera::trainer {
namespace fs = std::filesystem;
namespace {

using Clock = std::chrono::steady_clock;

double secondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// One training run on this rank. Beside it: the task (what is trained), RunCounters (where the
// run stands), StepLog (what is reported), Previews, FaultInjection (tests), the checkpoint
// store and the preemption monitor. The loop itself is run().
class TrainingRun {
 public:
  TrainingRun(const TrainerOptions& options, const comm::MpiSession& mpi);
  TrainingSummary run();

 private:
  void setUp();
  void makeTaskAgreed();
  void synchroniseModels();
  std::optional<TrainingState> loadAgreed(const std::string& what, bool latest, std::string* path);
  void resume();
  void applyState(const TrainingState& state, bool rollback);
  void runStep();
  void rollback();
  void report();
  void saveCheckpoint(bool wait);
  void pollCheckpoint();
  bool agreeStop();
  void evaluateAtEnd();
  TrainingState stateToSave();
  std::int64_t globalBatch() const { return cfg_.data.batch_size * world_.size; }

  const TrainerOptions& options_;
  TrainConfig cfg_;  // the resolved configuration (data.image_size and channels filled in)
  comm::World world_;
  c10::Device device_;
  fs::path run_dir_;
  std::unique_ptr<comm::Communicator> control_;
  std::unique_ptr<comm::Communicator> grads_;
  data::ImageShape image_;
  std::unique_ptr<Task> task_;
  ModuleList modules_;
  std::unique_ptr<CheckpointStore> store_;  // rank 0 only
  std::unique_ptr<data::Loader> loader_;
  TrainingMetrics metrics_;
  std::unique_ptr<JsonlWriter> jsonl_;          // rank 0 only
  std::unique_ptr<ProgressReporter> progress_;  // rank 0 only
  // Gathers sample previews (declared before previews_, which uses it).
  std::unique_ptr<comm::Communicator> preview_comm_;
  std::unique_ptr<Previews> previews_;
  std::unique_ptr<FeatureNetwork> eval_features_;  // run.eval_features, opened at the start
  std::unique_ptr<FaultInjection> faults_;
  PreemptionMonitor monitor_;
  Clock::time_point started_ = Clock::now();

  RunCounters counters_;
  std::int64_t consecutive_skips_ = 0, attempts_ = 0;
  double last_loss_ = 0;  // of the last report, for the progress line
  StepLog log_;
  std::int64_t last_saved_step_ = -1;
  std::int64_t reported_saves_ = 0, reported_failures_ = 0;  // store stats already in metrics
  std::optional<TrainingState> snapshot_buffers_;  // host tensors of the last save (rank 0)
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
  // Sample previews gather on their own communicator with a long deadline (trainer/previews.h).
  comm::CommOptions po = co;
  po.timeout += std::chrono::hours(1);
  preview_comm_ = comm::makeControlCommunicator(mpi, po);
  grads_ = comm::makeCommunicator(mpi, device_, co);
  if (const std::string warning = blasWarning(blasInfo()); !warning.empty()) spdlog::warn(warning);
  spdlog::info("run {} ({}) in {}: {} rank(s), device {}, {} thread(s) per rank, global batch {}",
               cfg_.run.name, cfg_.task, run_dir_.string(), world_.size, device_.str(),
               at::get_num_threads(), globalBatch());
}

// Every rank checks the files it will read, takes the image shape from data.train (checked
// against data.image_size / data.channels when they are set) and reads the preview images from
// the test file (or the training file). Rank 0 also prepares the run directory. Local work only:
// a failure anywhere ends every rank at once (runAgreed). The shape is then compared across
// ranks (an MPMD launch may give ranks different files).
void TrainingRun::setUp() {
  at::Tensor preview;
  runAgreed(*control_, "setup", [&] {
    const data::ImageShape wanted = dataImageShape(cfg_);
    const data::ImageFile train =
        data::ImageFile::open(cfg_.data.train, cfg_.data.dataset, &wanted);
    image_ = train.shape();
    if (image_.height != image_.width) {
      throw InputError("data file '" + cfg_.data.train + "': images of " + image_.str() +
                       " are not square; the models take square images");
    }
    cfg_.data.image_size = static_cast<int>(image_.height);
    cfg_.data.channels = static_cast<int>(image_.channels);
    if (cfg_.data.test.empty()) {
      preview = readFirstImages(train, 8);
    } else {
      preview =
          readFirstImages(data::ImageFile::open(cfg_.data.test, cfg_.data.dataset, &image_), 8);
    }
    if (!world_.isRoot()) return;
    createRunDirectory(run_dir_);
    std::ofstream(run_dir_ / "config.yaml") << toYaml(cfg_);
    store_ = std::make_unique<CheckpointStore>(
        CheckpointStoreOptions{(run_dir_ / "checkpoints").string(), cfg_.checkpoint.keep_last,
                               cfg_.checkpoint.keep_every, cfg_.checkpoint.async});
    jsonl_ = std::make_unique<JsonlWriter>((run_dir_ / "metrics.jsonl").string());
  });
  at::Tensor shape = torch::tensor({image_.height, image_.width, image_.channels, -image_.height,
                                    -image_.width, -image_.channels},
                                   torch::kLong);
  control_->allReduce({shape}, comm::ReduceOp::kMax, {"allreduce", "image shape", 0, -1});
  if (shape[0].item<std::int64_t>() != -shape[3].item<std::int64_t>() ||
      shape[2].item<std::int64_t>() != -shape[5].item<std::int64_t>()) {
    throw AgreedError(2, "the ranks' data.train files hold images of different shapes (rank " +
                             std::to_string(world_.rank) + ": " + image_.str() + ")");
  }
  previews_ = std::make_unique<Previews>(preview, run_dir_ / "samples", world_.isRoot(),
                                         cfg_.debug.preview_write_delay, preview_comm_.get());
  faults_ = std::make_unique<FaultInjection>(cfg_.debug, world_.rank, run_dir_);
}

// The task the configuration names, for the images of data.train. Its errors (a model that
// does not fit the images) are the same on every rank, but agreed all the same.
void TrainingRun::makeTaskAgreed() {
  runAgreed(*control_, "task setup", [&] {
    TaskEnvironment env;
    env.device = device_;
    env.grads = grads_.get();
    env.image = image_;
    task_ = makeTask(cfg_, env);
  });
  modules_ = task_->modules();
  // The end-of-run evaluation's feature network is opened now: a missing file or a task that does
  // not reconstruct is a configuration error before training, not after it.
  if (!cfg_.run.eval_at_end || cfg_.data.test.empty() || cfg_.run.eval_features.empty()) return;
  runAgreed(*control_, "run.eval_features", [&] {
    try {
      eval_features_ = FeatureNetwork::open(cfg_.run.eval_features, device_);
    } catch (const InputError& e) {
      throw ConfigError(std::string("run.eval_features: ") + e.what());
    }
    const at::Tensor probe =
        task_->reconstruct(torch::zeros({1, image_.channels, image_.height, image_.width}));
    if (!probe.defined()) {
      throw ConfigError("run.eval_features: task '" + task_->name() +
                        "' does not reconstruct images; judge its samples with tessera eval "
                        "--samples");
    }
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
  applyState(*state, /*rollback=*/false);
}

void TrainingRun::applyState(const TrainingState& state, bool rollback) {
  const auto tensors = tensorMap(state);
  restoreModules(modules_, tensors);
  task_->restoreState(tensors, state.ints);
  counters_.restore(state, rollback);
  metrics_.setStep(counters_.step);
  last_saved_step_ = counters_.step;
  if (rollback) return;
  auto get = [&](const char* key, std::int64_t fallback) {
    auto it = state.ints.find(key);
    return it == state.ints.end() ? fallback : it->second;
  };
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
}

TrainingState TrainingRun::stateToSave() {
  // The previous save has finished (CheckpointStore::wait), so its buffers can be reused.
  store_->wait();
  TrainingState s = snapshot(*task_, modules_, snapshot_buffers_ ? &*snapshot_buffers_ : nullptr);
  snapshot_buffers_ = TrainingState{};
  snapshot_buffers_->tensors = s.tensors;  // shares storage
  counters_.save(s);
  s.ints["world_size"] = world_.size;
  s.ints["global_batch"] = globalBatch();
  s.texts["config"] = toYaml(cfg_);
  s.texts["task"] = task_->name();
  return s;
}

// Every rank holds the same state (data parallelism), so rank 0 alone snapshots and writes.
// Waiting saves (end of training, preemption) also tell every rank whether they committed.
void TrainingRun::saveCheckpoint(bool wait) {
  const std::int64_t step = counters_.step;
  if (step == last_saved_step_) return;
  last_saved_step_ = step;
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
  control_->broadcast({flag}, 0, {"broadcast", "checkpoint outcome", step, -1});
  if (flag.item<float>() > 0) {
    spdlog::info("checkpoint of step {} committed", step);
  } else {
    spdlog::error(
        "checkpoint of step {} could not be saved (see rank 0's log); the previous "
        "checkpoint is intact",
        step);
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

  StepContext ctx;
  ctx.step = counters_.step;
  for (const auto& o : cfg_.optim) {
    ctx.lrs[o.name] = learningRate(lrSchedule(cfg_, o.name), counters_.step) * counters_.lr_factor;
  }
  const bool inject = faults_->nonFinite(attempts_++);
  ctx.agree_finite = [this, inject](bool ok) {
    at::Tensor t = torch::tensor({ok && !inject ? 1.0f : 0.0f});
    control_->allReduce({t}, comm::ReduceOp::kMin,
                        {"allreduce", "finite agreement", counters_.step, -1});
    return t.item<float>() > 0;
  };
  faults_->recordIndices(counters_.step, batch.indices);
  const StepResult result = task_->step(batch, ctx);
  counters_.position = batch.next;
  counters_.samples += globalBatch();

  const auto comm_stats = task_->commStats();
  log_.add(result, globalBatch(), waited, comm_stats);
  for (const comm::ReducerStats* s : comm_stats) {
    metrics_.allReduce(s->comm_seconds, s->bytes,
                       s->comm_seconds > 0 ? 1 - s->exposed_seconds / s->comm_seconds : 0);
  }
  metrics_.stepCompleted(batch.images.size(0), secondsSince(t0), waited);

  if (!result.finite()) {
    ++counters_.skipped;
    ++consecutive_skips_;
    metrics_.skippedStep();
    std::string which;
    for (const auto& u : result.updates) {
      if (!u.applied) which += (which.empty() ? "" : ", ") + u.name;
    }
    spdlog::warn(
        "step {}: non-finite loss or gradient on some rank, update skipped ({}; {} in a row, "
        "{} in total)",
        counters_.step, which, consecutive_skips_, counters_.skipped);
    if (consecutive_skips_ >= cfg_.guard.max_skips) {
      rollback();
      return;
    }
  } else {
    consecutive_skips_ = 0;
  }
  if (!result.advanced()) return;
  ++counters_.step;
  metrics_.setStep(counters_.step);
  task_->afterStep(counters_.step - 1);
  if (progress_) {
    progress_->update(counters_.step, last_loss_, globalBatch() / std::max(1e-9, secondsSince(t0)));
  }
}

void TrainingRun::rollback() {
  ++counters_.rollbacks;
  if (counters_.rollbacks > cfg_.guard.max_rollbacks) {
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
  applyState(*state, /*rollback=*/true);
  counters_.lr_factor *= cfg_.guard.rollback_lr_factor;  // for every optimizer
  consecutive_skips_ = 0;
  spdlog::warn("rolled back to {} (step {}), learning-rate factor now {} (rollback {} of {})", path,
               counters_.step, counters_.lr_factor, counters_.rollbacks, cfg_.guard.max_rollbacks);
}

void TrainingRun::report() {
  const std::int64_t step = counters_.step;
  const StepLog::Report r = log_.reduce(*control_, step);
  JsonObject line;
  line.add("step", step).add("epoch", counters_.position.epoch).add("samples", counters_.samples);
  r.addTo(line);
  line.add("skipped_steps", counters_.skipped);
  for (const auto& [name, mean] : r.losses) metrics_.setLoss(name, mean);
  if (!r.losses.empty()) last_loss_ = r.losses.front().second;
  std::string values_text;
  for (const auto& [name, v] : task_->values()) {
    line.add(name, v);
    metrics_.taskValue(name, v);
    values_text += spdlog::fmt_lib::format(" {} {:.4g}", name, v);
  }
  task_->publishMetrics(metrics_);
  const double lr = r.optimizers.empty() ? 0.0 : r.optimizers.front().lr;
  if (!r.optimizers.empty()) {
    metrics_.setLearningRate(lr);
    metrics_.setGradNorm(r.optimizers.front().grad_norm);
  }
  metrics_.setSamplesPerSecond(r.samples_per_s);
  // Model FLOP/s per device and, with metrics.peak_tflops, model FLOPs utilisation.
  const double flops_per_image = task_->trainingFlopsPerImage();
  if (flops_per_image > 0) {
    const double tflops = flops_per_image * r.samples_per_s / world_.size / 1e12;
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
  const double eta = (cfg_.run.steps - step) / std::max(r.steps_per_s, 1e-9);
  spdlog::info(
      "step {}/{}{} | lr {:.3g} | {:.2f} steps/s {:.0f} img/s | data wait {:.1f}% |{} | "
      "ETA {:.0f}s",
      step, cfg_.run.steps, r.lossText(), lr, r.steps_per_s, r.samples_per_s,
      100 * r.data_wait_fraction, values_text, eta);
}

bool TrainingRun::agreeStop() {
  const bool timed_out = cfg_.run.max_time > 0 && secondsSince(started_) >= cfg_.run.max_time;
  at::Tensor t = torch::tensor({monitor_.requested() ? 1.0f : 0.0f, timed_out ? 1.0f : 0.0f});
  control_->allReduce({t}, comm::ReduceOp::kMax,
                      {"allreduce", "stop agreement", counters_.step, -1});
  if (t[0].item<float>() > 0) {
    spdlog::warn(
        "stop requested by a signal{}: saving step {} and exiting",
        monitor_.signal() ? spdlog::fmt_lib::format(" (signal {} here)", monitor_.signal()) : "",
        counters_.step);
    return true;
  }
  if (t[1].item<float>() > 0) {
    spdlog::warn("time budget run.max_time={}s reached: saving step {} and exiting",
                 cfg_.run.max_time, counters_.step);
    return true;
  }
  return false;
}

void TrainingRun::evaluateAtEnd() {
  if (!cfg_.run.eval_at_end || cfg_.data.test.empty()) return;
  const data::ImageFile file = data::ImageFile::open(cfg_.data.test, cfg_.data.dataset, &image_);
  CommStatsReducer reducer(*control_, "evaluation");
  JsonObject result = task_->evaluate(file, reducer, 256);
  if (eval_features_) {
    result
        .add("reconstruction_quality",
             reconstructionQuality(*eval_features_, file, 0, 10000, reducer, true,
                                   [&](const at::Tensor& x) { return task_->reconstruct(x); }))
        .add("features", eval_features_->description());
  }
  if (!world_.isRoot() || result.empty()) return;
  std::ofstream(run_dir_ / "eval.json") << result.str() << "\n";
  spdlog::info("evaluation on {}: {}", cfg_.data.test, result.str());
}

TrainingSummary TrainingRun::run() {
  setUp();
  makeTaskAgreed();
  synchroniseModels();
  resume();
  const std::int64_t start_step = counters_.step;

  runAgreed(*control_, "loader setup", [&] {
    loader_ = std::make_unique<data::Loader>(loaderOptions(cfg_, world_, device_.is_cuda()),
                                             counters_.position);
  });
  if (world_.isRoot()) {
    // On a terminal a live progress line; in batch logs the periodic report lines suffice.
    progress_ =
        std::make_unique<ProgressReporter>(cfg_.run.steps, counters_.step, cfg_.run.log_every,
                                           cfg_.log.progress && ::isatty(STDERR_FILENO));
  }

  spdlog::info("training steps {}..{} ({} steps per epoch)", counters_.step, cfg_.run.steps,
               loader_->stepsPerEpoch());
  while (counters_.step < cfg_.run.steps) {
    const std::int64_t before = counters_.step;
    runStep();
    pollCheckpoint();
    const std::int64_t step = counters_.step;
    const bool advanced = step > before;
    if (advanced && step % cfg_.run.log_every == 0) report();
    if (advanced && cfg_.run.image_every > 0 && step % cfg_.run.image_every == 0) {
      previews_->write(*task_, step);
    }
    if (advanced && cfg_.checkpoint.every > 0 && step % cfg_.checkpoint.every == 0) {
      saveCheckpoint(/*wait=*/false);
    }
    if (agreeStop()) {
      saveCheckpoint(/*wait=*/true);
      if (progress_) progress_->finish();
      previews_->wait();
      throw Preempted("preempted at step " + std::to_string(counters_.step) +
                      " after saving; run again to resume");
    }
  }
  if (progress_) progress_->finish();
  if (log_.steps() > 0) report();
  saveCheckpoint(/*wait=*/true);
  previews_->write(*task_, counters_.step);
  evaluateAtEnd();
  previews_->wait();
  TrainingSummary summary;
  summary.steps = counters_.step - start_step;
  summary.skipped_steps = counters_.skipped;
  summary.seconds = secondsSince(started_);
  return summary;
}

}  // namespace

TrainingSummary train(const TrainerOptions& options, const comm::MpiSession& mpi) {
  TrainingRun run(options, mpi);
  return run.run();
}

}  // namespace tessera::trainer
