#include "data/loader_benchmark.h"

#include <algorithm>
#include <chrono>
#include <vector>

#include "core/error.h"
#include "data/detail/hdf5.h"
#include "data/image_file.h"
#include "data/loader.h"

namespace tessera::data {
namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

}  // namespace

JsonObject benchmarkLoader(const LoaderOptions& options, std::int64_t batches) {
  const auto t_open = Clock::now();
  Loader loader(options, DataPosition{});
  const double open_seconds = since(t_open);
  loader.next();
  const double wait_before = loader.waitSeconds();
  const auto t0 = Clock::now();
  for (std::int64_t i = 0; i < batches; ++i) loader.next();
  const double seconds = since(t0);
  const double images = static_cast<double>(batches * options.batch_size);
  const ImageShape shape = loader.shape();
  JsonObject json;
  json.add("bench", "data_loader")
      .add("path", options.path)
      .add("dataset_images", loader.datasetSize())
      .add("shape", shape.str())
      .add("batch", options.batch_size)
      .add("world", options.world)
      .add("workers", options.workers)
      .add("prefetch", options.prefetch)
      .add("shuffle", options.shuffle.block ? "block" + std::to_string(options.shuffle.block_size)
                                            : std::string("full"))
      .add("hflip", options.hflip)
      .add("cached", loader.cached())
      .add("reads", loader.directReads() ? "pread" : "hdf5")
      .add("open_seconds", open_seconds)
      .add("batches", batches)
      .add("images", static_cast<std::int64_t>(images))
      .add("seconds", seconds)
      .add("images_per_s", images / seconds)
      .add("mb_per_s", images * static_cast<double>(shape.bytes()) / seconds / 1e6)
      .add("wait_seconds", loader.waitSeconds() - wait_before);
  return json;
}

JsonObject benchmarkRawRead(const std::string& path, const std::string& dataset,
                            std::int64_t batch_images, std::int64_t images) {
  using detail::checkHdf5;
  using detail::Handle;
  // Checks the file like the loader would, and closes it: HDF5 refuses to open one file twice
  // with different locking flags. The timed part below is plain HDF5.
  std::int64_t size = 0, bytes = 0;
  {
    const ImageFile checked = ImageFile::open(path, dataset);
    size = checked.size();
    bytes = checked.shape().bytes();
  }
  const std::int64_t n = images > 0 ? images : size;
  batch_images = std::max<std::int64_t>(1, batch_images);

  const auto t0 = Clock::now();
  const detail::Hdf5Lock lock;
  detail::quietErrors();
  Handle file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  checkHdf5(file.get(), "opening '" + path + "'");
  Handle ds(H5Dopen2(file.get(), dataset.c_str(), H5P_DEFAULT), H5Dclose);
  checkHdf5(ds.get(), "opening dataset '" + dataset + "' of '" + path + "'");
  Handle file_space(H5Dget_space(ds.get()), H5Sclose);
  const int rank = H5Sget_simple_extent_ndims(file_space.get());
  std::vector<hsize_t> dims(static_cast<std::size_t>(rank));
  H5Sget_simple_extent_dims(file_space.get(), dims.data(), nullptr);
  std::vector<std::uint8_t> buffer(static_cast<std::size_t>(batch_images * bytes));
  std::vector<hsize_t> offset(dims.size(), 0), count = dims;
  for (std::int64_t done = 0; done < n;) {
    const std::int64_t start = done % size;
    const std::int64_t k = std::min({batch_images, size - start, n - done});
    done += k;
    offset[0] = static_cast<hsize_t>(start);
    count[0] = static_cast<hsize_t>(k);
    checkHdf5(H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, offset.data(), nullptr,
                                  count.data(), nullptr),
              "H5Sselect_hyperslab", false);
    Handle mem_space(H5Screate_simple(rank, count.data(), nullptr), H5Sclose);
    checkHdf5(H5Dread(ds.get(), H5T_NATIVE_UINT8, mem_space.get(), file_space.get(), H5P_DEFAULT,
                      buffer.data()),
              "reading '" + path + "'", false);
  }
  const double seconds = since(t0);
  JsonObject json;
  json.add("bench", "data_raw_read")
      .add("path", path)
      .add("images", n)
      .add("batch_images", batch_images)
      .add("seconds", seconds)
      .add("images_per_s", static_cast<double>(n) / seconds)
      .add("mb_per_s", static_cast<double>(n * bytes) / seconds / 1e6);
  return json;
}

}  // namespace tessera::data
