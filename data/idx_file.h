// IDX files (the MNIST / Fashion-MNIST format): a big-endian header of dimensions followed by
// the data. Only unsigned-byte arrays, which is what those datasets use.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tessera::data {

struct IdxFile {
  std::vector<std::int64_t> dims;
  std::vector<std::uint8_t> data;  // row-major, product(dims) bytes

  // Reads `path` (gzip-compressed or plain). Throws InputError naming the file for a missing
  // file, a bad magic number, a type other than unsigned byte, or a size that disagrees with
  // the header (truncated or trailing data).
  static IdxFile read(const std::string& path);
};

}  // namespace tessera::data
