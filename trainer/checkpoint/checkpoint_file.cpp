#include "trainer/checkpoint/checkpoint_file.h"

#include <ATen/ops/empty.h>
#include <c10/core/ScalarType.h>
#include <sys/stat.h>
#include <zlib.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>
#include <utility>
#include <vector>

#include "core/error.h"
#include "data/detail/hdf5.h"
#include "trainer/checkpoint/checkpoint_corrupt.h"
#include "trainer/checkpoint/durable_file.h"

namespace tessera::trainer {
namespace {

using data::detail::Handle;

constexpr const char* kVersionAttr = "tessera_format_version";
constexpr const char* kManifestAttr = "tessera_manifest";
constexpr const char* kReservedPrefix = "tessera_";
constexpr const char* kDtypeAttr = "dtype";
constexpr const char* kCrcAttr = "crc32";

struct Dtype {
  c10::ScalarType type;
  const char* name;
};

constexpr Dtype kDtypes[] = {
    {c10::ScalarType::Float, "float32"}, {c10::ScalarType::Double, "float64"},
    {c10::ScalarType::Half, "float16"},  {c10::ScalarType::BFloat16, "bfloat16"},
    {c10::ScalarType::Long, "int64"},    {c10::ScalarType::Int, "int32"},
    {c10::ScalarType::Short, "int16"},   {c10::ScalarType::Char, "int8"},
    {c10::ScalarType::Byte, "uint8"},    {c10::ScalarType::Bool, "bool"},
};

const Dtype* dtypeOf(c10::ScalarType type) {
  for (const Dtype& d : kDtypes) {
    if (d.type == type) return &d;
  }
  return nullptr;
}

const Dtype* dtypeNamed(const std::string& name) {
  for (const Dtype& d : kDtypes) {
    if (name == d.name) return &d;
  }
  return nullptr;
}

// HDF5 prints its error stack to stderr on every failure unless told not to; failures reach the
// caller as exceptions instead. The setting is per thread in a thread-safe HDF5 and global in
// another one, so it is made, and restored, under the process-wide HDF5 lock (data/detail/hdf5.h).
class QuietHdf5 {
 public:
  QuietHdf5() {
    H5Eget_auto2(H5E_DEFAULT, &func_, &data_);
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  }
  ~QuietHdf5() { H5Eset_auto2(H5E_DEFAULT, func_, data_); }
  QuietHdf5(const QuietHdf5&) = delete;
  QuietHdf5& operator=(const QuietHdf5&) = delete;

 private:
  H5E_auto2_t func_ = nullptr;
  void* data_ = nullptr;
};

herr_t keepInnermost(unsigned n, const H5E_error2_t* err, void* out) {
  // Walking upward, entry 0 is where the error was detected (e.g. the failed write(2) and its
  // errno), the most useful line of the stack.
  if (n == 0 && err->desc != nullptr) *static_cast<std::string*>(out) = err->desc;
  return 0;
}

std::string hdf5Reason() {
  std::string reason;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, keepInnermost, &reason);
  H5Eclear2(H5E_DEFAULT);
  return reason.empty() ? std::string("unknown HDF5 error") : reason;
}

// Write side: any failure is a runtime error naming the file and the operation.
long long okWrite(long long status, const std::string& path, const std::string& what) {
  if (status < 0) throw Error("checkpoint " + path + ": " + what + ": " + hdf5Reason());
  return status;
}

// Read side: any failure means the file cannot be trusted.
long long okRead(long long status, const std::string& path, const std::string& what) {
  if (status < 0) throw CheckpointCorrupt("checkpoint " + path + ": " + what + ": " + hdf5Reason());
  return status;
}

[[noreturn]] void corrupt(const std::string& path, const std::string& what) {
  throw CheckpointCorrupt("checkpoint " + path + ": " + what);
}

std::uint32_t crc32Of(const void* data, std::size_t size) {
  uLong crc = crc32(0L, Z_NULL, 0);
  const auto* bytes = static_cast<const Bytef*>(data);
  constexpr std::size_t kStep = std::size_t{1} << 30;  // zlib takes 32-bit lengths
  while (size > 0) {
    const std::size_t n = size < kStep ? size : kStep;
    crc = crc32(crc, bytes, static_cast<uInt>(n));
    bytes += n;
    size -= n;
  }
  return static_cast<std::uint32_t>(crc);
}

std::uint32_t crc32Of(const at::Tensor& t) {
  return t.numel() == 0 ? crc32Of(nullptr, 0) : crc32Of(t.data_ptr(), t.nbytes());
}

// Ints and reals are checksummed as their 8 little-endian bytes (hosts are little-endian: the
// HDF5 memory types below are the *LE types, which equal the native ones there).
std::uint32_t crc32Of(std::int64_t v) {
  return crc32Of(&v, sizeof v);
}
std::uint32_t crc32Of(double v) {
  return crc32Of(&v, sizeof v);
}
std::uint32_t crc32Of(const std::string& s) {
  return crc32Of(s.data(), s.size());
}

std::string hex8(std::uint32_t v) {
  char buf[9];
  std::snprintf(buf, sizeof buf, "%08x", static_cast<unsigned>(v));
  return buf;
}

bool parseHex8(const std::string& s, std::uint32_t* out) {
  if (s.size() != 8) return false;
  std::uint32_t v = 0;
  for (const char c : s) {
    int digit = 0;
    if (c >= '0' && c <= '9') {
      digit = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      digit = c - 'a' + 10;
    } else {
      return false;
    }
    v = v << 4 | static_cast<std::uint32_t>(digit);
  }
  *out = v;
  return true;
}

// The HDF5 file type of each dtype. float16 and bool are built the way h5py builds them, so that
// h5py reads numpy.float16 and numpy.bool_; bfloat16 has no HDF5 or numpy type and is stored as
// its uint16 bit patterns.
Handle hdf5TypeOf(c10::ScalarType type) {
  hid_t id = H5I_INVALID_HID;
  switch (type) {
    case c10::ScalarType::Float:
      id = H5Tcopy(H5T_IEEE_F32LE);
      break;
    case c10::ScalarType::Double:
      id = H5Tcopy(H5T_IEEE_F64LE);
      break;
    case c10::ScalarType::Half:
      id = H5Tcopy(H5T_IEEE_F32LE);
      if (id >= 0 && (H5Tset_fields(id, 15, 10, 5, 0, 10) < 0 || H5Tset_size(id, 2) < 0 ||
                      H5Tset_ebias(id, 15) < 0 || H5Tset_precision(id, 16) < 0 ||
                      H5Tset_norm(id, H5T_NORM_IMPLIED) < 0)) {
        H5Tclose(id);
        id = H5I_INVALID_HID;
      }
      break;
    case c10::ScalarType::BFloat16:
      id = H5Tcopy(H5T_STD_U16LE);
      break;
    case c10::ScalarType::Long:
      id = H5Tcopy(H5T_STD_I64LE);
      break;
    case c10::ScalarType::Int:
      id = H5Tcopy(H5T_STD_I32LE);
      break;
    case c10::ScalarType::Short:
      id = H5Tcopy(H5T_STD_I16LE);
      break;
    case c10::ScalarType::Char:
      id = H5Tcopy(H5T_STD_I8LE);
      break;
    case c10::ScalarType::Byte:
      id = H5Tcopy(H5T_STD_U8LE);
      break;
    case c10::ScalarType::Bool: {
      id = H5Tenum_create(H5T_STD_I8LE);
      const std::int8_t no = 0, yes = 1;
      if (id >= 0 &&
          (H5Tenum_insert(id, "FALSE", &no) < 0 || H5Tenum_insert(id, "TRUE", &yes) < 0)) {
        H5Tclose(id);
        id = H5I_INVALID_HID;
      }
      break;
    }
    default:
      break;
  }
  return Handle(id, H5Tclose);
}

// Texts are fixed-length, NUL-padded UTF-8 strings, stored inside the attribute (in the object
// header, under HDF5's metadata checksum). Variable-length strings would live in HDF5's global
// heap, which has no checksum: a flipped byte in a heap object's size field sends HDF5 1.10 into
// an endless loop instead of an error, and a loader must never hang.
Handle fixedStringType(std::size_t size) {
  Handle type(H5Tcopy(H5T_C_S1), H5Tclose);
  if (type &&
      (H5Tset_size(type.get(), size) < 0 || H5Tset_strpad(type.get(), H5T_STR_NULLPAD) < 0 ||
       H5Tset_cset(type.get(), H5T_CSET_UTF8) < 0)) {
    type.reset();
  }
  return type;
}

// ---- writing ----------------------------------------------------------------------------------

// Takes the in-memory file's buffer from the core driver when HDF5 closes the file, instead of
// letting HDF5 free it: the buffer then holds the file exactly as HDF5 finalised it.
// (H5Fget_file_image on an open file is no substitute: HDF5 1.10 clears the superblock's status
// flags in the copy without updating its checksum, and the copy no longer opens.)
class CapturedImage {
 public:
  CapturedImage() = default;
  ~CapturedImage() { std::free(ptr_); }
  CapturedImage(const CapturedImage&) = delete;
  CapturedImage& operator=(const CapturedImage&) = delete;

  H5FD_file_image_callbacks_t callbacks() {
    H5FD_file_image_callbacks_t cb{};
    cb.image_malloc = [](std::size_t size, H5FD_file_image_op_t, void* udata) -> void* {
      return static_cast<CapturedImage*>(udata)->resize(nullptr, size);
    };
    cb.image_realloc = [](void* ptr, std::size_t size, H5FD_file_image_op_t, void* udata) -> void* {
      return static_cast<CapturedImage*>(udata)->resize(ptr, size);
    };
    cb.image_memcpy = [](void* dest, const void* src, std::size_t size, H5FD_file_image_op_t,
                         void*) -> void* { return std::memcpy(dest, src, size); };
    cb.image_free = [](void* ptr, H5FD_file_image_op_t op, void* udata) -> herr_t {
      auto* self = static_cast<CapturedImage*>(udata);
      if (op == H5FD_FILE_IMAGE_OP_FILE_CLOSE && ptr == self->ptr_) {
        self->closed_ = true;  // keep it: this is the finished file
      } else {
        if (ptr == self->ptr_) self->ptr_ = nullptr, self->size_ = 0;
        std::free(ptr);
      }
      return 0;
    };
    // Property-list copies share the one capture.
    cb.udata_copy = [](void* udata) -> void* { return udata; };
    cb.udata_free = [](void*) -> herr_t { return 0; };
    cb.udata = this;
    return cb;
  }

  // The file's bytes once HDF5 closed it: the buffer up to the end-of-file address that the
  // superblock records (the driver's buffer grows in whole increments). Throws Error.
  std::pair<const char*, std::size_t> file(const std::string& path) const {
    const auto* b = static_cast<const unsigned char*>(ptr_);
    static const unsigned char kSignature[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
    if (!closed_ || b == nullptr || size_ < 48 || std::memcmp(b, kSignature, 8) != 0) {
      throw Error("checkpoint " + path + ": HDF5 did not hand over the finished file image");
    }
    // Superblock versions 2 and 3: signature, version, size of offsets, size of lengths, flags,
    // then base, extension, end-of-file and root addresses of `size of offsets` bytes each.
    const unsigned version = b[8], offset_size = b[9];
    if (version < 2 || offset_size == 0 || offset_size > 8 || 12u + 3u * offset_size > size_) {
      throw Error("checkpoint " + path + ": unexpected HDF5 superblock version " +
                  std::to_string(version));
    }
    std::uint64_t eof = 0;
    for (unsigned i = 0; i < offset_size; ++i) {
      eof |= static_cast<std::uint64_t>(b[12 + 2 * offset_size + i]) << (8 * i);
    }
    if (eof == 0 || eof > size_) {
      throw Error("checkpoint " + path + ": HDF5 superblock records " + std::to_string(eof) +
                  " bytes, the image holds " + std::to_string(size_));
    }
    return {static_cast<const char*>(ptr_), static_cast<std::size_t>(eof)};
  }

 private:
  void* resize(void* ptr, std::size_t size) {
    void* grown = std::realloc(ptr, size);
    if (grown != nullptr) ptr_ = grown, size_ = size;
    return grown;
  }

  void* ptr_ = nullptr;
  std::size_t size_ = 0;
  bool closed_ = false;
};

// Owns the file being written: close() reports whether it succeeded, the destructor (on an error
// path) closes without asking.
class WritableFile {
 public:
  explicit WritableFile(hid_t id) : id_(id) {}
  ~WritableFile() {
    if (id_ >= 0) H5Fclose(id_);
  }
  WritableFile(const WritableFile&) = delete;
  WritableFile& operator=(const WritableFile&) = delete;
  hid_t get() const { return id_; }
  herr_t close() { return H5Fclose(std::exchange(id_, H5I_INVALID_HID)); }

 private:
  hid_t id_;
};

void writeAttribute(hid_t obj, const std::string& name, hid_t type, const void* value,
                    const std::string& path, const std::string& where) {
  const std::string what = "writing attribute '" + name + "'" + where;
  Handle space(okWrite(H5Screate(H5S_SCALAR), path, what), H5Sclose);
  Handle attr(okWrite(H5Acreate2(obj, name.c_str(), type, space.get(), H5P_DEFAULT, H5P_DEFAULT),
                      path, what),
              H5Aclose);
  okWrite(H5Awrite(attr.get(), type, value), path, what);
}

void writeTextAttribute(hid_t obj, const std::string& name, const std::string& text,
                        const std::string& path, const std::string& where = "") {
  // HDF5 has no zero-length strings; one NUL byte reads back as "".
  Handle type = fixedStringType(text.empty() ? 1 : text.size());
  okWrite(type.get(), path, "creating a string type");
  writeAttribute(obj, name, type.get(), text.empty() ? "" : text.data(), path, where);
}

void writeTensor(hid_t file, hid_t lcpl, const std::string& path, const std::string& name,
                 const at::Tensor& tensor, std::uint32_t crc) {
  const std::string what = "writing dataset '" + name + "'";
  const Dtype* dtype = dtypeOf(tensor.scalar_type());
  Handle type = hdf5TypeOf(dtype->type);
  okWrite(type.get(), path, what + ": creating its type");
  Handle space;
  if (tensor.dim() == 0) {
    space = Handle(okWrite(H5Screate(H5S_SCALAR), path, what), H5Sclose);
  } else {
    std::vector<hsize_t> dims(tensor.sizes().begin(), tensor.sizes().end());
    space = Handle(
        okWrite(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), path, what),
        H5Sclose);
  }
  Handle dset(okWrite(H5Dcreate2(file, name.c_str(), type.get(), space.get(), lcpl, H5P_DEFAULT,
                                 H5P_DEFAULT),
                      path, what),
              H5Dclose);
  if (tensor.numel() > 0) {
    okWrite(H5Dwrite(dset.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, tensor.data_ptr()),
            path, what);
  }
  const std::string where = " of dataset '" + name + "'";
  writeTextAttribute(dset.get(), kDtypeAttr, dtype->name, path, where);
  writeAttribute(dset.get(), kCrcAttr, H5T_STD_U32LE, &crc, path, where);
}

void checkKey(const std::string& key, std::set<std::string>& seen) {
  if (key.empty()) throw Error("checkpoint: an int/real/text key is empty");
  if (key.find('\n') != std::string::npos) {
    throw Error("checkpoint: key '" + key + "' contains a newline");
  }
  if (key.rfind(kReservedPrefix, 0) == 0) {
    throw Error("checkpoint: key '" + key + "' uses the reserved prefix '" + kReservedPrefix + "'");
  }
  if (!seen.insert(key).second) {
    throw Error("checkpoint: key '" + key + "' appears in more than one of ints, reals, texts");
  }
}

// ---- reading ----------------------------------------------------------------------------------

std::string readTextAttribute(hid_t obj, const std::string& name, const std::string& path,
                              const std::string& where) {
  const std::string what = "attribute '" + name + "'" + where;
  Handle attr(
      okRead(H5Aopen(obj, name.c_str(), H5P_DEFAULT), path, what + " is missing or unreadable"),
      H5Aclose);
  Handle type(okRead(H5Aget_type(attr.get()), path, what), H5Tclose);
  if (H5Tget_class(type.get()) != H5T_STRING) corrupt(path, what + " is not a string");
  Handle space(okRead(H5Aget_space(attr.get()), path, what), H5Sclose);
  if (H5Sget_simple_extent_npoints(space.get()) != 1) corrupt(path, what + " is not a scalar");
  const htri_t variable = okRead(H5Tis_variable_str(type.get()), path, what);
  if (variable) {  // as h5py writes str attributes
    Handle mem(okRead(H5Tcopy(H5T_C_S1), path, what), H5Tclose);
    okRead(H5Tset_cset(mem.get(), H5Tget_cset(type.get())), path, what);
    okRead(H5Tset_size(mem.get(), H5T_VARIABLE), path, what);
    char* value = nullptr;
    okRead(H5Aread(attr.get(), mem.get(), &value), path, "reading " + what);
    std::string text = value != nullptr ? value : "";
    H5free_memory(value);
    return text;
  }
  // Fixed length: read the stored bytes as they are (no padding conversion), up to the first NUL.
  const std::size_t size = H5Tget_size(type.get());
  if (size == 0) corrupt(path, what + " has size 0");
  std::string text(size, '\0');
  okRead(H5Aread(attr.get(), type.get(), text.data()), path, "reading " + what);
  text.resize(std::strlen(text.c_str()));
  return text;
}

// Reads a scalar numeric attribute of HDF5 class `cls` as `mem_type`.
template <typename T>
T readNumberAttribute(hid_t obj, const std::string& name, H5T_class_t cls, hid_t mem_type,
                      const std::string& path, const std::string& where) {
  const std::string what = "attribute '" + name + "'" + where;
  Handle attr(
      okRead(H5Aopen(obj, name.c_str(), H5P_DEFAULT), path, what + " is missing or unreadable"),
      H5Aclose);
  Handle type(okRead(H5Aget_type(attr.get()), path, what), H5Tclose);
  if (H5Tget_class(type.get()) != cls) {
    corrupt(path,
            what + (cls == H5T_FLOAT ? " is not a floating-point number" : " is not an integer"));
  }
  Handle space(okRead(H5Aget_space(attr.get()), path, what), H5Sclose);
  if (H5Sget_simple_extent_npoints(space.get()) != 1) corrupt(path, what + " is not a scalar");
  T value{};
  okRead(H5Aread(attr.get(), mem_type, &value), path, "reading " + what);
  return value;
}

struct ManifestEntry {
  std::string kind;  // tensor, int, real, text
  std::uint32_t crc = 0;
  std::string name;
};

std::vector<ManifestEntry> parseManifest(const std::string& text, const std::string& path) {
  std::vector<std::string> lines;
  std::size_t begin = 0;
  while (begin < text.size()) {
    const std::size_t end = text.find('\n', begin);
    if (end == std::string::npos) corrupt(path, "manifest does not end with a newline");
    lines.push_back(text.substr(begin, end - begin));
    begin = end + 1;
  }
  if (lines.size() < 2 || lines.back().rfind("end ", 0) != 0) {
    corrupt(path, "manifest has no 'end' line (truncated or damaged)");
  }
  std::uint32_t stored = 0;
  if (!parseHex8(lines.back().substr(4), &stored)) corrupt(path, "manifest 'end' line is damaged");
  const std::size_t body = text.size() - lines.back().size() - 1;
  const std::uint32_t actual = crc32Of(text.data(), body);
  if (stored != actual) {
    corrupt(path, "manifest checksum mismatch (stored " + hex8(stored) + ", content " +
                      hex8(actual) + ")");
  }
  const std::string header = "tessera-checkpoint " + std::to_string(kCheckpointFormatVersion);
  if (lines.front() != header) corrupt(path, "manifest starts with '" + lines.front() + "'");
  std::vector<ManifestEntry> entries;
  for (std::size_t i = 1; i + 1 < lines.size(); ++i) {
    const std::string& line = lines[i];
    const std::size_t sp1 = line.find(' ');
    ManifestEntry e;
    if (sp1 != std::string::npos && line.size() > sp1 + 10 && line[sp1 + 9] == ' ' &&
        parseHex8(line.substr(sp1 + 1, 8), &e.crc)) {
      e.kind = line.substr(0, sp1);
      e.name = line.substr(sp1 + 10);
    }
    if (e.kind != "tensor" && e.kind != "int" && e.kind != "real" && e.kind != "text") {
      corrupt(path, "manifest line " + std::to_string(i + 1) + " is malformed: '" + line + "'");
    }
    entries.push_back(std::move(e));
  }
  return entries;
}

at::Tensor readTensor(hid_t file, const ManifestEntry& entry, const std::string& path) {
  const std::string& name = entry.name;
  const std::string what = "dataset '" + name + "'";
  Handle dset(
      okRead(H5Dopen2(file, name.c_str(), H5P_DEFAULT), path, what + " is missing or unreadable"),
      H5Dclose);
  const std::string where = " of " + what;
  const std::string dtype_name = readTextAttribute(dset.get(), kDtypeAttr, path, where);
  const Dtype* dtype = dtypeNamed(dtype_name);
  if (dtype == nullptr) corrupt(path, what + " has unknown dtype '" + dtype_name + "'");
  Handle expected = hdf5TypeOf(dtype->type);
  okRead(expected.get(), path, what + ": creating its type");
  Handle stored_type(okRead(H5Dget_type(dset.get()), path, what), H5Tclose);
  if (okRead(H5Tequal(stored_type.get(), expected.get()), path, what) <= 0) {
    corrupt(path, what + ": its HDF5 type does not match dtype '" + dtype_name + "'");
  }
  Handle space(okRead(H5Dget_space(dset.get()), path, what), H5Sclose);
  std::vector<std::int64_t> shape;
  const H5S_class_t space_class = H5Sget_simple_extent_type(space.get());
  if (space_class == H5S_SIMPLE) {
    const int rank = static_cast<int>(okRead(H5Sget_simple_extent_ndims(space.get()), path, what));
    std::vector<hsize_t> dims(static_cast<std::size_t>(rank));
    okRead(H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr), path, what);
    shape.assign(dims.begin(), dims.end());
  } else if (space_class != H5S_SCALAR) {
    corrupt(path, what + " has no shape");
  }
  at::Tensor tensor = at::empty(shape, at::TensorOptions().dtype(dtype->type));
  if (tensor.numel() > 0) {
    okRead(H5Dread(dset.get(), expected.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, tensor.data_ptr()),
           path, "reading " + what);
  }
  const auto stored_crc = readNumberAttribute<std::uint32_t>(dset.get(), kCrcAttr, H5T_INTEGER,
                                                             H5T_STD_U32LE, path, where);
  const std::uint32_t actual = crc32Of(tensor);
  if (actual != stored_crc) {
    corrupt(path, what + ": checksum mismatch (stored " + hex8(stored_crc) + ", data " +
                      hex8(actual) + ")");
  }
  if (actual != entry.crc) {
    corrupt(path, what + ": checksum " + hex8(actual) + " differs from the manifest's " +
                      hex8(entry.crc));
  }
  return tensor;
}

void checkAttributeCrc(std::uint32_t actual, const ManifestEntry& entry, const std::string& path) {
  if (actual != entry.crc) {
    corrupt(path, "attribute '" + entry.name + "': checksum mismatch (manifest " + hex8(entry.crc) +
                      ", value " + hex8(actual) + ")");
  }
}

TrainingState readVerified(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) corrupt(path, std::strerror(errno));
  if (!S_ISREG(st.st_mode)) corrupt(path, "not a regular file");
  const htri_t is_hdf5 = H5Fis_hdf5(path.c_str());
  if (is_hdf5 == 0) corrupt(path, "not an HDF5 file");
  okRead(is_hdf5, path, "not a readable HDF5 file");
  Handle file(okRead(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), path,
                     "cannot open (truncated or damaged)"),
              H5Fclose);
  const htri_t has_version =
      okRead(H5Aexists(file.get(), kVersionAttr), path, "reading attributes");
  if (has_version == 0) {
    corrupt(path,
            std::string("has no attribute '") + kVersionAttr + "' (not a Tessera checkpoint)");
  }
  const auto version = readNumberAttribute<std::int64_t>(file.get(), kVersionAttr, H5T_INTEGER,
                                                         H5T_STD_I64LE, path, "");
  if (version != kCheckpointFormatVersion) {
    corrupt(path, "format version " + std::to_string(version) + "; this build reads version " +
                      std::to_string(kCheckpointFormatVersion));
  }
  const std::string manifest = readTextAttribute(file.get(), kManifestAttr, path, "");
  TrainingState state;
  for (const ManifestEntry& entry : parseManifest(manifest, path)) {
    if (entry.kind == "tensor") {
      state.tensors.emplace_back(entry.name, readTensor(file.get(), entry, path));
    } else if (entry.kind == "int") {
      const auto v = readNumberAttribute<std::int64_t>(file.get(), entry.name, H5T_INTEGER,
                                                       H5T_STD_I64LE, path, "");
      checkAttributeCrc(crc32Of(v), entry, path);
      state.ints[entry.name] = v;
    } else if (entry.kind == "real") {
      const auto v =
          readNumberAttribute<double>(file.get(), entry.name, H5T_FLOAT, H5T_IEEE_F64LE, path, "");
      checkAttributeCrc(crc32Of(v), entry, path);
      state.reals[entry.name] = v;
    } else {
      std::string v = readTextAttribute(file.get(), entry.name, path, "");
      checkAttributeCrc(crc32Of(v), entry, path);
      state.texts[entry.name] = std::move(v);
    }
  }
  return state;
}

}  // namespace

void validateTrainingState(const TrainingState& state) {
  std::set<std::string> names;
  for (const auto& [name, tensor] : state.tensors) {
    const std::string which = "checkpoint: tensor '" + name + "'";
    if (name.empty()) throw Error("checkpoint: a tensor has an empty name");
    if (name.find('\n') != std::string::npos) throw Error(which + ": name contains a newline");
    std::size_t begin = 0;
    while (true) {
      const std::size_t end = name.find('/', begin);
      const std::string part = name.substr(begin, end == std::string::npos ? end : end - begin);
      if (part.empty() || part == "." || part == "..") {
        throw Error(which +
                    ": every '/'-separated part of a name must be non-empty and not . or ..");
      }
      if (end == std::string::npos) break;
      begin = end + 1;
    }
    if (!names.insert(name).second) throw Error(which + " appears twice");
    if (!tensor.defined()) throw Error(which + " is undefined");
    if (!tensor.device().is_cpu()) {
      throw Error(which + " is on " + tensor.device().str() +
                  "; a training state holds host (CPU) copies");
    }
    if (tensor.layout() != c10::kStrided) throw Error(which + " is not a dense tensor");
    if (dtypeOf(tensor.scalar_type()) == nullptr) {
      throw Error(which + " has dtype " + std::string(c10::toString(tensor.scalar_type())) +
                  ", which checkpoints do not store");
    }
  }
  // HDF5 cannot hold both a dataset "a" and a dataset "a/b".
  for (const std::string& name : names) {
    for (std::size_t pos = name.find('/'); pos != std::string::npos;
         pos = name.find('/', pos + 1)) {
      if (names.count(name.substr(0, pos)) != 0) {
        throw Error("checkpoint: tensor '" + name.substr(0, pos) + "' is also a group of tensor '" +
                    name + "'");
      }
    }
  }
  std::set<std::string> keys;
  for (const auto& entry : state.ints) checkKey(entry.first, keys);
  for (const auto& entry : state.reals) checkKey(entry.first, keys);
  for (const auto& [key, text] : state.texts) {
    checkKey(key, keys);
    if (text.find('\0') != std::string::npos) {
      throw Error("checkpoint: text '" + key + "' contains a NUL byte");
    }
  }
}

void writeCheckpointFile(const std::string& path, const TrainingState& state) {
  validateTrainingState(state);
  // HDF5 builds the file in memory (core driver) and the bytes go to disk through DurableFile.
  // HDF5 1.10 cannot survive a failing disk write itself: when H5Fclose's flush fails, the file's
  // id stays registered over freed state and the process crashes at exit. In memory nothing can
  // fail but allocation, and a full disk is an ordinary, clearly reported error. The price is the
  // file image in memory beside the state while it is written.
  CapturedImage image;
  {
    // Loader threads read data files through HDF5 at the same time: every HDF5 call of this
    // thread runs under the process-wide lock (taken only when HDF5 is not thread-safe), held
    // until the file is closed; writing the bytes to disk below needs no HDF5.
    const data::detail::Hdf5Lock lock;
    QuietHdf5 quiet;
    Handle fapl(okWrite(H5Pcreate(H5P_FILE_ACCESS), path, "creating a property list"), H5Pclose);
    const std::size_t increment =
        static_cast<std::size_t>(state.bytes()) + 4096 * state.tensors.size() + (1 << 20);
    okWrite(H5Pset_fapl_core(fapl.get(), increment, /*backing_store=*/0), path,
            "selecting the in-memory driver");
    H5FD_file_image_callbacks_t callbacks = image.callbacks();
    okWrite(H5Pset_file_image_callbacks(fapl.get(), &callbacks), path,
            "setting file image callbacks");
    // 1.8+ object headers and superblock carry HDF5's own metadata checksums; stop at 1.10 so
    // that every h5py built on HDF5 1.10 or later reads the file.
    okWrite(H5Pset_libver_bounds(fapl.get(), H5F_LIBVER_V18, H5F_LIBVER_V110), path,
            "setting format bounds");
    okWrite(H5Pset_fclose_degree(fapl.get(), H5F_CLOSE_STRONG), path, "setting close degree");
    Handle lcpl(okWrite(H5Pcreate(H5P_LINK_CREATE), path, "creating a property list"), H5Pclose);
    okWrite(H5Pset_create_intermediate_group(lcpl.get(), 1), path, "setting group creation");
    okWrite(H5Pset_char_encoding(lcpl.get(), H5T_CSET_UTF8), path, "setting name encoding");

    WritableFile file(
        okWrite(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get()), path, "creating"));
    std::string manifest = "tessera-checkpoint " + std::to_string(kCheckpointFormatVersion) + "\n";
    for (const auto& [name, original] : state.tensors) {
      const at::Tensor tensor = original.is_contiguous() ? original : original.contiguous();
      const std::uint32_t crc = crc32Of(tensor);
      writeTensor(file.get(), lcpl.get(), path, name, tensor, crc);
      manifest += "tensor " + hex8(crc) + " " + name + "\n";
    }
    const std::int64_t version = kCheckpointFormatVersion;
    writeAttribute(file.get(), kVersionAttr, H5T_STD_I64LE, &version, path, "");
    for (const auto& [key, v] : state.ints) {
      writeAttribute(file.get(), key, H5T_STD_I64LE, &v, path, "");
      manifest += "int " + hex8(crc32Of(v)) + " " + key + "\n";
    }
    for (const auto& [key, v] : state.reals) {
      writeAttribute(file.get(), key, H5T_IEEE_F64LE, &v, path, "");
      manifest += "real " + hex8(crc32Of(v)) + " " + key + "\n";
    }
    for (const auto& [key, v] : state.texts) {
      writeTextAttribute(file.get(), key, v, path);
      manifest += "text " + hex8(crc32Of(v)) + " " + key + "\n";
    }
    manifest += "end " + hex8(crc32Of(manifest)) + "\n";
    writeTextAttribute(file.get(), kManifestAttr, manifest, path);
    okWrite(file.close(), path, "closing");
  }
  const auto [bytes, size] = image.file(path);
  writeFileDurably(path, bytes, size);
}

TrainingState readCheckpointFile(const std::string& path) {
  const data::detail::Hdf5Lock lock;
  QuietHdf5 quiet;
  try {
    return readVerified(path);
  } catch (const CheckpointCorrupt&) {
    throw;
  } catch (const std::exception& e) {
    // e.g. an allocation for a shape that HDF5's own checksums let through.
    corrupt(path, e.what());
  }
}

}  // namespace tessera::trainer
