#include "comm/detail/tensor_checks.h"

#include "core/error.h"

namespace tessera::comm::detail {

void checkCollectiveTensors(const std::vector<at::Tensor>& tensors, c10::Device device,
                            const std::string& what) {
  for (size_t i = 0; i < tensors.size(); ++i) {
    const at::Tensor& t = tensors[i];
    const std::string which = what + ": tensor " + std::to_string(i);
    if (!t.defined()) throw Error(which + " is undefined");
    if (t.layout() != c10::kStrided) throw Error(which + " is not a dense tensor");
    if (!t.is_contiguous()) throw Error(which + " is not contiguous");
    const c10::Device d = t.device();
    const bool same = d.type() == device.type() &&
                      (!device.has_index() || device.is_cpu() || d.index() == device.index());
    if (!same) {
      throw Error(which + " is on " + d.str() + " but the communicator works on " + device.str());
    }
  }
}

std::int64_t totalBytes(const std::vector<at::Tensor>& tensors) {
  std::int64_t bytes = 0;
  for (const auto& t : tensors) bytes += t.numel() * static_cast<std::int64_t>(t.element_size());
  return bytes;
}

std::string describeShape(c10::ScalarType dtype, const std::vector<std::int64_t>& shape) {
  std::string s = std::string(c10::toString(dtype)) + " [";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string describeTensor(const at::Tensor& tensor) {
  return describeShape(tensor.scalar_type(), tensor.sizes().vec());
}

std::uint64_t stableHash(const std::string& text) {
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char c : text) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

std::uint64_t shapeSignature(c10::ScalarType dtype, const std::vector<std::int64_t>& shape) {
  return stableHash(describeShape(dtype, shape));
}

}  // namespace tessera::comm::detail
