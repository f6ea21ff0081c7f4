// `tessera bench allreduce`: the gradient reducer on the configured model's gradients vs a raw
// MPI_Allreduce of the same bytes, and how much of the communication hides behind backward.
#include <ATen/Parallel.h>
#include <torch/torch.h>

#include "comm/communicator.h"
#include "comm/mpi_session.h"
#include "comm/reducer_benchmark.h"
#include "core/error.h"
#include "core/keyed_rng.h"
#include "trainer/bench_commands.h"
#include "trainer/device.h"
#include "trainer/task_factory.h"
#include "trainer/tasks/vqvae_task.h"

namespace tessera::trainer {

std::vector<JsonObject> benchAllreduce(const TrainConfig& c, const BenchArgs& args,
                                       const comm::MpiSession& mpi) {
  const comm::World& w = mpi.world();
  const c10::Device device = selectDevice(c.run.device, w);
  at::set_num_threads(intraOpThreads(c.run.threads, w));
  comm::CommOptions co;
  co.timeout = std::chrono::milliseconds(static_cast<std::int64_t>(c.comm.timeout * 1000));
  auto grads = comm::makeCommunicator(mpi, device, co);

  // The reducer is measured on the VQ-VAE's gradients (the benchmark model of docs/benchmarks.md).
  if (c.task != "vqvae") {
    throw ConfigError("bench allreduce measures the VQ-VAE's gradients: use a task: vqvae config");
  }
  const data::ImageShape shape = trainingImageShape(c);
  models::VqVae model = makeVqVae(vqvaeOptions(c, static_cast<int>(shape.channels)),
                                  static_cast<std::uint64_t>(c.run.seed), device);
  std::vector<at::Tensor> params;
  for (auto& p : model->parameters()) params.push_back(p);
  comm::GradReducerOptions reducer = updaterOptions(c, "model").reducer;
  comm::BenchIterations iters;
  if (args.steps > 0) iters.iterations = static_cast<int>(args.steps);
  if (args.warmup >= 0) iters.warmup = static_cast<int>(args.warmup);

  JsonObject bandwidth = comm::benchReducerBandwidth(*grads, params, reducer, iters);
  bandwidth.add("model", c.run.name);

  auto gen = makeGenerator(rngKey(static_cast<std::uint64_t>(c.run.seed), RngPurpose::kTest,
                                  static_cast<std::uint64_t>(w.rank)));
  const at::Tensor x =
      (torch::rand({c.data.batch_size, shape.channels, shape.height, shape.width}, gen) * 2 - 1)
          .to(device);
  model->train();
  auto loss = [&] {
    model->quantizer()->discardPending();  // the benchmark never applies codebook updates
    const models::VqVaeOutput out = model->forward(x);
    return torch::mse_loss(out.reconstruction, x) + out.commitment;
  };
  JsonObject overlap = comm::benchReducerOverlap(*grads, *model, loss, reducer, iters);
  overlap.add("model", c.run.name).add("batch_per_rank", c.data.batch_size);
  return {bandwidth, overlap};
}

}  // namespace tessera::trainer
