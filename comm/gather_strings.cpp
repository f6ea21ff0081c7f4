#include "comm/gather_strings.h"

#include <ATen/ops/empty.h>

#include <cstring>

namespace tessera::comm {

std::vector<std::string> gatherStrings(Communicator& comm, const std::string& mine,
                                       const std::string& what) {
  const auto opts = at::TensorOptions().dtype(c10::kByte).device(c10::kCPU);
  at::Tensor bytes = at::empty({static_cast<std::int64_t>(mine.size())}, opts);
  if (!mine.empty()) std::memcpy(bytes.data_ptr(), mine.data(), mine.size());
  at::Tensor length = at::empty({1}, opts.dtype(c10::kLong));
  length.data_ptr<std::int64_t>()[0] = static_cast<std::int64_t>(mine.size());
  const at::Tensor lengths =
      comm.allGather(length.to(comm.device()), {"allgather", what + " (lengths)"}).cpu();
  const at::Tensor all = comm.allGather(bytes.to(comm.device()), {"allgather", what}).cpu();
  std::vector<std::string> out;
  const auto* text = static_cast<const char*>(all.data_ptr());
  std::int64_t offset = 0;
  for (std::int64_t r = 0; r < lengths.numel(); ++r) {
    const std::int64_t n = lengths.data_ptr<std::int64_t>()[r];
    out.push_back(n > 0 ? std::string(text + offset, static_cast<size_t>(n)) : std::string());
    offset += n;
  }
  return out;
}

}  // namespace tessera::comm
