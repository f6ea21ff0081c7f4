#include "comm/model_sync.h"

#include <ATen/ops/empty.h>
#include <c10/core/GradMode.h>

#include <map>

#include "comm/detail/tensor_checks.h"
#include "comm/gather_strings.h"
#include "core/error.h"

namespace tessera::comm {
namespace {

// Broadcasts are coalesced into flat buffers of at most this many bytes.
constexpr std::int64_t kBroadcastChunkBytes = std::int64_t{64} << 20;

// [x, ~x] per value: one MAX all-reduce yields max(x) and ~min(x), so equality on every rank is
// max == min, and no value needs negating (which overflows for INT64_MIN).
at::Tensor maxAndMin(Communicator& comm, const std::vector<std::int64_t>& values,
                     const std::string& what) {
  at::Tensor t = at::empty({static_cast<std::int64_t>(2 * values.size())}, at::kLong);
  auto* p = t.data_ptr<std::int64_t>();
  for (size_t i = 0; i < values.size(); ++i) {
    p[2 * i] = values[i];
    p[2 * i + 1] = ~values[i];
  }
  at::Tensor dev = t.to(comm.device());
  comm.allReduce({dev}, ReduceOp::kMax, {"allreduce", what});
  return dev.cpu();
}

std::string describeParam(const NamedTensors& params, std::size_t i) {
  if (i >= params.size()) {
    return "no parameter #" + std::to_string(i) + " (only " + std::to_string(params.size()) + ")";
  }
  return "'" + params[i].first + "' " + detail::describeTensor(params[i].second);
}

}  // namespace

void verifySameParameters(Communicator& comm, const NamedTensors& params, const std::string& what) {
  if (comm.size() == 1) return;
  const std::int64_t count = static_cast<std::int64_t>(params.size());
  std::vector<std::int64_t> hashes;
  std::uint64_t combined = detail::stableHash(std::to_string(count));
  for (std::size_t i = 0; i < params.size(); ++i) {
    const std::uint64_t h = detail::stableHash(describeParam(params, i));
    hashes.push_back(static_cast<std::int64_t>(h));
    combined = detail::stableHash(std::to_string(combined) + ":" + std::to_string(h));
  }

  const at::Tensor summary =
      maxAndMin(comm, {count, static_cast<std::int64_t>(combined)}, what + " parameter hash");
  const auto* s = summary.data_ptr<std::int64_t>();
  const std::int64_t max_count = s[0];
  const std::int64_t min_count = ~s[1];
  if (max_count == min_count && s[2] == ~s[3]) return;

  // Per-parameter hashes, padded to the longest list, locate the first difference.
  const std::int64_t missing = static_cast<std::int64_t>(detail::stableHash("<missing>"));
  std::vector<std::int64_t> padded(static_cast<std::size_t>(max_count), missing);
  std::copy(hashes.begin(), hashes.end(), padded.begin());
  const at::Tensor each = maxAndMin(comm, padded, what + " per-parameter hashes");
  const auto* e = each.data_ptr<std::int64_t>();
  std::int64_t first = 0;
  while (first < max_count && e[2 * first] == ~e[2 * first + 1]) ++first;

  const auto all = gatherStrings(comm, describeParam(params, static_cast<std::size_t>(first)),
                                 what + " differing parameter");
  std::string msg = what + ": parameters differ between ranks";
  if (min_count != max_count) {
    msg += " (counts from " + std::to_string(min_count) + " to " + std::to_string(max_count) + ")";
  }
  msg += " at #" + std::to_string(first) + ":";
  constexpr std::size_t kShown = 8;
  for (std::size_t r = 0; r < all.size() && r < kShown; ++r) {
    msg += (r ? ", rank " : " rank ") + std::to_string(r) + " has " + all[r];
  }
  if (all.size() > kShown) msg += ", ... (" + std::to_string(all.size() - kShown) + " more ranks)";
  msg += "; this is rank " + std::to_string(comm.rank());
  throw CommError(msg);
}

void broadcastFromRoot(Communicator& comm, const std::vector<at::Tensor>& tensors, int root) {
  if (comm.size() == 1) return;
  c10::NoGradGuard no_grad;
  // Tensors grouped by dtype (in a fixed order, the same on every rank), then chunked.
  std::map<int, std::vector<at::Tensor>> by_dtype;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const at::Tensor& t = tensors[i];
    detail::checkCollectiveTensors({t.detach().reshape(-1)}, comm.device(),
                                   "broadcast parameters: tensor " + std::to_string(i));
    if (t.numel() > 0) by_dtype[static_cast<int>(t.scalar_type())].push_back(t);
  }
  for (auto& [dtype, group] : by_dtype) {
    std::size_t begin = 0;
    while (begin < group.size()) {
      std::size_t end = begin;
      std::int64_t numel = 0;
      do {
        numel += group[end].numel();
        ++end;
      } while (end < group.size() &&
               (numel + group[end].numel()) * group[end].element_size() <= kBroadcastChunkBytes);
      at::Tensor flat = at::empty({numel}, group[begin].options());
      std::int64_t offset = 0;
      for (std::size_t i = begin; i < end; ++i) {
        const std::int64_t n = group[i].numel();
        if (comm.rank() == root) flat.narrow(0, offset, n).copy_(group[i].detach().reshape(-1));
        offset += n;
      }
      comm.broadcast({flat}, root, {"broadcast", "parameters"});
      offset = 0;
      for (std::size_t i = begin; i < end; ++i) {
        const std::int64_t n = group[i].numel();
        if (comm.rank() != root) {
          group[i].detach().copy_(flat.narrow(0, offset, n).view(group[i].sizes()));
        }
        offset += n;
      }
      begin = end;
    }
  }
}

}  // namespace tessera::comm
