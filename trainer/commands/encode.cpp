// `tessera encode`: the quantised latents of an image file under a frozen VQ-VAE or VQGAN
// checkpoint, written as a Tessera image file of h x w x D "pixels" (trainer/latent_space.h) that
// a diffusion task with a `latent` section trains on.
//
// Rank r of N encodes images [r M / N, (r + 1) M / N) of the M in the file; rank 0 gathers the
// bytes in index order and writes them with the file's labels. The latent range and the
// autoencoder go into attributes of the images dataset: tessera_latent_lower / _upper (float64
// [D]), tessera_latent_autoencoder (the checkpoint file), tessera_latent_step.
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <chrono>
#include <vector>

#include "comm/communicator.h"
#include "comm/mpi_session.h"
#include "core/error.h"
#include "data/dataset_writer.h"
#include "data/image_file.h"
#include "data/image_transform.h"
#include "trainer/cli.h"
#include "trainer/device.h"
#include "trainer/inference.h"
#include "trainer/latent_space.h"

namespace tessera::trainer {

namespace {

std::vector<double> values(const at::Tensor& t) {
  const at::Tensor d = t.to(at::kDouble).contiguous();
  return std::vector<double>(d.data_ptr<double>(), d.data_ptr<double>() + d.numel());
}

}  // namespace

int runEncode(const EncodeArgs& args, const comm::MpiSession& mpi) {
  if (args.batch < 1) throw UsageError("--batch: must be at least 1");
  if (args.out.empty()) throw UsageError("--out: an HDF5 path is required");
  if (args.out == args.data) throw UsageError("--out: must differ from --data");
  const comm::World& world = mpi.world();
  const c10::Device device = selectDevice(DevicePreference::kAuto, world);
  LatentSpace space = LatentSpace::open(
      args.checkpoint, parseWeightChoice(args.weights, "--weights"), device, "--checkpoint");
  const data::ImageShape image = space.imageShape();
  const data::ImageFile file = data::ImageFile::open(args.data, "images", &image);
  const std::int64_t total = args.n > 0 ? std::min(args.n, file.size()) : file.size();
  const std::int64_t first = total * world.rank / world.size;
  const std::int64_t last = total * (world.rank + 1) / world.size;
  const data::ImageShape latent = space.latentShape();

  const auto started = std::chrono::steady_clock::now();
  at::Tensor bytes =
      torch::empty({last - first, latent.height, latent.width, latent.channels}, at::kByte);
  at::Tensor labels = torch::zeros({last - first}, at::kLong);
  // Latent vectors whose 8-bit form snaps back to their own code vector, and all of them.
  at::Tensor recovered = torch::zeros({2}, at::kLong);
  for (std::int64_t s = first; s < last; s += args.batch) {
    const std::int64_t count = std::min(args.batch, last - s);
    const at::Tensor z = space.encode(readImages(file, s, count));
    const at::Tensor stored = data::floatToImages(space.toUnit(z));
    bytes.slice(0, s - first, s - first + count).copy_(stored);
    const at::Tensor back = space.snap(space.fromUnit(data::modelInput(stored)));
    recovered[0] += back.eq(z).all(1).sum().item<std::int64_t>();
    recovered[1] += z.size(0) * z.size(2) * z.size(3);
    if (file.hasLabels()) {
      file.readLabels(s, count, labels.data_ptr<std::int64_t>() + (s - first));
    }
  }
  const double local_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();

  at::Tensor all = bytes, all_labels = labels;
  if (world.size > 1) {
    comm::CommOptions co;
    co.timeout = std::chrono::hours(24 * 7);  // ranks finish their shares at different times
    auto gather = comm::makeControlCommunicator(mpi, co);
    all = gather->allGather(bytes, {"allgather", "latents", -1, -1});
    all_labels = gather->allGather(labels, {"allgather", "labels", -1, -1});
    gather->allReduce({recovered}, comm::ReduceOp::kSum, {"allreduce", "recovered", -1, -1});
  }
  if (!world.isRoot()) return kExitOk;
  if (all.size(0) != total) {
    throw Error("gathered " + std::to_string(all.size(0)) + " latents, expected " +
                std::to_string(total));
  }
  data::WriteOptions wo;
  wo.force = args.force;
  data::DatasetWriter writer(args.out, total, latent, file.hasLabels(), wo);
  writer.append(all.data_ptr<std::uint8_t>(),
                file.hasLabels() ? all_labels.data_ptr<std::int64_t>() : nullptr, total);
  writer.setAttribute("tessera_latent_lower", values(space.lower()));
  writer.setAttribute("tessera_latent_upper", values(space.upper()));
  writer.setAttribute("tessera_latent_autoencoder", space.checkpoint());
  writer.setAttribute("tessera_latent_step",
                      std::vector<double>{static_cast<double>(space.step())});
  writer.commit();
  const double fraction =
      static_cast<double>(recovered[0].item<std::int64_t>()) /
      static_cast<double>(std::max<std::int64_t>(1, recovered[1].item<std::int64_t>()));
  spdlog::info(
      "wrote {}: {} latents of {} ({} of {} step {}, {} weights), {} x {} x {} each; the 8-bit "
      "latents snap back to their own code at {:.4f}% of {} positions; {:.2f} s encoding on rank "
      "0, {} rank(s)",
      args.out, total, args.data, space.taskName(), space.checkpoint(), space.step(),
      space.weights(), latent.height, latent.width, latent.channels, 100.0 * fraction,
      recovered[1].item<std::int64_t>(), local_s, world.size);
  return kExitOk;
}

}  // namespace tessera::trainer
