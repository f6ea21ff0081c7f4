// `tessera bench train|allreduce|data|optim`: one JSON line per result on stdout (rank 0), warm-up
// excluded, every rank synchronised before the clock is read.
#include <ATen/Parallel.h>
#include <spdlog/spdlog.h>
#include <torch/csrc/autograd/profiler_legacy.h>
#include <torch/torch.h>

#include <chrono>
#include <iostream>

#include "comm/communicator.h"
#include "comm/model_sync.h"
#include "comm/mpi_session.h"
#include "core/error.h"
#include "core/json.h"
#include "core/keyed_rng.h"
#include "data/loader.h"
#include "models/parameters.h"
#include "trainer/bench_commands.h"
#include "trainer/cli.h"
#include "trainer/device.h"
#include "trainer/state_io.h"
#include "trainer/task_factory.h"

namespace tessera::trainer {
namespace {

using Clock = std::chrono::steady_clock;

// Batches for the timed loop: the configured dataset through the real loader, or (data.train
// empty) 8 keyed random batches per rank in [-1, 1], as the PyTorch peer uses.
class BenchBatches {
 public:
  BenchBatches(const TrainConfig& c, const comm::World& w) {
    if (!c.data.train.empty()) {
      loader_ = std::make_unique<data::Loader>(loaderOptions(c, w), data::DataPosition{});
      return;
    }
    const data::ImageShape s = trainingImageShape(c);
    for (int i = 0; i < 8; ++i) {
      data::Batch b;
      auto gen = makeGenerator(rngKey(static_cast<std::uint64_t>(c.run.seed), RngPurpose::kTest,
                                      static_cast<std::uint64_t>(w.rank), i));
      b.images = torch::rand({c.data.batch_size, s.channels, s.height, s.width}, gen) * 2 - 1;
      synthetic_.push_back(b);
    }
  }
  data::Batch next() {
    if (loader_) return loader_->next();
    return synthetic_[static_cast<std::size_t>(i_++ % synthetic_.size())];
  }
  double waitSeconds() const { return loader_ ? loader_->waitSeconds() : 0.0; }
  std::string source() const { return loader_ ? "hdf5" : "synthetic"; }

 private:
  std::unique_ptr<data::Loader> loader_;
  std::vector<data::Batch> synthetic_;
  std::int64_t i_ = 0;
};

JsonObject benchTrain(const TrainConfig& c, const BenchArgs& args, const comm::MpiSession& mpi) {
  const comm::World& w = mpi.world();
  const c10::Device device = selectDevice(c.run.device, w);
  at::set_num_threads(intraOpThreads(c.run.threads, w));
  comm::CommOptions co;
  co.timeout = std::chrono::milliseconds(static_cast<std::int64_t>(c.comm.timeout * 1000));
  auto control = comm::makeControlCommunicator(mpi, co);
  auto grads = comm::makeCommunicator(mpi, device, co);
  TaskEnvironment env;
  env.device = device;
  env.grads = grads.get();
  env.image = trainingImageShape(c);
  auto task = makeTask(c, env);
  std::vector<at::Tensor> all;
  for (auto& [name, t] : moduleTensors(task->modules())) all.push_back(t);
  {
    torch::NoGradGuard no_grad;
    comm::broadcastFromRoot(*grads, all, 0);
  }
  std::int64_t params = 0;
  for (auto& [name, m] : task->modules()) params += models::trainableParameterCount(*m);

  BenchBatches batches(c, w);
  const std::int64_t warmup = args.warmup >= 0 ? args.warmup : 5;
  const std::int64_t steps = args.steps > 0 ? args.steps : 30;
  StepContext ctx;
  for (const auto& o : c.optim) ctx.lrs[o.name] = o.config.lr;
  ctx.agree_finite = [&](bool ok) {
    at::Tensor t = torch::tensor({ok ? 1.0f : 0.0f});
    control->allReduce({t}, comm::ReduceOp::kMin, {"allreduce", "finite agreement", ctx.step, -1});
    return t.item<float>() > 0;
  };
  StepResult last;
  // Device work is finished before the clock is read (CUDA kernels run asynchronously).
  const auto sync = [&] {
    if (device.is_cuda()) torch::cuda::synchronize(device.index());
  };
  for (std::int64_t i = 0; i < warmup; ++i, ++ctx.step) last = task->step(batches.next(), ctx);
  sync();
  control->barrier({"barrier", "bench start", -1, -1});
  const double wait0 = batches.waitSeconds();
  double comm_s = 0, exposed_s = 0;
  // Per reducer (a GAN has two: generator, discriminator).
  std::vector<double> reducer_comm_s, reducer_exposed_s;
  std::unique_ptr<torch::autograd::profiler::RecordProfile> profile;
  if (!args.profile.empty() && w.isRoot()) {
    profile = std::make_unique<torch::autograd::profiler::RecordProfile>(args.profile);
  }
  const auto t0 = Clock::now();
  for (std::int64_t i = 0; i < steps; ++i, ++ctx.step) {
    last = task->step(batches.next(), ctx);
    const auto stats = task->commStats();
    reducer_comm_s.resize(stats.size());
    reducer_exposed_s.resize(stats.size());
    for (std::size_t r = 0; r < stats.size(); ++r) {
      comm_s += stats[r]->comm_seconds;
      exposed_s += stats[r]->exposed_seconds;
      reducer_comm_s[r] += stats[r]->comm_seconds;
      reducer_exposed_s[r] += stats[r]->exposed_seconds;
    }
  }
  sync();
  profile.reset();  // writes the trace
  control->barrier({"barrier", "bench end", -1, -1});
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();

  JsonObject out;
  out.add("bench", "train")
      .add("model", c.run.name)
      .add("params", params)
      .add("device", device.str())
      .add("world", w.size)
      .add("batch_per_rank", c.data.batch_size)
      .add("threads_per_rank", at::get_num_threads())
      .add("data", batches.source())
      .add("steps", steps)
      .add("steps_per_s", steps / seconds)
      .add("images_per_s", steps * c.data.batch_size * w.size / seconds)
      .add("data_wait_fraction", (batches.waitSeconds() - wait0) / seconds)
      .add("comm_seconds_per_step", comm_s / steps)
      .add("comm_hidden_fraction", comm_s > 0 ? 1 - exposed_s / comm_s : 0.0)
      .add("loss", last.losses.empty() ? 0.0 : last.losses[0].second.item<double>());
  // A task with several optimizers (the VQGAN's generator and discriminator) has one reducer
  // per optimizer, in the order its registration lists them (c.optim's order): each one's
  // communication and hidden fraction by its optimizer's name.
  if (reducer_comm_s.size() > 1 && reducer_comm_s.size() == c.optim.size()) {
    for (std::size_t r = 0; r < reducer_comm_s.size(); ++r) {
      const double cs = reducer_comm_s[r], es = reducer_exposed_s[r];
      out.add("comm_seconds_per_step_" + c.optim[r].name, cs / steps)
          .add("comm_hidden_fraction_" + c.optim[r].name, cs > 0 ? 1 - es / cs : 0.0);
    }
  }
  // Model FLOP/s of one device (and MFU against metrics.peak_tflops when it is set).
  const double flops_per_image = task->trainingFlopsPerImage();
  if (flops_per_image > 0) {
    const double tflops = flops_per_image * steps * c.data.batch_size / seconds / 1e12;
    out.add("gflop_per_image", flops_per_image / 1e9).add("tflops_per_device", tflops);
    if (c.metrics.peak_tflops > 0) out.add("mfu", tflops / c.metrics.peak_tflops);
  }
  return out;
}

}  // namespace

int runBench(const BenchArgs& args, const comm::MpiSession& mpi) {
  if (!args.profile.empty() && args.kind != "train") {
    throw InputError("--profile: only `bench train` records a profile (not `bench " + args.kind +
                     "`)");
  }
  TrainConfig config = loadTrainConfig(args.config, args.overrides);
  std::vector<JsonObject> lines;
  if (args.kind == "train") {
    lines.push_back(benchTrain(config, args, mpi));
  } else if (args.kind == "allreduce") {
    lines = benchAllreduce(config, args, mpi);
  } else if (args.kind == "optim") {
    lines = benchOptim(config, args, mpi);
  } else {
    lines = benchData(config, args, mpi);
  }
  if (mpi.world().isRoot()) {
    for (const auto& line : lines) std::cout << line.str() << std::endl;
  }
  return kExitOk;
}

}  // namespace tessera::trainer
