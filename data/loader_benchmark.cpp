#include "data/loader_benchmark.h"

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/detail/hdf5.h"
#include "data/loader.h"

namespace tessera::data {
namespace {

using Clock = std::chrono::steady_clock;
using detail::checkHdf5;
using detail::Handle;

double since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Plain H5Dread calls of whole images, front to back from image `next`, into one reused buffer,
// with HDF5's default settings (as any reader gets them).
class RawReader {
 public:
  RawReader(const std::string& path, const std::string& dataset, std::int64_t batch_images,
            std::int64_t next)
      : path_(path), batch_images_(batch_images), next_(next) {
    const detail::Hdf5Lock lock;
    detail::quietErrors();
    file_ = Handle(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
    checkHdf5(file_.get(), "opening '" + path + "'");
    dataset_ = Handle(H5Dopen2(file_.get(), dataset.c_str(), H5P_DEFAULT), H5Dclose);
    checkHdf5(dataset_.get(), "opening dataset '" + dataset + "' of '" + path + "'");
    file_space_ = Handle(H5Dget_space(dataset_.get()), H5Sclose);
    checkHdf5(file_space_.get(), "H5Dget_space", false);
    const int rank = H5Sget_simple_extent_ndims(file_space_.get());
    checkHdf5(rank, "H5Sget_simple_extent_ndims", false);
    dims_.resize(static_cast<std::size_t>(rank));
    H5Sget_simple_extent_dims(file_space_.get(), dims_.data(), nullptr);
    std::int64_t image_bytes = 1;
    for (std::size_t d = 1; d < dims_.size(); ++d) {
      image_bytes *= static_cast<std::int64_t>(dims_[d]);
    }
    buffer_.resize(static_cast<std::size_t>(batch_images_ * image_bytes));
  }

  // Reads the next `images` images; returns the seconds it took.
  double read(std::int64_t images) {
    const auto t0 = Clock::now();
    const detail::Hdf5Lock lock;
    const auto size = static_cast<std::int64_t>(dims_[0]);
    std::vector<hsize_t> offset(dims_.size(), 0), count = dims_;
    for (std::int64_t done = 0; done < images;) {
      const std::int64_t k = std::min({batch_images_, size - next_, images - done});
      offset[0] = static_cast<hsize_t>(next_);
      count[0] = static_cast<hsize_t>(k);
      checkHdf5(H5Sselect_hyperslab(file_space_.get(), H5S_SELECT_SET, offset.data(), nullptr,
                                    count.data(), nullptr),
                "H5Sselect_hyperslab", false);
      Handle mem_space(H5Screate_simple(static_cast<int>(count.size()), count.data(), nullptr),
                       H5Sclose);
      checkHdf5(H5Dread(dataset_.get(), H5T_NATIVE_UINT8, mem_space.get(), file_space_.get(),
                        H5P_DEFAULT, buffer_.data()),
                "reading '" + path_ + "'", false);
      done += k;
      next_ = (next_ + k) % size;
    }
    return since(t0);
  }

  std::int64_t next() const { return next_; }

 private:
  const std::string path_;
  const std::int64_t batch_images_;
  std::int64_t next_;
  Handle file_, dataset_, file_space_;
  std::vector<hsize_t> dims_;
  std::vector<std::uint8_t> buffer_;
};

}  // namespace

std::pair<JsonObject, JsonObject> benchmarkLoaderAndRawRead(const LoaderOptions& options,
                                                            std::int64_t batches, int rounds,
                                                            std::int64_t raw_batch_images) {
  batches = std::max<std::int64_t>(1, batches);
  rounds = static_cast<int>(std::clamp<std::int64_t>(rounds, 1, batches));
  raw_batch_images = std::max<std::int64_t>(1, raw_batch_images);
  double open_seconds = 0, loader_seconds = 0, raw_seconds = 0, wait_seconds = 0;
  std::int64_t dataset_images = 0;
  ImageShape shape;
  bool cached = false, direct_reads = false;
  DataPosition position;
  std::int64_t raw_next = 0;
  for (int r = 0; r < rounds; ++r) {
    const std::int64_t segment = batches / rounds + (r < batches % rounds ? 1 : 0);
    {
      // A loader per round, closed before the raw read opens the file: were it open, HDF5 would
      // share its dataset object, and the raw read would run with the loader's chunk cache
      // settings instead of the defaults (no chunk cache: one copy fewer, and much faster).
      const auto t_open = Clock::now();
      Loader loader(options, position);
      if (r == 0) {
        open_seconds = since(t_open);
        dataset_images = loader.datasetSize();
        shape = loader.shape();
        cached = loader.cached();
        direct_reads = loader.directReads();
      }
      position = loader.next().next;  // untimed: the workers start
      const double wait_before = loader.waitSeconds();
      const auto t0 = Clock::now();
      for (std::int64_t i = 0; i < segment; ++i) position = loader.next().next;
      loader_seconds += since(t0);
      wait_seconds += loader.waitSeconds() - wait_before;
    }
    RawReader raw(options.path, options.dataset, raw_batch_images, raw_next);
    raw_seconds += raw.read(segment * options.batch_size);
    raw_next = raw.next();
  }

  const std::int64_t images = batches * options.batch_size;
  const auto mb_per_s = [&](double seconds) {
    return static_cast<double>(images) * static_cast<double>(shape.bytes()) / seconds / 1e6;
  };
  JsonObject loader_json;
  loader_json.add("bench", "data_loader")
      .add("path", options.path)
      .add("dataset_images", dataset_images)
      .add("shape", shape.str())
      .add("batch", options.batch_size)
      .add("world", options.world)
      .add("workers", options.workers)
      .add("prefetch", options.prefetch)
      .add("shuffle", options.shuffle.block ? "block" + std::to_string(options.shuffle.block_size)
                                            : std::string("full"))
      .add("hflip", options.hflip)
      .add("cached", cached)
      .add("reads", direct_reads ? "pread" : "hdf5")
      .add("open_seconds", open_seconds)
      .add("rounds", rounds)
      .add("batches", batches)
      .add("images", images)
      .add("seconds", loader_seconds)
      .add("images_per_s", static_cast<double>(images) / loader_seconds)
      .add("mb_per_s", mb_per_s(loader_seconds))
      .add("wait_seconds", wait_seconds);
  JsonObject raw_json;
  raw_json.add("bench", "data_raw_read")
      .add("path", options.path)
      .add("rounds", rounds)
      .add("images", images)
      .add("batch_images", raw_batch_images)
      .add("seconds", raw_seconds)
      .add("images_per_s", static_cast<double>(images) / raw_seconds)
      .add("mb_per_s", mb_per_s(raw_seconds));
  return {loader_json, raw_json};
}

}  // namespace tessera::data
