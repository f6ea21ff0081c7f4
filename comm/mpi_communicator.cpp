#include "comm/mpi_communicator.h"

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <c10/util/accumulate.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <thread>

#include "comm/detail/mpi.h"
#include "comm/detail/tensor_checks.h"
#include "comm/peer_board.h"
#include "comm/watchdog.h"
#include "core/error.h"

namespace tessera::comm {
namespace {

// MPI counts are ints; larger tensors are split into pieces of this many elements.
constexpr std::int64_t kMaxCount = std::int64_t{1} << 30;

// User-defined reductions for the 16-bit float formats: widen to float, combine, round to
// nearest even. Commutative, so MPI may combine partial results in any order. Max and min
// propagate NaN, as torch.max/min do.
struct SumOf {
  float operator()(float a, float b) const { return a + b; }
};
struct MaxOf {
  float operator()(float a, float b) const { return a != a || a > b ? a : b; }
};
struct MinOf {
  float operator()(float a, float b) const { return a != a || a < b ? a : b; }
};

template <typename Half16, typename Combine>
void reduce16(void* in, void* inout, int* len, MPI_Datatype*) {
  static_assert(sizeof(Half16) == 2);
  const auto* a = static_cast<const Half16*>(in);
  auto* b = static_cast<Half16*>(inout);
  const Combine combine;
  for (int i = 0; i < *len; ++i) {
    b[i] = Half16(combine(static_cast<float>(a[i]), static_cast<float>(b[i])));
  }
}

std::atomic<int> g_board_counter{0};

// Open MPI's libnbc runs an in-place MPI_Iallreduce on fewer than four ranks as a binomial tree
// (reduce to rank 0, then broadcast): about twice the time of the ring that blocking
// MPI_Allreduce effectively uses, measured here for 1-26 MB on 2 ranks. Where the library exposes
// the choice as a writable MPI_T control variable (Open MPI) and the user has not set it, large
// all-reduces ask for the ring and small ones leave the choice to the library.
class IallreduceAlgorithm {
 public:
  static constexpr const char* kVariable = "coll_libnbc_iallreduce_algorithm";
  static constexpr std::int64_t kRingFromBytes = 64 << 10;

  IallreduceAlgorithm() {
    const std::string env = std::string("OMPI_MCA_") + kVariable;
    if (std::getenv(env.c_str()) != nullptr) return;  // the user's choice stands
    int provided = 0;
    if (MPI_T_init_thread(MPI_THREAD_SINGLE, &provided) != MPI_SUCCESS) return;
    initialised_ = true;
    int index = -1;
    int count = 0;
    if (MPI_T_cvar_get_index(kVariable, &index) != MPI_SUCCESS) return;
    if (MPI_T_cvar_handle_alloc(index, nullptr, &handle_, &count) != MPI_SUCCESS) return;
    enabled_ = count == 1;
  }

  ~IallreduceAlgorithm() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;
    if (enabled_) {
      set(kAuto);
      MPI_T_cvar_handle_free(&handle_);
    }
    if (initialised_) MPI_T_finalize();
  }

  IallreduceAlgorithm(const IallreduceAlgorithm&) = delete;
  IallreduceAlgorithm& operator=(const IallreduceAlgorithm&) = delete;

  // Before each MPI_Iallreduce of `bytes`.
  void select(std::int64_t bytes) {
    if (enabled_) set(bytes >= kRingFromBytes ? kRing : kAuto);
  }

 private:
  static constexpr int kAuto = 0;
  static constexpr int kRing = 1;

  void set(int value) {
    // The variable is process-wide: remember what was written last, whichever communicator did.
    static int current = kAuto;
    if (value == current) return;
    if (MPI_T_cvar_write(handle_, &value) == MPI_SUCCESS) {
      current = value;
    } else {
      enabled_ = false;
    }
  }

  bool initialised_ = false;
  bool enabled_ = false;
  MPI_T_cvar_handle handle_{};
};

}  // namespace

struct MpiCommunicator::State {
  // MPI requests and the buffers they read and write, kept when a Work is destroyed before its
  // collective completed (after a timeout): a peer may still deliver into them.
  struct Abandoned {
    std::vector<MPI_Request> requests;
    std::vector<at::Tensor> buffers;
  };

  MPI_Comm comm = MPI_COMM_NULL;
  int rank = 0;
  int size = 1;
  c10::Device device{c10::kCPU};
  Watchdog watchdog;
  std::thread::id owner = std::this_thread::get_id();
  std::int64_t seq = 0;  // collectives launched on this communicator
  MPI_Op bf16_ops[3] = {MPI_OP_NULL, MPI_OP_NULL, MPI_OP_NULL};  // sum, max, min
  MPI_Op fp16_ops[3] = {MPI_OP_NULL, MPI_OP_NULL, MPI_OP_NULL};
  std::unique_ptr<PeerBoard> board;
  int board_slot = -1;
  std::vector<int> node_ranks;  // world rank of each board slot
  std::string broken;           // the first failure; no collective runs after one
  std::vector<Abandoned> abandoned;
  IallreduceAlgorithm iallreduce_algorithm;

  explicit State(std::chrono::milliseconds timeout) : watchdog(timeout) {}

  ~State() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    const bool pending = !abandoned.empty();
    if (pending) {
      // Deliberately leaked: MPI may still write into these buffers, and the process is about to
      // be torn down by the caller's error handling anyway.
      new std::vector<Abandoned>(std::move(abandoned));
    }
    if (finalized) return;
    for (MPI_Op* op :
         {&bf16_ops[0], &bf16_ops[1], &bf16_ops[2], &fp16_ops[0], &fp16_ops[1], &fp16_ops[2]}) {
      if (*op != MPI_OP_NULL) MPI_Op_free(op);
    }
    if (comm != MPI_COMM_NULL && !pending) MPI_Comm_free(&comm);
  }

  void checkUsable(const char* op, const OpLabel& label) const {
    if (!broken.empty()) {
      throw CommError(std::string(op) + " " + label.what +
                      ": the MPI communicator is unusable after an earlier failure: " + broken);
    }
    if (std::this_thread::get_id() != owner) {
      throw Error(std::string(op) + " " + label.what +
                  ": MPI collectives must be launched from the thread that created the "
                  "communicator (MPI_THREAD_FUNNELED)");
    }
  }

  MPI_Op mpiOp(ReduceOp op, c10::ScalarType dtype) const {
    const int index = op == ReduceOp::kMax ? 1 : op == ReduceOp::kMin ? 2 : 0;
    if (dtype == c10::kBFloat16) return bf16_ops[index];
    if (dtype == c10::kHalf) return fp16_ops[index];
    return index == 1 ? MPI_MAX : index == 2 ? MPI_MIN : MPI_SUM;
  }

  // "; waiting on rank 1 (entered collectives up to #41, last at step 119; no MPI progress for
  // 9.8 s); ranks on other nodes: not known".
  std::string peerReport(std::int64_t my_seq) const {
    if (!board) return "; which peers it waited for is not known (no shared-memory board)";
    std::string lagging;
    std::string stalled;
    char buf[256];
    for (int slot = 0; slot < board->slots(); ++slot) {
      if (slot == board_slot) continue;
      const auto p = board->read(slot);
      const std::string step =
          p.step >= 0 ? ", last at step " + std::to_string(p.step) : std::string();
      if (p.launched < my_seq) {
        std::snprintf(buf, sizeof(buf),
                      "rank %d (entered collectives up to #%lld%s; no MPI progress for %.1f s)",
                      node_ranks[static_cast<size_t>(slot)], static_cast<long long>(p.launched),
                      step.c_str(), p.idle_seconds);
        lagging += (lagging.empty() ? "" : ", ") + std::string(buf);
      } else if (p.completed < my_seq && p.idle_seconds > 1.0) {
        std::snprintf(buf, sizeof(buf), "rank %d (entered it; no MPI progress for %.1f s)",
                      node_ranks[static_cast<size_t>(slot)], p.idle_seconds);
        stalled += (stalled.empty() ? "" : ", ") + std::string(buf);
      }
    }
    std::string out;
    if (!lagging.empty()) out += "; waiting on " + lagging;
    if (!stalled.empty()) out += "; stalled inside it: " + stalled;
    if (lagging.empty() && stalled.empty()) out += "; every rank on this node has entered it";
    if (board->slots() < size) out += "; ranks on other nodes: not known";
    return out;
  }
};

namespace {

using State = MpiCommunicator::State;

class MpiWork final : public Work {
 public:
  MpiWork(std::shared_ptr<State> state, OpLabel label, std::int64_t bytes)
      : state_(std::move(state)),
        label_(std::move(label)),
        bytes_(bytes),
        seq_(++state_->seq),
        started_(SteadyClock::now()) {
    if (state_->board) state_->board->entered(state_->board_slot, seq_, label_.step);
  }

  ~MpiWork() override {
    if (!done_ && !requests_.empty()) {
      state_->abandoned.push_back({std::move(requests_), std::move(buffers_)});
    }
  }

  // Posts one non-blocking MPI call; `post` receives the request to fill in.
  void post(const char* call, const std::function<int(MPI_Request*)>& post) {
    MPI_Request request = MPI_REQUEST_NULL;
    const int rc = post(&request);
    if (rc != MPI_SUCCESS) fail(call, rc);
    requests_.push_back(request);
  }
  void keep(at::Tensor buffer) { buffers_.push_back(std::move(buffer)); }
  void onComplete(std::function<void()> fn) { on_complete_ = std::move(fn); }

  bool test() override {
    if (done_) return true;
    int flag = 1;
    if (!requests_.empty()) {
      const int rc = MPI_Testall(static_cast<int>(requests_.size()), requests_.data(), &flag,
                                 MPI_STATUSES_IGNORE);
      if (rc != MPI_SUCCESS) fail("MPI_Testall", rc);
    }
    if (state_->board) state_->board->heartbeat(state_->board_slot);
    if (!flag) return false;
    done_ = true;
    requests_.clear();
    if (state_->board) state_->board->completed(state_->board_slot, seq_);
    if (on_complete_) on_complete_();
    buffers_.clear();
    on_complete_ = nullptr;
    return true;
  }

  void wait() override {
    if (done_) return;
    try {
      state_->watchdog.waitFor(
          [this] { return test(); }, started_,
          [this] {
            return describeTimeout(label_, bytes_, state_->watchdog.timeout()) + " (collective #" +
                   std::to_string(seq_) + " on this MPI communicator)" + state_->peerReport(seq_);
          });
    } catch (const CommError& e) {
      if (state_->broken.empty()) state_->broken = e.what();
      throw;
    }
  }

 private:
  [[noreturn]] void fail(const char* call, int rc) {
    char text[MPI_MAX_ERROR_STRING] = {0};
    int len = 0;
    MPI_Error_string(rc, text, &len);
    const std::string msg =
        describeOp(label_, bytes_) + ": " + call + " failed: " + std::string(text, len);
    if (state_->broken.empty()) state_->broken = msg;
    throw CommError(msg);
  }

  std::shared_ptr<State> state_;
  OpLabel label_;
  std::int64_t bytes_;
  std::int64_t seq_;
  SteadyClock::time_point started_;
  std::vector<MPI_Request> requests_;
  std::vector<at::Tensor> buffers_;
  std::function<void()> on_complete_;
  bool done_ = false;
};

MPI_Datatype mpiType(c10::ScalarType dtype) {
  switch (dtype) {
    case c10::kFloat:
      return MPI_FLOAT;
    case c10::kDouble:
      return MPI_DOUBLE;
    case c10::kLong:
      return MPI_INT64_T;
    case c10::kInt:
      return MPI_INT32_T;
    case c10::kShort:
      return MPI_INT16_T;
    case c10::kChar:
      return MPI_INT8_T;
    case c10::kByte:
      return MPI_UINT8_T;
    case c10::kBFloat16:
    case c10::kHalf:
      return MPI_UINT16_T;  // with the user-defined operations above
    default:
      return MPI_DATATYPE_NULL;
  }
}

std::string labelText(const char* op, const OpLabel& label) {
  return std::string(op) + (label.what.empty() ? "" : " " + label.what);
}

// On the staging path (CUDA tensors without NCCL) collectives run on host copies.
at::Tensor hostView(const at::Tensor& t, bool staged) {
  return staged ? t.to(c10::kCPU) : t;
}

void setupBoard(State& s) {
  MPI_Comm node = MPI_COMM_NULL;
  TESSERA_CHECK_MPI(
      MPI_Comm_split_type(s.comm, MPI_COMM_TYPE_SHARED, s.rank, MPI_INFO_NULL, &node));
  int local_rank = 0;
  int local_size = 1;
  TESSERA_CHECK_MPI(MPI_Comm_rank(node, &local_rank));
  TESSERA_CHECK_MPI(MPI_Comm_size(node, &local_size));
  s.node_ranks.assign(static_cast<size_t>(local_size), 0);
  TESSERA_CHECK_MPI(MPI_Allgather(&s.rank, 1, MPI_INT, s.node_ranks.data(), 1, MPI_INT, node));
  char name[64] = {0};
  std::unique_ptr<PeerBoard> board;
  if (local_rank == 0) {
    std::snprintf(name, sizeof(name), "/tessera-comm-%d-%d", static_cast<int>(getpid()),
                  g_board_counter.fetch_add(1));
    try {
      board = PeerBoard::create(name, local_size);
    } catch (const Error& e) {
      spdlog::debug("no peer board for timeout reports: {}", e.what());
      name[0] = '\0';
    }
  }
  TESSERA_CHECK_MPI(MPI_Bcast(name, sizeof(name), MPI_CHAR, 0, node));
  if (local_rank != 0 && name[0] != '\0') {
    try {
      board = PeerBoard::open(name, local_size);
    } catch (const Error& e) {
      spdlog::debug("no peer board for timeout reports: {}", e.what());
    }
  }
  TESSERA_CHECK_MPI(MPI_Barrier(node));
  if (local_rank == 0 && board) board->unlinkName();
  TESSERA_CHECK_MPI(MPI_Comm_free(&node));
  s.board = std::move(board);
  s.board_slot = local_rank;
  // With a core per rank, waits spin and then yield for up to a second, as blocking MPI does
  // (a sleeping rank delays every step of a collective once the last peer arrives); with more
  // ranks than cores they soon sleep (like Open MPI's mpi_yield_when_idle).
  const unsigned cores = std::thread::hardware_concurrency();
  const bool oversubscribed = cores == 0 || static_cast<unsigned>(local_size) > cores;
  if (oversubscribed) {
    s.watchdog.setBackoff(std::chrono::microseconds(20), std::chrono::milliseconds(2));
  } else {
    s.watchdog.setBackoff(std::chrono::milliseconds(2), std::chrono::seconds(1));
  }
}

}  // namespace

MpiCommunicator::MpiCommunicator(const World& world, c10::Device device, const CommOptions& options)
    : state_(std::make_shared<State>(options.timeout)) {
  if (!world.mpi) {
    throw Error("the MPI communicator needs MPI, but this process was started without a launcher");
  }
  if (!device.is_cpu() && !device.is_cuda()) {
    throw Error("the MPI communicator supports CPU and CUDA tensors, not " + device.str());
  }
  State& s = *state_;
  s.device = device;
  TESSERA_CHECK_MPI(MPI_Comm_dup(MPI_COMM_WORLD, &s.comm));
  TESSERA_CHECK_MPI(MPI_Comm_set_errhandler(s.comm, MPI_ERRORS_RETURN));
  TESSERA_CHECK_MPI(MPI_Comm_rank(s.comm, &s.rank));
  TESSERA_CHECK_MPI(MPI_Comm_size(s.comm, &s.size));
  TESSERA_CHECK_MPI(MPI_Op_create(&reduce16<c10::BFloat16, SumOf>, 1, &s.bf16_ops[0]));
  TESSERA_CHECK_MPI(MPI_Op_create(&reduce16<c10::BFloat16, MaxOf>, 1, &s.bf16_ops[1]));
  TESSERA_CHECK_MPI(MPI_Op_create(&reduce16<c10::BFloat16, MinOf>, 1, &s.bf16_ops[2]));
  TESSERA_CHECK_MPI(MPI_Op_create(&reduce16<c10::Half, SumOf>, 1, &s.fp16_ops[0]));
  TESSERA_CHECK_MPI(MPI_Op_create(&reduce16<c10::Half, MaxOf>, 1, &s.fp16_ops[1]));
  TESSERA_CHECK_MPI(MPI_Op_create(&reduce16<c10::Half, MinOf>, 1, &s.fp16_ops[2]));
  setupBoard(s);
}

MpiCommunicator::~MpiCommunicator() = default;

int MpiCommunicator::rank() const {
  return state_->rank;
}
int MpiCommunicator::size() const {
  return state_->size;
}
c10::Device MpiCommunicator::device() const {
  return state_->device;
}

std::shared_ptr<Work> MpiCommunicator::allReduceAsync(std::vector<at::Tensor> tensors, ReduceOp op,
                                                      OpLabel label) {
  State& s = *state_;
  s.checkUsable("allreduce", label);
  if (label.op.empty()) label.op = "allreduce";
  detail::checkCollectiveTensors(tensors, s.device, labelText("allreduce", label));
  for (const auto& t : tensors) {
    if (mpiType(t.scalar_type()) == MPI_DATATYPE_NULL) {
      throw Error(labelText("allreduce", label) + ": dtype " +
                  std::string(c10::toString(t.scalar_type())) + " is not supported by MPI");
    }
  }
  const bool staged = s.device.is_cuda();
  auto work = std::make_shared<MpiWork>(state_, std::move(label), detail::totalBytes(tensors));
  std::vector<at::Tensor> hosts;
  for (const auto& t : tensors) {
    at::Tensor host = hostView(t, staged);
    const MPI_Datatype type = mpiType(host.scalar_type());
    const MPI_Op mpi_op = s.mpiOp(op, host.scalar_type());
    auto* base = static_cast<char*>(host.data_ptr());
    const std::int64_t n = host.numel();
    for (std::int64_t off = 0; off < n; off += kMaxCount) {
      const int count = static_cast<int>(std::min(kMaxCount, n - off));
      void* ptr = base + off * static_cast<std::int64_t>(host.element_size());
      s.iallreduce_algorithm.select(count * static_cast<std::int64_t>(host.element_size()));
      work->post("MPI_Iallreduce", [&](MPI_Request* r) {
        return MPI_Iallreduce(MPI_IN_PLACE, ptr, count, type, mpi_op, s.comm, r);
      });
    }
    work->keep(host);
    hosts.push_back(std::move(host));
  }
  const int size = s.size;
  work->onComplete([op, size, staged, tensors = std::move(tensors), hosts]() mutable {
    for (size_t i = 0; i < hosts.size(); ++i) {
      if (op == ReduceOp::kAverage && size > 1 && hosts[i].numel() > 0) {
        if (c10::isFloatingType(hosts[i].scalar_type())) {
          hosts[i].div_(size);
        } else {
          hosts[i].div_(size, "trunc");
        }
      }
      if (staged) tensors[i].copy_(hosts[i]);
    }
  });
  return work;
}

std::shared_ptr<Work> MpiCommunicator::broadcastAsync(std::vector<at::Tensor> tensors, int root,
                                                      OpLabel label) {
  State& s = *state_;
  s.checkUsable("broadcast", label);
  if (label.op.empty()) label.op = "broadcast";
  detail::checkCollectiveTensors(tensors, s.device, labelText("broadcast", label));
  if (root < 0 || root >= s.size) {
    throw Error(labelText("broadcast", label) + ": root " + std::to_string(root) +
                " is not a rank of a world of " + std::to_string(s.size));
  }
  const bool staged = s.device.is_cuda();
  auto work = std::make_shared<MpiWork>(state_, std::move(label), detail::totalBytes(tensors));
  std::vector<at::Tensor> hosts;
  for (const auto& t : tensors) {
    at::Tensor host = hostView(t, staged);
    auto* base = static_cast<char*>(host.data_ptr());
    const std::int64_t n = host.numel() * static_cast<std::int64_t>(host.element_size());
    for (std::int64_t off = 0; off < n; off += kMaxCount) {
      const int count = static_cast<int>(std::min(kMaxCount, n - off));
      work->post("MPI_Ibcast", [&](MPI_Request* r) {
        return MPI_Ibcast(base + off, count, MPI_BYTE, root, s.comm, r);
      });
    }
    work->keep(host);
    hosts.push_back(std::move(host));
  }
  if (staged && s.rank != root) {
    work->onComplete([tensors = std::move(tensors), hosts]() mutable {
      for (size_t i = 0; i < hosts.size(); ++i) tensors[i].copy_(hosts[i]);
    });
  }
  return work;
}

at::Tensor MpiCommunicator::allGather(const at::Tensor& tensor, OpLabel label) {
  State& s = *state_;
  s.checkUsable("allgather", label);
  if (label.op.empty()) label.op = "allgather";
  const std::string name = labelText("allgather", label);
  if (!tensor.defined()) throw Error(name + ": undefined tensor");
  detail::checkCollectiveTensors({tensor.contiguous()}, s.device, name);
  const bool staged = s.device.is_cuda();
  at::Tensor src =
      hostView((tensor.dim() == 0 ? tensor.reshape({1}) : tensor).contiguous(), staged);
  const std::vector<std::int64_t> row_shape(src.sizes().begin() + 1, src.sizes().end());
  const std::int64_t row_bytes =
      c10::multiply_integers(row_shape) * static_cast<std::int64_t>(src.element_size());
  const std::int64_t signature =
      static_cast<std::int64_t>(detail::shapeSignature(src.scalar_type(), row_shape));

  // Round 1: every rank's row count and (dtype, trailing shape) signature.
  const auto long_opts = at::TensorOptions().dtype(c10::kLong).device(c10::kCPU);
  at::Tensor meta = src.new_empty({2}, long_opts);
  meta.data_ptr<std::int64_t>()[0] = src.size(0);
  meta.data_ptr<std::int64_t>()[1] = signature;
  at::Tensor all_meta = src.new_empty({2 * s.size}, long_opts);
  {
    OpLabel l = label;
    l.op = "allgather(sizes)";
    MpiWork work(state_, std::move(l), 16);
    work.post("MPI_Iallgather", [&](MPI_Request* r) {
      return MPI_Iallgather(meta.data_ptr(), 2, MPI_INT64_T, all_meta.data_ptr(), 2, MPI_INT64_T,
                            s.comm, r);
    });
    work.keep(meta);
    work.keep(all_meta);
    work.wait();
  }
  const std::int64_t* m = all_meta.data_ptr<std::int64_t>();
  std::string disagree;
  for (int r = 0; r < s.size; ++r) {
    if (m[2 * r + 1] != signature) disagree += (disagree.empty() ? "" : ", ") + std::to_string(r);
  }
  if (!disagree.empty()) {
    throw CommError(name + ": ranks disagree on dtype or trailing shape: this rank (" +
                    std::to_string(s.rank) + ") has rows of " +
                    detail::describeShape(src.scalar_type(), row_shape) + ", ranks " + disagree +
                    " differ");
  }

  // Round 2: the rows themselves.
  std::int64_t total_rows = 0;
  at::Tensor counts = src.new_empty({s.size}, long_opts.dtype(c10::kInt));
  at::Tensor displs = src.new_empty({s.size}, long_opts.dtype(c10::kInt));
  std::int64_t total_bytes = 0;
  for (int r = 0; r < s.size; ++r) {
    const std::int64_t bytes = m[2 * r] * row_bytes;
    if (bytes > INT_MAX || total_bytes > INT_MAX) {
      throw Error(name + ": more than 2 GB to gather; allGather is for small agreements");
    }
    counts.data_ptr<int>()[r] = static_cast<int>(bytes);
    displs.data_ptr<int>()[r] = static_cast<int>(total_bytes);
    total_bytes += bytes;
    total_rows += m[2 * r];
  }
  std::vector<std::int64_t> out_shape{total_rows};
  out_shape.insert(out_shape.end(), row_shape.begin(), row_shape.end());
  at::Tensor out = src.new_empty(out_shape);
  if (total_bytes > 0) {
    MpiWork work(state_, label, total_bytes);
    const int my_bytes = counts.data_ptr<int>()[s.rank];
    work.post("MPI_Iallgatherv", [&](MPI_Request* r) {
      return MPI_Iallgatherv(src.data_ptr(), my_bytes, MPI_BYTE, out.data_ptr(),
                             counts.data_ptr<int>(), displs.data_ptr<int>(), MPI_BYTE, s.comm, r);
    });
    for (const auto& t : {src, out, counts, displs}) work.keep(t);
    work.wait();
  }
  return staged ? out.to(s.device) : out;
}

void MpiCommunicator::barrier(OpLabel label) {
  State& s = *state_;
  s.checkUsable("barrier", label);
  if (label.op.empty()) label.op = "barrier";
  MpiWork work(state_, std::move(label), -1);
  work.post("MPI_Ibarrier", [&](MPI_Request* r) { return MPI_Ibarrier(s.comm, r); });
  work.wait();
}

}  // namespace tessera::comm
