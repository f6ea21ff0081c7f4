#include "data/detail/file_bytes.h"

#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "core/error.h"

namespace tessera::data::detail {

std::vector<std::uint8_t> readFileBytes(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    throw InputError("input file '" + path + "' does not exist or is not a regular file");
  }
  gzFile gz = gzopen(path.c_str(), "rb");
  if (gz == nullptr) {
    throw InputError("cannot open input file '" + path + "': " + std::strerror(errno));
  }
  gzbuffer(gz, 1 << 20);
  std::vector<std::uint8_t> bytes;
  constexpr unsigned kPiece = 1 << 22;
  for (;;) {
    const std::size_t old_size = bytes.size();
    bytes.resize(old_size + kPiece);
    const int n = gzread(gz, bytes.data() + old_size, kPiece);
    if (n < 0) break;
    bytes.resize(old_size + static_cast<std::size_t>(n));
    if (n == 0) break;
  }
  int code = Z_OK;
  const char* message = gzerror(gz, &code);
  const std::string reason = message != nullptr ? message : "";
  gzclose_r(gz);
  if (code != Z_OK && code != Z_STREAM_END) {
    throw InputError("cannot read input file '" + path +
                     "': " + (reason.empty() ? "damaged or truncated gzip data" : reason) +
                     " (damaged or truncated?)");
  }
  return bytes;
}

}  // namespace tessera::data::detail
