// `tessera bench data`: the loader on data.train vs a raw sequential H5Dread of the same bytes.
#include "comm/mpi_session.h"
#include "core/error.h"
#include "data/image_file.h"
#include "data/loader_benchmark.h"
#include "trainer/bench_commands.h"

namespace tessera::trainer {

std::vector<JsonObject> benchData(const TrainConfig& c, const BenchArgs& args,
                                  const comm::MpiSession& mpi) {
  if (c.data.train.empty()) throw ConfigError("bench data: data.train is not set");
  const comm::World& w = mpi.world();
  data::LoaderOptions o;
  o.path = c.data.train;
  o.dataset = c.data.dataset;
  o.expected = {c.model.image_size, c.model.image_size, c.model.in_channels};
  o.batch_size = c.data.batch_size;
  o.rank = w.rank;
  o.world = w.size;
  o.seed = static_cast<std::uint64_t>(c.run.seed);
  o.shuffle.block = c.data.shuffle == ShuffleMode::kBlock;
  o.shuffle.block_size = c.data.shuffle_block;
  o.prefetch = c.data.prefetch;
  o.workers = c.data.workers;
  o.hflip = c.data.hflip;
  o.cache = c.data.cache == CacheMode::kMemory ? data::LoaderOptions::Cache::kMemory
            : c.data.cache == CacheMode::kNone ? data::LoaderOptions::Cache::kNone
                                               : data::LoaderOptions::Cache::kAuto;
  o.cache_max_bytes = c.data.cache_max_gb * 1e9;

  // Closed again before the raw read: HDF5 refuses to open one file twice with different
  // locking flags.
  const std::int64_t size = data::ImageFile::open(c.data.train, c.data.dataset, &o.expected).size();
  // Default: one pass over this rank's share of the file.
  const std::int64_t batches =
      args.steps > 0 ? args.steps
                     : std::max<std::int64_t>(1, size / (c.data.batch_size * w.size) - 1);
  JsonObject loader = data::benchmarkLoader(o, batches);
  JsonObject raw = data::benchmarkRawRead(c.data.train, c.data.dataset, 256,
                                          std::min(size, batches * c.data.batch_size));
  return {loader, raw};
}

}  // namespace tessera::trainer
