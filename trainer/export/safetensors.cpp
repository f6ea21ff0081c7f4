#include "trainer/export/safetensors.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <set>
#include <utility>

#include "core/error.h"
#include "core/json.h"
#include "trainer/checkpoint/durable_file.h"

namespace tessera::trainer {
namespace {

// Removes the temporary output unless the write got to the rename.
class RemoveUnlessCommitted {
 public:
  explicit RemoveUnlessCommitted(std::string path) : path_(std::move(path)) {}
  ~RemoveUnlessCommitted() {
    if (!committed_) std::remove(path_.c_str());
  }
  RemoveUnlessCommitted(const RemoveUnlessCommitted&) = delete;
  RemoveUnlessCommitted& operator=(const RemoveUnlessCommitted&) = delete;
  void commit() { committed_ = true; }

 private:
  std::string path_;
  bool committed_ = false;
};

}  // namespace

std::string safetensorsDtype(c10::ScalarType type) {
  switch (type) {
    case c10::ScalarType::Double:
      return "F64";
    case c10::ScalarType::Float:
      return "F32";
    case c10::ScalarType::Half:
      return "F16";
    case c10::ScalarType::BFloat16:
      return "BF16";
    case c10::ScalarType::Long:
      return "I64";
    case c10::ScalarType::Int:
      return "I32";
    case c10::ScalarType::Short:
      return "I16";
    case c10::ScalarType::Char:
      return "I8";
    case c10::ScalarType::Byte:
      return "U8";
    case c10::ScalarType::Bool:
      return "BOOL";
    default:
      throw Error(std::string("safetensors: dtype ") + c10::toString(type) + " is not supported");
  }
}

void writeSafetensors(const std::string& path,
                      const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  std::vector<at::Tensor> data;
  data.reserve(tensors.size());
  std::set<std::string> names;
  std::string header = "{";
  if (!metadata.empty()) {
    header += "\"__metadata__\":{";
    bool first = true;
    for (const auto& [key, value] : metadata) {
      header += (first ? "" : ",") + jsonQuote(key) + ":" + jsonQuote(value);
      first = false;
    }
    header += "}";
  }
  for (const auto& [name, tensor] : tensors) {
    const std::string which = "safetensors: tensor '" + name + "'";
    if (name.empty() || name == "__metadata__") throw Error(which + ": invalid name");
    if (!names.insert(name).second) throw Error(which + " appears twice");
    if (!tensor.defined()) throw Error(which + " is undefined");
    if (!tensor.device().is_cpu()) throw Error(which + " is on " + tensor.device().str());
    if (tensor.layout() != c10::kStrided) throw Error(which + " is not a dense tensor");
    safetensorsDtype(tensor.scalar_type());
    data.push_back(tensor.is_contiguous() ? tensor : tensor.contiguous());
  }
  // The data goes in order of decreasing element size (stable), so that with the 8-byte aligned
  // start every tensor is aligned to its element size, as zero-copy (mmap) loaders want; the
  // header keeps the caller's order.
  std::vector<std::size_t> order(data.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return data[a].element_size() > data[b].element_size();
  });
  std::vector<std::uint64_t> begin(data.size());
  std::uint64_t offset = 0;
  for (const std::size_t i : order) {
    begin[i] = offset;
    offset += data[i].numel() == 0 ? 0 : data[i].nbytes();
  }
  for (std::size_t i = 0; i < data.size(); ++i) {
    const at::Tensor& t = data[i];
    std::string shape = "[";
    for (std::int64_t d = 0; d < t.dim(); ++d) shape += (d ? "," : "") + std::to_string(t.size(d));
    shape += "]";
    const std::uint64_t end = begin[i] + (t.numel() == 0 ? 0 : t.nbytes());
    header += (header.size() > 1 ? "," : "") + jsonQuote(tensors[i].first) + ":{\"dtype\":\"" +
              safetensorsDtype(t.scalar_type()) + "\",\"shape\":" + shape + ",\"data_offsets\":[" +
              std::to_string(begin[i]) + "," + std::to_string(end) + "]}";
  }
  header += "}";
  while ((8 + header.size()) % 8 != 0) header += ' ';

  unsigned char length[8];
  for (int i = 0; i < 8; ++i) {
    length[i] = static_cast<unsigned char>(static_cast<std::uint64_t>(header.size()) >> (8 * i));
  }
  const std::string tmp = path + ".tmp";
  RemoveUnlessCommitted guard(tmp);
  try {
    DurableFile out(tmp);
    out.write(length, sizeof length);
    out.write(header.data(), header.size());
    for (const std::size_t i : order) {
      if (data[i].numel() > 0) out.write(data[i].data_ptr(), data[i].nbytes());
    }
    out.close();
  } catch (const Error& e) {
    throw Error(std::string("safetensors ") + e.what());
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    throw Error("safetensors: renaming " + tmp + " to " + path + ": " + std::strerror(errno));
  }
  guard.commit();
}

}  // namespace tessera::trainer
