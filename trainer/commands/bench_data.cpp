// `tessera bench data`: the loader on data.train vs a raw sequential H5Dread of the same bytes.
#include "comm/mpi_session.h"
#include "core/error.h"
#include "data/image_file.h"
#include "data/loader_benchmark.h"
#include "trainer/bench_commands.h"
#include "trainer/task_factory.h"

namespace tessera::trainer {

std::vector<JsonObject> benchData(const TrainConfig& c, const BenchArgs& args,
                                  const comm::MpiSession& mpi) {
  if (c.data.train.empty()) throw ConfigError("bench data: data.train is not set");
  const comm::World& w = mpi.world();
  const data::LoaderOptions o = loaderOptions(c, w);

  // Closed again before the raw read: HDF5 refuses to open one file twice with different
  // locking flags.
  const std::int64_t size = data::ImageFile::open(c.data.train, c.data.dataset, &o.expected).size();
  // Default: one pass over this rank's share of the file.
  const std::int64_t batches =
      args.steps > 0 ? args.steps
                     : std::max<std::int64_t>(1, size / (c.data.batch_size * w.size) - 1);
  JsonObject loader = data::benchmarkLoader(o, batches);
  // The same number of images, starting over at the end of the file like the loader's epochs.
  JsonObject raw =
      data::benchmarkRawRead(c.data.train, c.data.dataset, 256, batches * c.data.batch_size);
  return {loader, raw};
}

}  // namespace tessera::trainer
