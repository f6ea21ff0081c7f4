// Compiled only when TESSERA_WITH_NCCL (comm/CMakeLists.txt). Written against NCCL 2.28 and
// PyTorch 2.x's LibTorch CUDA API.
#include "comm/nccl_communicator.h"

#include <ATen/cuda/CUDAEvent.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#include <nccl.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>

#include "comm/detail/tensor_checks.h"
#include "comm/watchdog.h"
#include "core/error.h"

namespace tessera::comm {
namespace detail {

// Throws CommError naming the call, NCCL's error string and its last error message.
void checkNccl(ncclResult_t rc, const char* call, const char* file, int line) {
  if (rc == ncclSuccess || rc == ncclInProgress) return;
  const char* last = ncclGetLastError(nullptr);
  throw CommError(std::string(call) + " failed: " + ncclGetErrorString(rc) +
                  (last != nullptr && *last != '\0' ? std::string(" (") + last + ")" : "") + " (" +
                  file + ":" + std::to_string(line) + ")");
}

}  // namespace detail

#define TESSERA_CHECK_NCCL(call) \
  ::tessera::comm::detail::checkNccl((call), #call, __FILE__, __LINE__)

namespace {

ncclDataType_t ncclType(c10::ScalarType dtype, const std::string& what) {
  switch (dtype) {
    case c10::kFloat:
      return ncclFloat32;
    case c10::kDouble:
      return ncclFloat64;
    case c10::kHalf:
      return ncclFloat16;
#if defined(__CUDA_BF16_TYPES_EXIST__)
    case c10::kBFloat16:
      return ncclBfloat16;
#endif
    case c10::kLong:
      return ncclInt64;
    case c10::kInt:
      return ncclInt32;
    case c10::kChar:
      return ncclInt8;
    case c10::kByte:
      return ncclUint8;
    default:
      throw Error(what + ": dtype " + std::string(c10::toString(dtype)) +
                  " is not supported by NCCL");
  }
}

c10::Device resolve(c10::Device device) {
  if (!device.is_cuda())
    throw Error("the NCCL communicator needs a CUDA device, not " + device.str());
  if (device.has_index()) return device;
  return c10::Device(c10::kCUDA, c10::cuda::current_device());
}

}  // namespace

struct NcclCommunicator::State {
  ncclComm_t comm = nullptr;
  int rank = 0;
  int size = 1;
  c10::Device device;
  c10::cuda::CUDAStream stream;  // NCCL's own stream
  Watchdog watchdog;
  std::mutex mutex;    // NCCL calls on one communicator must not interleave between threads
  std::string broken;  // the first failure; no collective runs after one
  bool aborted = false;

  State(c10::Device d, std::chrono::milliseconds timeout)
      : device(d),
        stream(c10::cuda::getStreamFromPool(/*isHighPriority=*/true, d.index())),
        watchdog(timeout) {}

  ~State() {
    if (comm == nullptr || aborted) return;
    c10::cuda::CUDAGuard guard(device);
    if (!broken.empty() || std::uncaught_exceptions() > 0) {
      // Peers may be gone: finalising would wait for them.
      ncclCommAbort(comm);
      return;
    }
    // Finalise (flushes outstanding work, synchronises with peers) under the deadline, then
    // destroy; abort instead when that fails or takes too long.
    const auto started = SteadyClock::now();
    ncclResult_t rc = ncclCommFinalize(comm);
    ncclResult_t state = rc;
    while (rc == ncclSuccess || rc == ncclInProgress) {
      if (ncclCommGetAsyncError(comm, &state) != ncclSuccess) break;
      if (state != ncclInProgress) break;
      if (SteadyClock::now() - started > watchdog.timeout()) break;
      std::this_thread::yield();
    }
    if (state == ncclSuccess) {
      ncclCommDestroy(comm);
    } else {
      spdlog::warn("NCCL communicator did not finalise cleanly ({}); aborting it",
                   ncclGetErrorString(state));
      ncclCommAbort(comm);
    }
  }

  void abort(const std::string& reason) {
    if (broken.empty()) broken = reason;
    if (!aborted && comm != nullptr) {
      ncclCommAbort(comm);
      aborted = true;
    }
  }

  void checkUsable(const std::string& what) const {
    if (!broken.empty()) {
      throw CommError(what +
                      ": the NCCL communicator is unusable after an earlier failure: " + broken);
    }
  }

  // Throws (after aborting) if NCCL reports an asynchronous error; returns the state otherwise.
  ncclResult_t asyncState(const std::string& what) {
    ncclResult_t state = ncclSuccess;
    const ncclResult_t rc = ncclCommGetAsyncError(comm, &state);
    if (rc != ncclSuccess) state = rc;
    if (state != ncclSuccess && state != ncclInProgress) {
      const std::string msg = what + ": NCCL error " + ncclGetErrorString(state);
      abort(msg);
      throw CommError(msg);
    }
    return state;
  }

  // Non-blocking communicators may answer a call with ncclInProgress; nothing else may be called
  // on them until the state leaves it.
  void settle(const std::string& what, const OpLabel& label, std::int64_t bytes,
              SteadyClock::time_point started) {
    try {
      watchdog.waitFor(
          [&] { return asyncState(what) != ncclInProgress; }, started,
          [&] {
            return describeTimeout(label, bytes, watchdog.timeout()) +
                   " (NCCL did not accept the operation; which peers it waits for is not known)";
          });
    } catch (const CommError& e) {
      abort(e.what());
      throw;
    }
  }
};

namespace {

using State = NcclCommunicator::State;

class NcclWork final : public Work {
 public:
  NcclWork(std::shared_ptr<State> state, OpLabel label, std::int64_t bytes)
      : state_(std::move(state)),
        label_(std::move(label)),
        bytes_(bytes),
        started_(SteadyClock::now()) {}

  void keep(at::Tensor t) { buffers_.push_back(std::move(t)); }
  at::cuda::CUDAEvent& end() { return end_; }

  bool test() override {
    if (done_) return true;
    {
      std::lock_guard<std::mutex> lock(state_->mutex);
      state_->checkUsable(describeOp(label_, bytes_));
      state_->asyncState(describeOp(label_, bytes_));
    }
    if (!end_.query()) return false;
    done_ = true;
    // Later work on the caller's stream is ordered after the collective (the event has
    // completed, so this costs nothing on the device).
    end_.block(c10::cuda::getCurrentCUDAStream(state_->device.index()));
    buffers_.clear();
    return true;
  }

  void wait() override {
    if (done_) return;
    try {
      state_->watchdog.waitFor([this] { return test(); }, started_,
                               [this] {
                                 return describeTimeout(label_, bytes_,
                                                        state_->watchdog.timeout()) +
                                        " (NCCL; which peers it waits for is not known)";
                               });
    } catch (const CommError& e) {
      std::lock_guard<std::mutex> lock(state_->mutex);
      state_->abort(e.what());
      throw;
    }
  }

 private:
  std::shared_ptr<State> state_;
  OpLabel label_;
  std::int64_t bytes_;
  SteadyClock::time_point started_;
  at::cuda::CUDAEvent end_;
  std::vector<at::Tensor> buffers_;
  bool done_ = false;
};

std::string labelText(const char* op, const OpLabel& label) {
  return std::string(op) + (label.what.empty() ? "" : " " + label.what);
}

// Starts one collective: under the communicator's lock, refuses if the communicator is
// unusable (`what` names the call), then runs `enqueue` (NCCL calls on state.stream inside one
// group) ordered after the caller's current stream, runs `after` on state.stream, and records
// the returned work's completion event.
std::shared_ptr<NcclWork> submit(const std::shared_ptr<State>& state, const std::string& what,
                                 const std::vector<at::Tensor>& tensors, const OpLabel& label,
                                 std::int64_t bytes, const std::function<void()>& enqueue,
                                 const std::function<void()>& after = nullptr) {
  State& s = *state;
  std::lock_guard<std::mutex> lock(s.mutex);
  s.checkUsable(what);
  auto work = std::make_shared<NcclWork>(state, label, bytes);
  const std::string op = describeOp(label, bytes);
  c10::cuda::CUDAGuard guard(s.device);
  at::cuda::CUDAEvent ready;
  ready.record(c10::cuda::getCurrentCUDAStream(s.device.index()));
  ready.block(s.stream);
  const auto started = SteadyClock::now();
  TESSERA_CHECK_NCCL(ncclGroupStart());
  enqueue();
  const ncclResult_t rc = ncclGroupEnd();
  if (rc != ncclSuccess && rc != ncclInProgress) {
    s.abort(op + ": ncclGroupEnd failed");
    TESSERA_CHECK_NCCL(rc);
  }
  if (rc == ncclInProgress) s.settle(op, label, bytes, started);
  if (after) {
    c10::cuda::CUDAStreamGuard stream_guard(s.stream);
    after();
  }
  for (const auto& t : tensors) {
    // The caching allocator must not hand this memory to another stream before NCCL is done.
    c10::cuda::CUDACachingAllocator::recordStream(t.storage().data_ptr(), s.stream);
    work->keep(t);
  }
  work->end().record(s.stream);
  return work;
}

}  // namespace

NcclCommunicator::NcclCommunicator(Communicator& control, c10::Device device,
                                   const CommOptions& options)
    : state_(std::make_shared<State>(resolve(device), options.timeout)) {
  State& s = *state_;
  s.rank = control.rank();
  s.size = control.size();
  c10::cuda::CUDAGuard guard(s.device);

  ncclUniqueId id;
  std::memset(&id, 0, sizeof(id));
  if (s.rank == 0) TESSERA_CHECK_NCCL(ncclGetUniqueId(&id));
  at::Tensor id_bytes =
      at::zeros({static_cast<std::int64_t>(sizeof(id))}, at::TensorOptions().dtype(c10::kByte));
  std::memcpy(id_bytes.data_ptr(), &id, sizeof(id));
  if (control.size() > 1) control.broadcast({id_bytes}, 0, {"broadcast", "ncclUniqueId"});
  std::memcpy(&id, id_bytes.data_ptr(), sizeof(id));

  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  const OpLabel label{"init", "NCCL communicator"};
  const auto started = SteadyClock::now();
  const ncclResult_t rc = ncclCommInitRankConfig(&s.comm, s.size, id, s.rank, &config);
  if (rc != ncclSuccess && rc != ncclInProgress) {
    if (s.comm != nullptr) s.abort("ncclCommInitRankConfig failed");
    TESSERA_CHECK_NCCL(rc);
  }
  s.settle("ncclCommInitRankConfig", label, -1, started);
  int version = 0;
  ncclGetVersion(&version);
  if (s.rank == 0) {
    spdlog::info("NCCL {} communicator of {} ranks on {}", version, s.size, s.device.str());
  }
}

NcclCommunicator::~NcclCommunicator() = default;

int NcclCommunicator::rank() const {
  return state_->rank;
}
int NcclCommunicator::size() const {
  return state_->size;
}
c10::Device NcclCommunicator::device() const {
  return state_->device;
}

std::shared_ptr<Work> NcclCommunicator::allReduceAsync(std::vector<at::Tensor> tensors, ReduceOp op,
                                                       OpLabel label) {
  State& s = *state_;
  if (label.op.empty()) label.op = "allreduce";
  const std::string what = labelText("allreduce", label);
  detail::checkCollectiveTensors(tensors, s.device, what);
  std::vector<at::Tensor> integer_average;
  return submit(
      state_, what, tensors, label, detail::totalBytes(tensors),
      [&] {
        for (const auto& t : tensors) {
          if (t.numel() == 0) continue;
          const ncclDataType_t type = ncclType(t.scalar_type(), what);
          const bool floating = c10::isFloatingType(t.scalar_type());
          ncclRedOp_t red = ncclSum;
          if (op == ReduceOp::kMax) red = ncclMax;
          if (op == ReduceOp::kMin) red = ncclMin;
          if (op == ReduceOp::kAverage && floating) red = ncclAvg;
          if (op == ReduceOp::kAverage && !floating) integer_average.push_back(t);
          TESSERA_CHECK_NCCL(ncclAllReduce(t.data_ptr(), t.data_ptr(),
                                           static_cast<size_t>(t.numel()), type, red, s.comm,
                                           s.stream.stream()));
        }
      },
      [&] {
        for (auto& t : integer_average) t.div_(s.size, "trunc");
      });
}

std::shared_ptr<Work> NcclCommunicator::broadcastAsync(std::vector<at::Tensor> tensors, int root,
                                                       OpLabel label) {
  State& s = *state_;
  if (label.op.empty()) label.op = "broadcast";
  const std::string what = labelText("broadcast", label);
  detail::checkCollectiveTensors(tensors, s.device, what);
  if (root < 0 || root >= s.size) {
    throw Error(what + ": root " + std::to_string(root) + " is not a rank of a world of " +
                std::to_string(s.size));
  }
  return submit(state_, what, tensors, label, detail::totalBytes(tensors), [&] {
    for (const auto& t : tensors) {
      if (t.numel() == 0) continue;
      TESSERA_CHECK_NCCL(ncclBroadcast(t.data_ptr(), t.data_ptr(), static_cast<size_t>(t.nbytes()),
                                       ncclUint8, root, s.comm, s.stream.stream()));
    }
  });
}

at::Tensor NcclCommunicator::allGather(const at::Tensor& tensor, OpLabel label) {
  State& s = *state_;
  if (label.op.empty()) label.op = "allgather";
  const std::string what = labelText("allgather", label);
  if (!tensor.defined()) throw Error(what + ": undefined tensor");
  const at::Tensor src = (tensor.dim() == 0 ? tensor.reshape({1}) : tensor).contiguous();
  detail::checkCollectiveTensors({src}, s.device, what);
  const std::vector<std::int64_t> row_shape(src.sizes().begin() + 1, src.sizes().end());
  std::int64_t row_numel = 1;
  for (auto d : row_shape) row_numel *= d;

  // Round 1: row counts and (dtype, trailing shape) signatures.
  at::Tensor meta = at::empty({2}, at::TensorOptions().dtype(c10::kLong));
  meta.data_ptr<std::int64_t>()[0] = src.size(0);
  meta.data_ptr<std::int64_t>()[1] =
      static_cast<std::int64_t>(detail::shapeSignature(src.scalar_type(), row_shape));
  at::Tensor meta_dev = meta.to(s.device);
  at::Tensor all_meta = meta_dev.new_empty({2 * s.size});
  {
    OpLabel l = label;
    l.op = "allgather(sizes)";
    submit(state_, what, {meta_dev, all_meta}, l, 16, [&] {
      TESSERA_CHECK_NCCL(ncclAllGather(meta_dev.data_ptr(), all_meta.data_ptr(), 2, ncclInt64,
                                       s.comm, s.stream.stream()));
    })->wait();
  }
  const at::Tensor m = all_meta.cpu();
  const std::int64_t* mp = m.data_ptr<std::int64_t>();
  std::int64_t max_rows = 0;
  std::int64_t total_rows = 0;
  std::string disagree;
  for (int r = 0; r < s.size; ++r) {
    max_rows = std::max(max_rows, mp[2 * r]);
    total_rows += mp[2 * r];
    if (mp[2 * r + 1] != meta.data_ptr<std::int64_t>()[1]) {
      disagree += (disagree.empty() ? "" : ", ") + std::to_string(r);
    }
  }
  if (!disagree.empty()) {
    throw CommError(what + ": ranks disagree on dtype or trailing shape: this rank (" +
                    std::to_string(s.rank) + ") has rows of " +
                    detail::describeShape(src.scalar_type(), row_shape) + ", ranks " + disagree +
                    " differ");
  }

  // Round 2: rows padded to the longest contribution, then unpadded.
  std::vector<std::int64_t> padded_shape{max_rows};
  padded_shape.insert(padded_shape.end(), row_shape.begin(), row_shape.end());
  std::vector<std::int64_t> gathered_shape{max_rows * s.size};
  gathered_shape.insert(gathered_shape.end(), row_shape.begin(), row_shape.end());
  std::vector<std::int64_t> out_shape{total_rows};
  out_shape.insert(out_shape.end(), row_shape.begin(), row_shape.end());
  at::Tensor out = src.new_empty(out_shape);
  if (max_rows * row_numel == 0) return out;
  at::Tensor padded = src.new_zeros(padded_shape);
  if (src.size(0) > 0) padded.narrow(0, 0, src.size(0)).copy_(src);
  at::Tensor gathered = src.new_empty(gathered_shape);
  const std::int64_t bytes = padded.nbytes();
  submit(state_, what, {padded, gathered}, label, bytes * s.size, [&] {
    TESSERA_CHECK_NCCL(ncclAllGather(padded.data_ptr(), gathered.data_ptr(),
                                     static_cast<size_t>(bytes), ncclUint8, s.comm,
                                     s.stream.stream()));
  })->wait();
  std::int64_t row = 0;
  for (int r = 0; r < s.size; ++r) {
    const std::int64_t n = mp[2 * r];
    if (n > 0) out.narrow(0, row, n).copy_(gathered.narrow(0, r * max_rows, n));
    row += n;
  }
  return out;
}

void NcclCommunicator::barrier(OpLabel label) {
  if (label.op.empty()) label.op = "barrier";
  at::Tensor one = at::ones({1}, at::TensorOptions().dtype(c10::kFloat).device(state_->device));
  allReduce({one}, ReduceOp::kSum, std::move(label));
}

std::string ncclDeviceIdentity(c10::Device device) {
  device = resolve(device);
  char bus_id[64] = {0};
  if (cudaDeviceGetPCIBusId(bus_id, sizeof(bus_id), device.index()) != cudaSuccess) {
    return "cuda:" + std::to_string(device.index());
  }
  return bus_id;
}

}  // namespace tessera::comm
