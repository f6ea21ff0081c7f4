#include "data/image_file.h"

#include <algorithm>
#include <filesystem>
#include <mutex>
#include <system_error>
#include <vector>

#include "core/error.h"
#include "data/detail/hdf5.h"

namespace tessera::data {

using detail::checkHdf5;
using detail::Handle;
using detail::RowSelection;
using detail::selectRows;

struct ImageFile::Impl {
  std::string path;
  std::string dataset;
  std::int64_t size = 0;
  ImageShape shape;
  std::int64_t chunk_images = 0;
  bool compressed = false;
  Handle file;
  Handle images;
  Handle labels;
  // Serialises reads: the hyperslab selections are per call, but an HDF5 build without
  // --enable-threadsafe must never be entered by two threads at once.
  mutable std::mutex mutex;
};

namespace {

std::string where(const std::string& path, const std::string& dataset) {
  return "data file '" + path + "', dataset '" + dataset + "'";
}

// Names of the objects in `group` (at most `limit`), for "did you mean" messages.
std::vector<std::string> listNames(hid_t group, std::size_t limit) {
  std::vector<std::string> names;
  auto visit = [](hid_t, const char* name, const H5L_info_t*, void* data) -> herr_t {
    static_cast<std::vector<std::string>*>(data)->emplace_back(name);
    return 0;
  };
  hsize_t idx = 0;
  H5Literate(group, H5_INDEX_NAME, H5_ITER_INC, &idx, visit, &names);
  H5Eclear2(H5E_DEFAULT);
  if (names.size() > limit) names.resize(limit);
  return names;
}

// True when every component of `name` (a path like "train/images") exists below `file`.
bool linkExists(hid_t file, const std::string& name) {
  std::size_t pos = 0;
  while (true) {
    const std::size_t slash = name.find('/', pos);
    const std::string prefix = name.substr(0, slash);
    if (!prefix.empty() && H5Lexists(file, prefix.c_str(), H5P_DEFAULT) <= 0) {
      H5Eclear2(H5E_DEFAULT);
      return false;
    }
    if (slash == std::string::npos) return true;
    pos = slash + 1;
  }
}

bool isDataset(hid_t file, const std::string& name) {
  H5O_info_t info;
  if (H5Oget_info_by_name(file, name.c_str(), &info, H5P_DEFAULT) < 0) {
    H5Eclear2(H5E_DEFAULT);
    return false;
  }
  return info.type == H5O_TYPE_DATASET;
}

std::string siblingPath(const std::string& dataset, const std::string& name) {
  const std::size_t slash = dataset.rfind('/');
  return slash == std::string::npos ? name : dataset.substr(0, slash + 1) + name;
}

std::string joinDims(const std::vector<hsize_t>& dims) {
  std::string s;
  for (std::size_t i = 0; i < dims.size(); ++i) s += (i ? " x " : "") + std::to_string(dims[i]);
  return s.empty() ? "scalar" : s;
}

std::vector<hsize_t> dimsOf(hid_t dataset) {
  Handle space(H5Dget_space(dataset), H5Sclose);
  checkHdf5(space.get(), "H5Dget_space");
  const int rank = H5Sget_simple_extent_ndims(space.get());
  checkHdf5(rank, "H5Sget_simple_extent_ndims");
  std::vector<hsize_t> dims(static_cast<std::size_t>(rank));
  if (rank > 0) H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
  return dims;
}

void checkExists(const std::string& path) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (!std::filesystem::exists(status)) {
    throw InputError("data file '" + path + "' does not exist");
  }
  if (std::filesystem::is_directory(status)) {
    throw InputError("data file '" + path + "' is a directory, expected an HDF5 file");
  }
}

Handle openFile(const std::string& path) {
  const htri_t is_hdf5 = H5Fis_hdf5(path.c_str());
  H5Eclear2(H5E_DEFAULT);
  if (is_hdf5 == 0) {
    throw InputError("data file '" + path +
                     "' is not an HDF5 file (no HDF5 signature; expected a dataset written by "
                     "`tessera convert` or h5py)");
  }
  Handle fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  checkHdf5(fapl.get(), "H5Pcreate(file access)", false);
#if H5_VERSION_GE(1, 10, 7)
  // Parallel file systems (Lustre, GPFS, NFS) often refuse or break flock(); readers never
  // need it.
  checkHdf5(H5Pset_file_locking(fapl.get(), false, true), "H5Pset_file_locking", false);
#endif
  const hid_t id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.get());
  if (id < 0) {
    const std::string prefix = "cannot open data file '" + path + "'";
    try {
      checkHdf5(id, prefix);
    } catch (const InputError& e) {
      const std::string what = e.what();
      if (what.find("truncated") != std::string::npos) {
        throw InputError("data file '" + path + "' is truncated, shorter than HDF5 recorded (" +
                         what.substr(std::min(what.size(), prefix.size() + 2)) + ")");
      }
      throw;
    }
  }
  return Handle(id, H5Fclose);
}

}  // namespace

ImageFile::ImageFile(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ImageFile::ImageFile(ImageFile&&) noexcept = default;
ImageFile& ImageFile::operator=(ImageFile&&) noexcept = default;
ImageFile::~ImageFile() = default;

ImageFile ImageFile::open(const std::string& path, const std::string& dataset,
                          const ImageShape* expected) {
  detail::quietErrors();
  checkExists(path);
  auto impl = std::make_unique<Impl>();
  impl->path = path;
  impl->dataset = dataset;
  impl->file = openFile(path);
  const hid_t file = impl->file.get();
  const std::string at = where(path, dataset);

  if (!linkExists(file, dataset) || !isDataset(file, dataset)) {
    std::string found;
    for (const auto& name : listNames(file, 10)) found += (found.empty() ? "" : ", ") + name;
    throw InputError("data file '" + path + "' has no dataset '" + dataset +
                     "' (found: " + (found.empty() ? "nothing" : found) +
                     "; the dataset name is data.dataset in the config)");
  }

  // The chunk cache is sized from the layout, which is only known once the dataset is open.
  Handle probe(H5Dopen2(file, dataset.c_str(), H5P_DEFAULT), H5Dclose);
  checkHdf5(probe.get(), "cannot open " + at);

  {
    Handle type(H5Dget_type(probe.get()), H5Tclose);
    checkHdf5(type.get(), "H5Dget_type on " + at);
    const bool is_uint8 = H5Tget_class(type.get()) == H5T_INTEGER && H5Tget_size(type.get()) == 1 &&
                          H5Tget_sign(type.get()) == H5T_SGN_NONE;
    if (!is_uint8) {
      throw InputError(at + ": wrong dtype: expected uint8, found " +
                       detail::describeType(type.get()));
    }
  }

  const std::vector<hsize_t> dims = dimsOf(probe.get());
  if (dims.size() != 3 && dims.size() != 4) {
    throw InputError(at + ": wrong rank: expected 4 (N x H x W x C) or 3 (N x H x W), found " +
                     std::to_string(dims.size()) + " (shape " + joinDims(dims) + ")");
  }
  impl->size = static_cast<std::int64_t>(dims[0]);
  impl->shape.height = static_cast<std::int64_t>(dims[1]);
  impl->shape.width = static_cast<std::int64_t>(dims[2]);
  impl->shape.channels = dims.size() == 4 ? static_cast<std::int64_t>(dims[3]) : 1;
  if (impl->size == 0) throw InputError(at + " has zero images (shape " + joinDims(dims) + ")");
  if (impl->shape.bytes() == 0) {
    throw InputError(at + ": wrong shape: images are empty (shape " + joinDims(dims) + ")");
  }
  if (expected != nullptr) {
    const ImageShape& e = *expected;
    const ImageShape& f = impl->shape;
    if ((e.height > 0 && e.height != f.height) || (e.width > 0 && e.width != f.width) ||
        (e.channels > 0 && e.channels != f.channels)) {
      throw InputError(at + ": wrong shape: expected images of " + e.str() +
                       " (H x W x C), found " + f.str() + " (dataset shape " + joinDims(dims) +
                       ")");
    }
  }

  {
    Handle dcpl(H5Dget_create_plist(probe.get()), H5Pclose);
    checkHdf5(dcpl.get(), "H5Dget_create_plist on " + at);
    if (H5Pget_layout(dcpl.get()) == H5D_CHUNKED) {
      std::vector<hsize_t> chunk(dims.size());
      checkHdf5(H5Pget_chunk(dcpl.get(), static_cast<int>(dims.size()), chunk.data()),
                "H5Pget_chunk on " + at);
      impl->chunk_images = static_cast<std::int64_t>(chunk[0]);
      impl->compressed = H5Pget_nfilters(dcpl.get()) > 0;
    }
  }
  probe.reset();

  // Uncompressed chunks: no cache, so a hyperslab read moves exactly its bytes. Filtered chunks
  // must be decoded whole: keep a few, so consecutive reads within one chunk decode it once.
  Handle dapl(H5Pcreate(H5P_DATASET_ACCESS), H5Pclose);
  checkHdf5(dapl.get(), "H5Pcreate(dataset access)", false);
  std::size_t cache_bytes = 0;
  if (impl->compressed) {
    const std::size_t chunk_bytes =
        static_cast<std::size_t>(impl->chunk_images * impl->shape.bytes());
    cache_bytes =
        std::clamp<std::size_t>(4 * chunk_bytes, std::size_t{1} << 20, std::size_t{256} << 20);
  }
  checkHdf5(H5Pset_chunk_cache(dapl.get(), 10007, cache_bytes, 1.0), "H5Pset_chunk_cache", false);
  impl->images = Handle(H5Dopen2(file, dataset.c_str(), dapl.get()), H5Dclose);
  checkHdf5(impl->images.get(), "cannot open " + at);

  const std::string labels = siblingPath(dataset, "labels");
  if (labels != dataset && linkExists(file, labels)) {
    const std::string lat = where(path, labels);
    if (!isDataset(file, labels)) throw InputError(lat + " is not a dataset");
    impl->labels = Handle(H5Dopen2(file, labels.c_str(), H5P_DEFAULT), H5Dclose);
    checkHdf5(impl->labels.get(), "cannot open " + lat);
    Handle type(H5Dget_type(impl->labels.get()), H5Tclose);
    checkHdf5(type.get(), "H5Dget_type on " + lat);
    if (H5Tget_class(type.get()) != H5T_INTEGER) {
      throw InputError(lat + ": wrong dtype: expected int64, found " +
                       detail::describeType(type.get()));
    }
    const std::vector<hsize_t> ldims = dimsOf(impl->labels.get());
    if (ldims.size() != 1 || ldims[0] != dims[0]) {
      throw InputError(lat + ": wrong shape: expected " + std::to_string(dims[0]) +
                       " (one label per image), found " + joinDims(ldims));
    }
  }
  return ImageFile(std::move(impl));
}

std::int64_t ImageFile::size() const {
  return impl_->size;
}
ImageShape ImageFile::shape() const {
  return impl_->shape;
}
bool ImageFile::hasLabels() const {
  return static_cast<bool>(impl_->labels);
}
const std::string& ImageFile::path() const {
  return impl_->path;
}
const std::string& ImageFile::dataset() const {
  return impl_->dataset;
}
std::int64_t ImageFile::chunkImages() const {
  return impl_->chunk_images;
}
bool ImageFile::compressed() const {
  return impl_->compressed;
}

namespace {

void readSlab(hid_t dataset, std::int64_t start, std::int64_t count, hid_t mem_type, void* out,
              const std::string& what) {
  const RowSelection sel = selectRows(dataset, start, count, what);
  checkHdf5(H5Dread(dataset, mem_type, sel.mem_space.get(), sel.file_space.get(), H5P_DEFAULT, out),
            what, false);
}

void checkRange(const ImageFile& f, std::int64_t start, std::int64_t count, const char* what) {
  if (start < 0 || count < 0 || start + count > f.size()) {
    throw Error(std::string(what) + " [" + std::to_string(start) + ", " +
                std::to_string(start + count) + ") is outside data file '" + f.path() + "' of " +
                std::to_string(f.size()) + " images");
  }
}

}  // namespace

void ImageFile::readRange(std::int64_t start, std::int64_t count, std::uint8_t* out) const {
  checkRange(*this, start, count, "images");
  if (count == 0) return;
  std::lock_guard<std::mutex> lock(impl_->mutex);
  detail::quietErrors();
  readSlab(impl_->images.get(), start, count, H5T_NATIVE_UINT8, out,
           "reading images [" + std::to_string(start) + ", " + std::to_string(start + count) +
               ") of " + where(impl_->path, impl_->dataset));
}

void ImageFile::readLabels(std::int64_t start, std::int64_t count, std::int64_t* out) const {
  if (!hasLabels()) throw Error("data file '" + impl_->path + "' has no labels");
  checkRange(*this, start, count, "labels");
  if (count == 0) return;
  std::lock_guard<std::mutex> lock(impl_->mutex);
  detail::quietErrors();
  readSlab(impl_->labels.get(), start, count, H5T_NATIVE_INT64, out,
           "reading labels of data file '" + impl_->path + "'");
}

}  // namespace tessera::data
