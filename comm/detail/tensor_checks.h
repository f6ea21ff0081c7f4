// Argument checks and descriptions shared by the communicator backends.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <string>
#include <vector>

namespace tessera::comm::detail {

// Throws Error naming `what` and the tensor's index unless every tensor is defined, dense,
// contiguous and on `device` (a CUDA device without an index accepts any CUDA tensor).
void checkCollectiveTensors(const std::vector<at::Tensor>& tensors, c10::Device device,
                            const std::string& what);

std::int64_t totalBytes(const std::vector<at::Tensor>& tensors);

// "Float [8, 1, 3, 3]".
std::string describeShape(c10::ScalarType dtype, const std::vector<std::int64_t>& shape);
std::string describeTensor(const at::Tensor& tensor);

// A 64-bit FNV-1a hash of a string; stable across processes and platforms.
std::uint64_t stableHash(const std::string& text);
// stableHash of describeShape(dtype, shape).
std::uint64_t shapeSignature(c10::ScalarType dtype, const std::vector<std::int64_t>& shape);

}  // namespace tessera::comm::detail
