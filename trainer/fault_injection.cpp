#include "trainer/fault_injection.h"

#include <spdlog/spdlog.h>

namespace tessera::trainer {

FaultInjection::FaultInjection(const DebugConfig& debug, int rank,
                               const std::filesystem::path& run_dir)
    : debug_(debug), rank_(rank) {
  if (debug.dump_indices) {
    indices_ = std::make_unique<std::ofstream>(
        run_dir / spdlog::fmt_lib::format("indices-rank{}.txt", rank), std::ios::app);
  }
}

bool FaultInjection::nonFinite(std::int64_t attempt) const {
  return debug_.nan_at_step >= 0 && attempt >= debug_.nan_at_step &&
         attempt < debug_.nan_at_step + debug_.nan_steps &&
         (debug_.nan_rank < 0 || debug_.nan_rank == rank_);
}

void FaultInjection::recordIndices(std::int64_t step, const at::Tensor& indices) {
  if (!indices_) return;
  const at::Tensor idx = indices.contiguous().cpu().to(at::kLong);
  const std::int64_t* p = idx.data_ptr<std::int64_t>();
  *indices_ << step;
  for (std::int64_t i = 0; i < idx.numel(); ++i) *indices_ << ' ' << p[i];
  *indices_ << '\n' << std::flush;
}

}  // namespace tessera::trainer
