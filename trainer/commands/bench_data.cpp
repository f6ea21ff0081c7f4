// `tessera bench data`: the loader on data.train vs a raw sequential H5Dread of the same bytes,
// in alternating rounds.
#include "comm/mpi_session.h"
#include "core/error.h"
#include "data/image_file.h"
#include "data/loader_benchmark.h"
#include "trainer/bench_commands.h"
#include "trainer/task_factory.h"

namespace tessera::trainer {

namespace {

// Alternating loader and raw segments per run: enough to spread both over the same stretch of
// a shared machine's load, few enough that each segment (4,000 batches of 256 at --steps 20000)
// lasts far longer than a batch.
constexpr int kRounds = 5;

}  // namespace

std::vector<JsonObject> benchData(const TrainConfig& c, const BenchArgs& args,
                                  const comm::MpiSession& mpi) {
  if (c.data.train.empty()) throw ConfigError("bench data: data.train is not set");
  const comm::World& w = mpi.world();
  const data::LoaderOptions o = loaderOptions(c, w);

  const std::int64_t size = data::ImageFile::open(c.data.train, c.data.dataset, &o.expected).size();
  // Default: one pass over this rank's share of the file.
  const std::int64_t batches =
      args.steps > 0 ? args.steps
                     : std::max<std::int64_t>(1, size / (c.data.batch_size * w.size) - 1);
  auto [loader, raw] = data::benchmarkLoaderAndRawRead(o, batches, kRounds);
  return {loader, raw};
}

}  // namespace tessera::trainer
