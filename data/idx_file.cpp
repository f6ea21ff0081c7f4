#include "data/idx_file.h"

#include <cstdio>

#include "core/error.h"
#include "data/detail/file_bytes.h"

namespace tessera::data {

IdxFile IdxFile::read(const std::string& path) {
  std::vector<std::uint8_t> bytes = detail::readFileBytes(path);
  const std::string where = "IDX file '" + path + "'";
  if (bytes.size() < 4 || bytes[0] != 0 || bytes[1] != 0) {
    throw InputError(where + " has no IDX header (expected magic 0x0000TTNN, file of " +
                     std::to_string(bytes.size()) + " bytes)");
  }
  if (bytes[2] != 0x08) {
    char type[8];
    std::snprintf(type, sizeof type, "0x%02x", bytes[2]);
    throw InputError(where + ": only unsigned-byte data (type 0x08) is supported, found type " +
                     type);
  }
  const std::size_t ndims = bytes[3];
  const std::size_t header = 4 + 4 * ndims;
  if (ndims == 0 || bytes.size() < header) {
    throw InputError(where + " is truncated inside its header (" + std::to_string(ndims) +
                     " dimensions declared, " + std::to_string(bytes.size()) + " bytes)");
  }
  IdxFile idx;
  std::uint64_t total = 1;
  for (std::size_t d = 0; d < ndims; ++d) {
    const std::uint8_t* p = bytes.data() + 4 + 4 * d;
    const std::uint32_t v = (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) |
                            (std::uint32_t{p[2]} << 8) | std::uint32_t{p[3]};
    idx.dims.push_back(static_cast<std::int64_t>(v));
    total *= v;
  }
  const std::uint64_t have = bytes.size() - header;
  if (have != total) {
    throw InputError(where + (have < total ? " is truncated" : " has trailing data") +
                     ": its header declares " + std::to_string(total) + " bytes of data, found " +
                     std::to_string(have));
  }
  bytes.erase(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(header));
  idx.data = std::move(bytes);
  return idx;
}

}  // namespace tessera::data
