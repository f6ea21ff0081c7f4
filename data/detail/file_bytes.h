// Whole-file reads for the converters' small inputs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tessera::data::detail {

// The bytes of `path`, gunzipped when it is gzip-compressed (detected from its content, not its
// name). Throws InputError naming the file when it is missing, unreadable, or a damaged or
// truncated gzip stream.
std::vector<std::uint8_t> readFileBytes(const std::string& path);

}  // namespace tessera::data::detail
