// `tessera sample`: images from the generative task a checkpoint names, as a PNG grid and as a
// Tessera image file (README "Dataset format", what `tessera eval` and the loader read).
//
// The n samples are cut into chunks of --batch samples aligned to the global sample index; rank r
// of N draws chunks [r C / N, (r + 1) C / N) of the C chunks, and rank 0 gathers them in index
// order. A sample's noise is keyed by (seed, its index) and every chunk is computed alike on any
// rank, so 1 and N ranks write the same images. The gather waits without a practical deadline:
// ranks finish their shares at different times and there is no training traffic to protect.
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <vector>

#include "comm/communicator.h"
#include "comm/local_communicator.h"
#include "comm/mpi_session.h"
#include "core/error.h"
#include "data/dataset_writer.h"
#include "data/image_grid.h"
#include "data/image_transform.h"
#include "trainer/cli.h"
#include "trainer/device.h"
#include "trainer/inference.h"

namespace tessera::trainer {
int runSampling(const SampleArgs& args, const comm::MpiSession& mpi) {
  if (args.n < 1) throw UsageError("--n: must be at least 1");
  if (args.batch < 1) throw UsageError("--batch: must be at least 1");
  if (args.out.empty()) throw UsageError("--out: a PNG path is required");
  const comm::World& world = mpi.world();
  const c10::Device device = selectDevice(DevicePreference::kAuto, world);
  LoadedTask m = loadTask(args.checkpoint, parseWeightChoice(args.weights, "--weights"), device,
                          std::make_unique<comm::LocalCommunicator>(device));
  GenerateOptions g;
  g.sampler = args.sampler;
  if (args.steps > 0) g.steps = args.steps;
  if (args.has_eta) g.eta = args.eta;
  if (args.has_guidance) g.guidance = args.guidance;
  if (args.has_seed) g.seed = args.seed;
  // A count of 0 checks the options (the same on every rank) before any work and gives the
  // samples' shape (a latent diffusion model's are its decoder's images).
  const at::Tensor probe = m.task->generate(0, 0, g);
  if (!probe.defined()) {
    throw NotAvailable("task '" + m.task->name() + "' of " + args.checkpoint +
                       " is not generative: sampling is not available (diffusion tasks sample)");
  }

  const std::int64_t chunks = (args.n + args.batch - 1) / args.batch;
  const std::int64_t c0 = chunks * world.rank / world.size;
  const std::int64_t c1 = chunks * (world.rank + 1) / world.size;
  const auto started = std::chrono::steady_clock::now();
  std::vector<at::Tensor> mine;
  for (std::int64_t c = c0; c < c1; ++c) {
    const std::int64_t first = c * args.batch;
    const std::int64_t count = std::min(args.batch, args.n - first);
    const at::Tensor x = m.task->generate(first, count, g);
    if (!x.defined() || x.dim() != 4 || x.size(0) != count || !at::isfinite(x).all().item<bool>()) {
      throw Error("samples [" + std::to_string(first) + ", " + std::to_string(first + count) +
                  ") are missing, misshapen or not finite");
    }
    mine.push_back(data::floatToImages(x));
  }
  const data::ImageShape shape{probe.size(2), probe.size(3), probe.size(1)};
  at::Tensor local = mine.empty()
                         ? torch::empty({0, shape.height, shape.width, shape.channels}, at::kByte)
                         : at::cat(mine);
  const double local_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();

  at::Tensor all = local;
  if (world.size > 1) {
    comm::CommOptions co;
    co.timeout = std::chrono::hours(24 * 7);
    auto gather = comm::makeControlCommunicator(mpi, co);
    all = gather->allGather(local, {"allgather", "samples", -1, -1});
  }
  const double total_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  if (!world.isRoot()) return kExitOk;
  if (all.size(0) != args.n) {
    throw Error("gathered " + std::to_string(all.size(0)) + " samples, expected " +
                std::to_string(args.n));
  }
  const auto columns = static_cast<int>(std::ceil(std::sqrt(static_cast<double>(args.n))));
  data::writeImageGrid(args.out, data::modelInput(all), columns);
  if (!args.h5.empty()) {
    data::WriteOptions wo;
    wo.force = true;
    data::DatasetWriter writer(args.h5, args.n, shape, /*labels=*/false, wo);
    writer.append(all.data_ptr<std::uint8_t>(), nullptr, args.n);
    writer.commit();
  }
  spdlog::info(
      "wrote {}{} ({} samples, checkpoint step {}, {} weights, {} rank(s)): {:.2f} s sampling "
      "on rank 0, {:.2f} s in all",
      args.out, args.h5.empty() ? "" : " and " + args.h5, args.n, m.step, m.weights, world.size,
      local_s, total_s);
  return kExitOk;
}

}  // namespace tessera::trainer
