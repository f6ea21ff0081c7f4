// The safetensors file format (https://github.com/huggingface/safetensors): an 8-byte
// little-endian header length N, N bytes of JSON header
//   {"__metadata__": {"key": "value", ...}, "name": {"dtype": "F32", "shape": [2, 3],
//    "data_offsets": [begin, end]}, ...}
// padded with spaces so that the data starts 8-byte aligned, then the tensors' raw little-endian
// bytes back to back (offsets relative to the start of the data).
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace tessera::trainer {

// Writes `tensors` (CPU; float64/32/16, bfloat16, int64/32/16/8, uint8, bool; names unique and
// non-empty), listed in the header in the given order, their data ordered by decreasing element
// size so that each is aligned to it, with `metadata` as __metadata__. Writes `path`.tmp, fsyncs
// and renames it, so `path` is either the old file or the complete new one. Throws Error naming the
// tensor or the path and the reason.
void writeSafetensors(const std::string& path,
                      const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata);

// The safetensors dtype code ("F32", "BF16", "BOOL", ...) of a tensor dtype; throws Error for one
// the format lacks.
std::string safetensorsDtype(c10::ScalarType type);

}  // namespace tessera::trainer
