// Reading the safetensors format (the counterpart of trainer/export/safetensors.h's writer, for
// models/ that cannot depend on trainer/): an 8-byte little-endian header length N, N bytes of
// JSON header {"__metadata__": {"key": "value"}, "name": {"dtype": "F32", "shape": [2, 3],
// "data_offsets": [begin, end]}, ...}, then the tensors' raw little-endian bytes (offsets relative
// to the end of the header).
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace tessera::models {

struct SafetensorsContents {
  std::map<std::string, std::string> metadata;
  std::vector<std::pair<std::string, at::Tensor>> tensors;  // CPU, in header order
};

// Reads the whole file. Dtypes F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL. Throws
// InputError naming the path and what is wrong (unreadable, truncated, malformed header, a
// tensor's bytes outside the data or not matching its shape and dtype, a duplicate name).
SafetensorsContents readSafetensors(const std::string& path);

}  // namespace tessera::models
