#include "comm/reducer_benchmark.h"

#include <torch/nn/module.h>
#include <torch/types.h>

#include <algorithm>
#include <chrono>

#include "comm/detail/mpi.h"
#include "comm/watchdog.h"
#include "core/error.h"

namespace tessera::comm {
namespace {

double now() {
  return std::chrono::duration<double>(SteadyClock::now().time_since_epoch()).count();
}

// Per-iteration times.
class Samples {
 public:
  void add(double seconds) { values_.push_back(seconds); }
  double best() const {
    return values_.empty() ? 0 : *std::min_element(values_.begin(), values_.end());
  }

  double median() const {
    if (values_.empty()) return 0;
    std::vector<double> v = values_;
    std::sort(v.begin(), v.end());
    const std::size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
  }

 private:
  std::vector<double> values_;
};

// The slowest rank's value of each entry (one small all-reduce after the timed loop): a
// collective takes as long as its slowest participant says.
std::vector<double> slowest(Communicator& comm, const std::vector<double>& mine) {
  at::Tensor t = at::tensor(mine, at::TensorOptions().dtype(at::kDouble)).to(comm.device());
  comm.allReduce({t}, ReduceOp::kMax, {"allreduce", "benchmark times"});
  t = t.cpu();
  return std::vector<double>(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
}

bool rawMpiAvailable(const Communicator& comm) {
  int initialised = 0;
  MPI_Initialized(&initialised);
  return initialised && comm.device().is_cpu() && comm.backendName() == "mpi";
}

// Seconds since the epoch: on one node every rank reads the same clock; across nodes it is as
// close as their clocks are synchronised.
double wallClock() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

double gbps(std::int64_t bytes, double seconds) {
  return seconds > 0 ? static_cast<double>(bytes) / seconds / 1e9 : 0.0;
}

void checkIterations(const BenchIterations& iters) {
  if (iters.iterations <= 0 || iters.warmup < 0) {
    throw UsageError("benchmark: iterations must be positive and warm-up non-negative");
  }
}

}  // namespace

JsonObject benchReducerBandwidth(Communicator& comm, const std::vector<at::Tensor>& like,
                                 const GradReducerOptions& options, const BenchIterations& iters) {
  checkIterations(iters);
  std::vector<at::Tensor> params;
  std::int64_t numel = 0;
  for (const auto& t : like) {
    params.push_back(
        torch::ones(t.sizes(), torch::TensorOptions().dtype(at::kFloat).device(comm.device()))
            .set_requires_grad(true));
    numel += t.numel();
  }
  GradReducer reducer(comm, params, options);
  reducer.setOverlap(false);  // no backward here: finish() launches every bucket
  const std::int64_t bytes = numel * static_cast<std::int64_t>(sizeof(float));
  at::Tensor flat = at::ones({numel}, at::TensorOptions().dtype(at::kFloat).device(comm.device()));
  const bool raw = rawMpiAvailable(comm);
  at::Tensor raw_buffer = raw ? at::ones({numel}, at::kFloat) : at::Tensor();

  Samples reducer_s, raw_s, flat_s;
  for (int i = 0; i < iters.warmup + iters.iterations; ++i) {
    const bool timed = i >= iters.warmup;
    comm.barrier({"barrier", "benchmark"});
    double t0 = now();
    reducer.prepare(true, i);
    reducer.finish();
    if (timed) reducer_s.add(now() - t0);

    if (raw) {
      comm.barrier({"barrier", "benchmark"});
      t0 = now();
      // The baseline blocks without a deadline: it is what an application calling MPI directly
      // would do.
      TESSERA_CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, raw_buffer.data_ptr(), static_cast<int>(numel),
                                      MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD));
      if (timed) raw_s.add(now() - t0);
    }

    comm.barrier({"barrier", "benchmark"});
    t0 = now();
    comm.allReduce({flat}, ReduceOp::kAverage, {"allreduce", "benchmark flat buffer"});
    if (timed) flat_s.add(now() - t0);
  }
  const auto m = slowest(
      comm, {reducer_s.median(), raw_s.median(), flat_s.median(), reducer_s.best(), raw_s.best()});

  JsonObject out;
  out.add("bench", "allreduce_bandwidth")
      .add("backend", comm.backendName())
      .add("ranks", comm.size())
      .add("tensors", static_cast<std::int64_t>(like.size()))
      .add("bytes", bytes)
      .add("buckets", reducer.stats().buckets)
      .add("wire", toString(options.wire))
      .add("wire_bytes", reducer.stats().bytes)
      .add("iterations", iters.iterations)
      .add("reducer_s", m[0])
      .add("reducer_gbps", gbps(bytes, m[0]))
      .add("flat_s", m[2])
      .add("flat_gbps", gbps(bytes, m[2]))
      .add("ratio_vs_flat", m[0] > 0 ? m[2] / m[0] : 0.0);
  if (raw) {
    out.add("raw_mpi_s", m[1])
        .add("raw_mpi_gbps", gbps(bytes, m[1]))
        .add("ratio_vs_raw_mpi", m[0] > 0 ? m[1] / m[0] : 0.0)
        // Best iterations: what remains of each when the machine is quiet.
        .add("reducer_best_s", m[3])
        .add("raw_mpi_best_s", m[4])
        .add("ratio_best_vs_raw_mpi", m[3] > 0 ? m[4] / m[3] : 0.0);
  }
  return out;
}

JsonObject benchReducerOverlap(Communicator& comm, torch::nn::Module& model,
                               const std::function<at::Tensor()>& loss,
                               const GradReducerOptions& options, const BenchIterations& iters) {
  checkIterations(iters);
  GradReducer reducer(comm, model.parameters(), options);
  // Per timed iteration, this rank's: backward alone; backward and finish() without overlap;
  // backward and finish() with overlap; the overlapped buckets' launch->completion time; and
  // when backward ended (wall clock, comparable between ranks) in both reducing variants.
  enum Column {
    kAlone,
    kSyncBackward,
    kSyncFinish,
    kOverlapBackward,
    kOverlapFinish,
    kOverlapComm,
    kSyncEnded,
    kOverlapEnded
  };
  constexpr int kColumns = 8;
  at::Tensor mine = at::zeros({iters.iterations, kColumns}, at::kDouble);
  auto* row = mine.data_ptr<double>();
  std::int64_t step = 0;
  for (int i = 0; i < iters.warmup + iters.iterations; ++i) {
    double* r = i >= iters.warmup ? row + (i - iters.warmup) * kColumns : nullptr;

    reducer.zeroGrad();
    at::Tensor l = loss();
    comm.barrier({"barrier", "benchmark"});
    double t0 = now();
    reducer.prepare(false, step);  // gradients only accumulate locally
    l.backward();
    reducer.finish();
    if (r) r[kAlone] = now() - t0;

    for (const bool overlap : {false, true}) {
      reducer.zeroGrad();
      l = loss();
      reducer.setOverlap(overlap);
      comm.barrier({"barrier", "benchmark"});
      t0 = now();
      reducer.prepare(true, step++);
      l.backward();
      const double t1 = now();
      const double ended = wallClock();
      reducer.finish();
      const double t2 = now();
      if (r) {
        r[overlap ? kOverlapEnded : kSyncEnded] = ended;
        r[overlap ? kOverlapBackward : kSyncBackward] = t1 - t0;
        r[overlap ? kOverlapFinish : kSyncFinish] = t2 - t1;
        if (overlap) r[kOverlapComm] = reducer.stats().comm_seconds;
      }
    }
  }

  // A rank that finishes backward early waits in finish() for the slower ones: that skew is
  // not communication. What finish() costs the rank that finished backward last is. (Ranks
  // leave the barrier at slightly different times, so "last" is judged by the clock.)
  const at::Tensor all = comm.allGather(mine.to(comm.device()), {"allgather", "benchmark times"})
                             .cpu()
                             .view({comm.size(), iters.iterations, kColumns});
  Samples backward_s, sync_comm_s, then_sync_s, overlapped_s, exposed_s, overlapped_comm_s, skew_s;
  for (int i = 0; i < iters.iterations; ++i) {
    const at::Tensor it = all.select(1, i);  // [ranks, columns]
    const auto column = [&](int c) { return it.select(1, c); };
    const std::int64_t last_sync = column(kSyncEnded).argmax().item<std::int64_t>();
    const std::int64_t last_overlap = column(kOverlapEnded).argmax().item<std::int64_t>();
    backward_s.add(column(kAlone).max().item<double>());
    sync_comm_s.add(it[last_sync][kSyncFinish].item<double>());
    then_sync_s.add((column(kSyncBackward) + column(kSyncFinish)).max().item<double>());
    exposed_s.add(it[last_overlap][kOverlapFinish].item<double>());
    overlapped_s.add((column(kOverlapBackward) + column(kOverlapFinish)).max().item<double>());
    overlapped_comm_s.add(it[last_overlap][kOverlapComm].item<double>());
    skew_s.add((column(kOverlapEnded).max() - column(kOverlapEnded).min()).item<double>());
  }
  const double sync = sync_comm_s.median();
  const double exposed = exposed_s.median();
  JsonObject out;
  out.add("bench", "allreduce_overlap")
      .add("backend", comm.backendName())
      .add("ranks", comm.size())
      .add("buckets", reducer.stats().buckets)
      .add("bytes", reducer.stats().bytes)
      .add("wire", toString(options.wire))
      .add("iterations", iters.iterations)
      .add("backward_s", backward_s.median())
      .add("sync_comm_s", sync)
      .add("backward_then_sync_s", then_sync_s.median())
      .add("overlapped_s", overlapped_s.median())
      .add("exposed_s", exposed)
      .add("overlapped_comm_s", overlapped_comm_s.median())
      .add("backward_skew_s", skew_s.median())
      .add("hidden_fraction", sync > 0 ? 1.0 - exposed / sync : 0.0)
      .add("speedup",
           overlapped_s.median() > 0 ? then_sync_s.median() / overlapped_s.median() : 0.0);
  return out;
}

}  // namespace tessera::comm
