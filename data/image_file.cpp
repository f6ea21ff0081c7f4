#include "data/image_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
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
  // Direct reads (README "Dataset format"): when the images are stored unfiltered, either
  // contiguously or in chunks of whole images, readRange() reads them by file offset with
  // pread(2) on its own descriptor: no HDF5 call, so no Hdf5Lock, and workers read in parallel.
  // extents[e] is the file offset of images [e * extent_images, (e + 1) * extent_images).
  int fd = -1;
  std::int64_t extent_images = 0;
  std::vector<std::uint64_t> extents;
  ~Impl() {
    if (fd >= 0) ::close(fd);
  }
  void readDirect(std::int64_t start, std::int64_t count, std::uint8_t* out) const;
  void readHdf5(std::int64_t start, std::int64_t count, std::uint8_t* out) const;
  // The first and the last image read both ways: a layout this code misreads is never used.
  bool directReadsAgree() const;
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

// How a dataset is stored: its layout, its chunk dimensions (when chunked) and whether filters
// (compression) apply.
struct Layout {
  H5D_layout_t kind = H5D_LAYOUT_ERROR;
  std::vector<hsize_t> chunk;
  bool filtered = false;
};

Layout layoutOf(hid_t dataset, std::size_t rank, const std::string& at) {
  Handle dcpl(H5Dget_create_plist(dataset), H5Pclose);
  checkHdf5(dcpl.get(), "H5Dget_create_plist on " + at);
  Layout layout;
  layout.kind = H5Pget_layout(dcpl.get());
  layout.filtered = H5Pget_nfilters(dcpl.get()) > 0;
  if (layout.kind == H5D_CHUNKED) {
    layout.chunk.resize(rank);
    checkHdf5(H5Pget_chunk(dcpl.get(), static_cast<int>(rank), layout.chunk.data()),
              "H5Pget_chunk on " + at);
  }
  return layout;
}

// Where the image bytes lie in the file, for direct reads: one offset per chunk (or one for a
// contiguous dataset), or nothing when the layout does not allow it (filters, chunks that cut
// images, space not yet allocated, a user block, an HDF5 older than 1.10.5).
std::vector<std::uint64_t> locateImages(hid_t file, hid_t dataset, const std::vector<hsize_t>& dims,
                                        const Layout& layout, std::int64_t image_bytes,
                                        std::int64_t* extent_images) {
#if H5_VERSION_GE(1, 10, 5)
  if (layout.filtered) return {};
  Handle fcpl(H5Fget_create_plist(file), H5Pclose);
  hsize_t userblock = 0;
  if (!fcpl || H5Pget_userblock(fcpl.get(), &userblock) < 0 || userblock != 0) return {};
  const auto n = static_cast<std::int64_t>(dims[0]);
  switch (layout.kind) {
    case H5D_CONTIGUOUS: {
      const haddr_t addr = H5Dget_offset(dataset);
      if (addr == HADDR_UNDEF) return {};
      *extent_images = n;
      return {static_cast<std::uint64_t>(addr)};
    }
    case H5D_CHUNKED: {
      for (std::size_t d = 1; d < dims.size(); ++d) {
        if (layout.chunk[d] != dims[d]) return {};  // a chunk holds parts of images
      }
      const auto per_chunk = static_cast<std::int64_t>(layout.chunk[0]);
      const std::int64_t chunks = (n + per_chunk - 1) / per_chunk;
      std::vector<std::uint64_t> extents;
      extents.reserve(static_cast<std::size_t>(chunks));
      std::vector<hsize_t> coord(dims.size(), 0);
      for (std::int64_t c = 0; c < chunks; ++c) {
        coord[0] = static_cast<hsize_t>(c * per_chunk);
        unsigned filter_mask = 0;
        haddr_t addr = HADDR_UNDEF;
        hsize_t size = 0;
        if (H5Dget_chunk_info_by_coord(dataset, coord.data(), &filter_mask, &addr, &size) < 0 ||
            addr == HADDR_UNDEF || size != static_cast<hsize_t>(per_chunk * image_bytes)) {
          H5Eclear2(H5E_DEFAULT);
          return {};
        }
        extents.push_back(static_cast<std::uint64_t>(addr));
      }
      *extent_images = per_chunk;
      return extents;
    }
    default:
      return {};
  }
#else
  (void)file, (void)dataset, (void)dims, (void)layout, (void)image_bytes, (void)extent_images;
  return {};
#endif
}

// Reads exactly `size` bytes at `offset`, or throws naming the file (a file shorter than HDF5
// recorded ends the read early).
void preadFully(int fd, std::uint8_t* out, std::uint64_t size, std::uint64_t offset,
                const std::string& path) {
  while (size > 0) {
    const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(size, 1u << 30));
    const ssize_t got = ::pread(fd, out, want, static_cast<off_t>(offset));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) {
      throw Error("reading data file '" + path + "' at byte " + std::to_string(offset) + ": " +
                  std::strerror(errno));
    }
    if (got == 0) {
      throw Error("data file '" + path + "' ends before byte " + std::to_string(offset + size) +
                  " (truncated while open?)");
    }
    out += got;
    offset += static_cast<std::uint64_t>(got);
    size -= static_cast<std::uint64_t>(got);
  }
}

}  // namespace

ImageFile::ImageFile(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ImageFile::ImageFile(ImageFile&&) noexcept = default;
ImageFile& ImageFile::operator=(ImageFile&&) noexcept = default;
ImageFile::~ImageFile() = default;

ImageFile ImageFile::open(const std::string& path, const std::string& dataset,
                          const ImageShape* expected) {
  const detail::Hdf5Lock lock;
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

  const Layout layout = layoutOf(probe.get(), dims.size(), at);
  if (layout.kind == H5D_CHUNKED) {
    impl->chunk_images = static_cast<std::int64_t>(layout.chunk[0]);
    impl->compressed = layout.filtered;
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

  impl->extents = locateImages(file, impl->images.get(), dims, layout, impl->shape.bytes(),
                               &impl->extent_images);
  if (!impl->extents.empty()) {
    impl->fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (impl->fd < 0 || !impl->directReadsAgree()) impl->extents.clear();
  }

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

void ImageFile::Impl::readHdf5(std::int64_t start, std::int64_t count, std::uint8_t* out) const {
  const detail::Hdf5Lock lock;
  detail::quietErrors();
  readSlab(images.get(), start, count, H5T_NATIVE_UINT8, out,
           "reading images [" + std::to_string(start) + ", " + std::to_string(start + count) +
               ") of " + where(path, dataset));
}

// Coalesces the extents that follow each other in the file into one pread.
void ImageFile::Impl::readDirect(std::int64_t start, std::int64_t count, std::uint8_t* out) const {
  const auto bytes = static_cast<std::uint64_t>(shape.bytes());
  std::uint64_t run_offset = 0, run_size = 0;
  while (count > 0) {
    const std::int64_t e = start / extent_images;
    const std::int64_t within = start - e * extent_images;
    const std::int64_t k = std::min(count, extent_images - within);
    const std::uint64_t offset =
        extents[static_cast<std::size_t>(e)] + static_cast<std::uint64_t>(within) * bytes;
    const std::uint64_t size = static_cast<std::uint64_t>(k) * bytes;
    if (run_size > 0 && run_offset + run_size != offset) {
      preadFully(fd, out, run_size, run_offset, path);
      out += run_size;
      run_size = 0;
    }
    if (run_size == 0) run_offset = offset;
    run_size += size;
    start += k;
    count -= k;
  }
  if (run_size > 0) preadFully(fd, out, run_size, run_offset, path);
}

bool ImageFile::Impl::directReadsAgree() const {
  const auto bytes = static_cast<std::size_t>(shape.bytes());
  std::vector<std::uint8_t> direct(bytes), hdf5(bytes);
  for (const std::int64_t i : {std::int64_t{0}, size - 1}) {
    try {
      readDirect(i, 1, direct.data());
      readHdf5(i, 1, hdf5.data());
    } catch (const Error&) {
      return false;
    }
    if (direct != hdf5) return false;
  }
  return true;
}

void ImageFile::readRange(std::int64_t start, std::int64_t count, std::uint8_t* out) const {
  checkRange(*this, start, count, "images");
  if (count == 0) return;
  if (directReads()) {
    impl_->readDirect(start, count, out);
  } else {
    impl_->readHdf5(start, count, out);
  }
}

bool ImageFile::directReads() const {
  return !impl_->extents.empty();
}

void ImageFile::readLabels(std::int64_t start, std::int64_t count, std::int64_t* out) const {
  if (!hasLabels()) throw Error("data file '" + impl_->path + "' has no labels");
  checkRange(*this, start, count, "labels");
  if (count == 0) return;
  const detail::Hdf5Lock lock;
  detail::quietErrors();
  readSlab(impl_->labels.get(), start, count, H5T_NATIVE_INT64, out,
           "reading labels of data file '" + impl_->path + "'");
}

namespace {

// An attribute of the images dataset, open, with its type; `attr` is empty when it is absent.
// Call under the Hdf5Lock.
struct OpenAttribute {
  Handle attr, type;
  std::string what;  // names the file, dataset and attribute in errors
};

OpenAttribute openAttribute(hid_t dataset, const std::string& path, const std::string& dataset_name,
                            const std::string& name) {
  OpenAttribute a;
  if (H5Aexists(dataset, name.c_str()) <= 0) return a;
  a.what = path + ": attribute '" + name + "' of dataset '" + dataset_name + "'";
  a.attr = Handle(H5Aopen(dataset, name.c_str(), H5P_DEFAULT), H5Aclose);
  checkHdf5(a.attr.get(), a.what);
  a.type = Handle(H5Aget_type(a.attr.get()), H5Tclose);
  return a;
}

}  // namespace

std::vector<double> ImageFile::doubleAttribute(const std::string& name) const {
  const detail::Hdf5Lock lock;
  detail::quietErrors();
  const OpenAttribute a = openAttribute(impl_->images.get(), impl_->path, impl_->dataset, name);
  if (!a.attr) return {};
  const H5T_class_t cls = H5Tget_class(a.type.get());
  if (cls != H5T_FLOAT && cls != H5T_INTEGER) throw InputError(a.what + ": expected numbers");
  Handle space(H5Aget_space(a.attr.get()), H5Sclose);
  const hssize_t n = H5Sget_simple_extent_npoints(space.get());
  checkHdf5(n, a.what);
  std::vector<double> out(static_cast<std::size_t>(n));
  checkHdf5(H5Aread(a.attr.get(), H5T_NATIVE_DOUBLE, out.data()), a.what);
  return out;
}

std::string ImageFile::stringAttribute(const std::string& name) const {
  const detail::Hdf5Lock lock;
  detail::quietErrors();
  const OpenAttribute a = openAttribute(impl_->images.get(), impl_->path, impl_->dataset, name);
  if (!a.attr) return {};
  if (H5Tget_class(a.type.get()) != H5T_STRING || H5Tis_variable_str(a.type.get()) > 0) {
    throw InputError(a.what + ": expected a fixed-length string");
  }
  const std::size_t size = H5Tget_size(a.type.get());
  std::string out(size, '\0');
  checkHdf5(H5Aread(a.attr.get(), a.type.get(), out.data()), a.what);
  out.resize(out.find('\0') == std::string::npos ? size : out.find('\0'));
  return out;
}

}  // namespace tessera::data
