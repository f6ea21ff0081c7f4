#include "data/dataset_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <system_error>
#include <vector>

#include "core/error.h"
#include "data/detail/hdf5.h"

namespace tessera::data {

using detail::checkHdf5;
using detail::Handle;
using detail::RowSelection;
using detail::selectRows;

struct DatasetWriter::Impl {
  std::string path;
  std::string temp_path;
  std::int64_t count = 0;
  ImageShape shape;
  std::int64_t chunk = 0;
  std::int64_t written = 0;
  bool committed = false;
  Handle file;
  Handle images;
  Handle labels;
};

namespace {

constexpr std::int64_t kAutoChunkBytes = 1 << 20;

void writeSlab(hid_t dataset, std::int64_t start, std::int64_t n, hid_t mem_type, const void* data,
               const std::string& what) {
  const RowSelection sel = selectRows(dataset, start, n, what);
  checkHdf5(
      H5Dwrite(dataset, mem_type, sel.mem_space.get(), sel.file_space.get(), H5P_DEFAULT, data),
      what, false);
}

// No timestamps in object headers, so converting the same input twice gives identical bytes.
Handle untimedCreatePlist(hid_t cls) {
  Handle plist(H5Pcreate(cls), H5Pclose);
  checkHdf5(plist.get(), "H5Pcreate", false);
  checkHdf5(H5Pset_obj_track_times(plist.get(), false), "H5Pset_obj_track_times", false);
  return plist;
}

void fsyncPath(const std::string& path, int flags) {
  const int fd = ::open(path.c_str(), flags);
  if (fd < 0) return;  // best effort: some file systems refuse to open directories
  ::fsync(fd);
  ::close(fd);
}

}  // namespace

DatasetWriter::DatasetWriter(std::string path, std::int64_t count, ImageShape shape, bool labels,
                             WriteOptions options)
    : impl_(std::make_unique<Impl>()) {
  const detail::Hdf5Lock lock;
  detail::quietErrors();
  Impl& d = *impl_;
  d.path = std::move(path);
  d.count = count;
  d.shape = shape;
  if (count <= 0) throw InputError("no images to write to '" + d.path + "'");
  if (shape.height <= 0 || shape.width <= 0 || shape.channels <= 0) {
    throw InputError("invalid image shape " + shape.str() + " for '" + d.path + "'");
  }
  if (options.compression < 0 || options.compression > 9) {
    throw InputError("compression level must be 0-9, got " + std::to_string(options.compression));
  }
  if (options.chunk < 0) {
    throw InputError("chunk must be >= 0 images, got " + std::to_string(options.chunk));
  }
  std::error_code ec;
  if (std::filesystem::is_directory(d.path, ec)) {
    throw InputError("output path '" + d.path + "' is a directory, expected a file name");
  }
  if (std::filesystem::exists(d.path, ec) && !options.force) {
    throw InputError("output file '" + d.path + "' exists; pass --force to overwrite it");
  }
  const std::filesystem::path parent = std::filesystem::path(d.path).parent_path();
  if (!parent.empty()) {
    std::filesystem::create_directories(parent, ec);
    if (ec) throw Error("cannot create directory '" + parent.string() + "': " + ec.message());
  }

  d.chunk = options.chunk > 0 ? options.chunk
                              : std::max<std::int64_t>(1, kAutoChunkBytes / shape.bytes());
  d.chunk = std::min(d.chunk, count);
  d.temp_path = d.path + ".tmp." + std::to_string(::getpid());

  Handle fcpl = untimedCreatePlist(H5P_FILE_CREATE);
  d.file = Handle(H5Fcreate(d.temp_path.c_str(), H5F_ACC_TRUNC, fcpl.get(), H5P_DEFAULT), H5Fclose);
  checkHdf5(d.file.get(), "cannot create '" + d.temp_path + "'", false);

  const hsize_t dims[4] = {static_cast<hsize_t>(count), static_cast<hsize_t>(shape.height),
                           static_cast<hsize_t>(shape.width), static_cast<hsize_t>(shape.channels)};
  const hsize_t chunk[4] = {static_cast<hsize_t>(d.chunk), dims[1], dims[2], dims[3]};
  Handle space(H5Screate_simple(4, dims, nullptr), H5Sclose);
  checkHdf5(space.get(), "H5Screate_simple", false);
  Handle dcpl = untimedCreatePlist(H5P_DATASET_CREATE);
  checkHdf5(H5Pset_chunk(dcpl.get(), 4, chunk), "H5Pset_chunk", false);
  if (options.compression > 0) {
    checkHdf5(H5Pset_deflate(dcpl.get(), static_cast<unsigned>(options.compression)),
              "H5Pset_deflate", false);
  }
  d.images = Handle(H5Dcreate2(d.file.get(), "images", H5T_STD_U8LE, space.get(), H5P_DEFAULT,
                               dcpl.get(), H5P_DEFAULT),
                    H5Dclose);
  checkHdf5(d.images.get(), "cannot create dataset 'images' in '" + d.temp_path + "'", false);

  if (labels) {
    const hsize_t ldims[1] = {static_cast<hsize_t>(count)};
    Handle lspace(H5Screate_simple(1, ldims, nullptr), H5Sclose);
    checkHdf5(lspace.get(), "H5Screate_simple", false);
    Handle ldcpl = untimedCreatePlist(H5P_DATASET_CREATE);
    d.labels = Handle(H5Dcreate2(d.file.get(), "labels", H5T_STD_I64LE, lspace.get(), H5P_DEFAULT,
                                 ldcpl.get(), H5P_DEFAULT),
                      H5Dclose);
    checkHdf5(d.labels.get(), "cannot create dataset 'labels' in '" + d.temp_path + "'", false);
  }
}

DatasetWriter::~DatasetWriter() {
  if (impl_ && !impl_->committed) {
    impl_->labels.reset();
    impl_->images.reset();
    impl_->file.reset();
    std::error_code ec;
    if (!impl_->temp_path.empty()) std::filesystem::remove(impl_->temp_path, ec);
  }
}

void DatasetWriter::append(const std::uint8_t* images, const std::int64_t* labels, std::int64_t n) {
  Impl& d = *impl_;
  if (n < 0 || d.written + n > d.count) {
    throw Error("writing " + std::to_string(n) + " images after " + std::to_string(d.written) +
                " would exceed the " + std::to_string(d.count) + " of '" + d.path + "'");
  }
  if (n == 0) return;
  const detail::Hdf5Lock lock;
  detail::quietErrors();
  writeSlab(d.images.get(), d.written, n, H5T_NATIVE_UINT8, images,
            "writing images to '" + d.temp_path + "'");
  if (d.labels) {
    writeSlab(d.labels.get(), d.written, n, H5T_NATIVE_INT64, labels,
              "writing labels to '" + d.temp_path + "'");
  }
  d.written += n;
}

void DatasetWriter::setAttribute(const std::string& name, const std::vector<double>& values) {
  Impl& d = *impl_;
  const detail::Hdf5Lock lock;
  detail::quietErrors();
  const std::string what = "attribute '" + name + "' of '" + d.temp_path + "'";
  const hsize_t dims[1] = {values.size()};
  Handle space(H5Screate_simple(1, dims, nullptr), H5Sclose);
  checkHdf5(space.get(), what, false);
  Handle attr(H5Acreate2(d.images.get(), name.c_str(), H5T_IEEE_F64LE, space.get(), H5P_DEFAULT,
                         H5P_DEFAULT),
              H5Aclose);
  checkHdf5(attr.get(), what, false);
  checkHdf5(H5Awrite(attr.get(), H5T_NATIVE_DOUBLE, values.data()), what, false);
}

void DatasetWriter::setAttribute(const std::string& name, const std::string& value) {
  Impl& d = *impl_;
  const detail::Hdf5Lock lock;
  detail::quietErrors();
  const std::string what = "attribute '" + name + "' of '" + d.temp_path + "'";
  Handle type(H5Tcopy(H5T_C_S1), H5Tclose);
  checkHdf5(type.get(), what, false);
  checkHdf5(H5Tset_size(type.get(), std::max<std::size_t>(1, value.size())), what, false);
  Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  checkHdf5(space.get(), what, false);
  Handle attr(
      H5Acreate2(d.images.get(), name.c_str(), type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT),
      H5Aclose);
  checkHdf5(attr.get(), what, false);
  const std::string padded = value.empty() ? std::string(1, '\0') : value;
  checkHdf5(H5Awrite(attr.get(), type.get(), padded.data()), what, false);
}

std::int64_t DatasetWriter::written() const {
  return impl_->written;
}
std::int64_t DatasetWriter::chunkImages() const {
  return impl_->chunk;
}

void DatasetWriter::commit() {
  Impl& d = *impl_;
  if (d.written != d.count) {
    throw Error("'" + d.path + "' is incomplete: " + std::to_string(d.written) + " of " +
                std::to_string(d.count) + " images written");
  }
  {
    const detail::Hdf5Lock lock;
    detail::quietErrors();
    d.labels.reset();
    d.images.reset();
    checkHdf5(H5Fflush(d.file.get(), H5F_SCOPE_GLOBAL), "flushing '" + d.temp_path + "'", false);
    d.file.reset();
  }
  fsyncPath(d.temp_path, O_RDONLY);
  std::error_code ec;
  std::filesystem::rename(d.temp_path, d.path, ec);
  if (ec) {
    throw Error("cannot rename '" + d.temp_path + "' to '" + d.path + "': " + ec.message());
  }
  d.committed = true;
  const std::filesystem::path parent = std::filesystem::path(d.path).parent_path();
  fsyncPath(parent.empty() ? "." : parent.string(), O_RDONLY | O_DIRECTORY);
}

}  // namespace tessera::data
