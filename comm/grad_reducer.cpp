#include "comm/grad_reducer.h"

#include <spdlog/spdlog.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <map>
#include <mutex>
#include <thread>

#include "comm/detail/tensor_checks.h"
#include "comm/watchdog.h"
#include "core/error.h"

namespace tessera::comm {
namespace {

double secondsBetween(SteadyClock::time_point a, SteadyClock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// The reducer whose synchronising backward is in progress on each communicator (prepare(true)
// to finish()). Two at once would interleave their bucket all-reduces differently on different
// ranks.
std::mutex g_active_mutex;
std::map<const Communicator*, std::string> g_active;  // communicator -> "name (step s)"

}  // namespace

void GradReducer::checkIdle(const Communicator& comm, const std::string& what) {
  std::lock_guard<std::mutex> lock(g_active_mutex);
  auto it = g_active.find(&comm);
  if (it != g_active.end()) {
    throw Error(what + " while the backward of " + it->second +
                " is being reduced on the same communicator: finish() it first");
  }
}

struct GradReducer::Impl {
  struct Slot {
    std::size_t index = 0;  // in the constructor's list
    at::Tensor param;
    at::Tensor view;  // param.grad(): a view into its bucket
    std::size_t bucket = 0;
    bool ready = false;  // its gradient arrived in this synchronising backward
    std::shared_ptr<torch::autograd::Node> accumulator;
    std::uintptr_t hook = 0;
  };

  struct Bucket {
    std::vector<std::size_t> slots;
    std::int64_t bytes = 0;  // native
    at::Tensor data;         // flat, native dtype
    at::Tensor wire;         // flat 16-bit copy when compressing; undefined otherwise
    std::size_t pending = 0;
    bool launched = false;
    bool completed = false;
    std::shared_ptr<Work> work;
    SteadyClock::time_point launched_at;
    double comm_seconds = 0;

    std::int64_t wireBytes() const {
      const at::Tensor& t = wire.defined() ? wire : data;
      return t.numel() * static_cast<std::int64_t>(t.element_size());
    }
  };

  enum class Phase { kIdle, kAccumulate, kSync };

  Impl(Communicator& c, GradReducerOptions o) : comm(c), options(std::move(o)) {}

  Communicator& comm;
  GradReducerOptions options;
  std::vector<Slot> slots;
  std::vector<Bucket> buckets;
  Phase phase = Phase::kIdle;
  std::int64_t step = -1;
  std::size_t next_launch = 0;
  std::thread::id owner;
  std::mutex mutex;  // hooks may run on autograd's device threads
  ReducerStats stats;
  bool warned_detached = false;
  bool noted_unused = false;

  // Parameters without a gradient keep their bucket (and every later one) from launching before
  // finish(): correct, but the overlap is lost. Said once, since some models do it every step.
  void noteUnused() {
    if (noted_unused) return;
    std::size_t unused = 0;
    const Slot* first = nullptr;
    for (const Slot& slot : slots) {
      if (slot.ready) continue;
      ++unused;
      if (first == nullptr || slot.bucket < first->bucket) first = &slot;
    }
    if (unused == 0) return;
    noted_unused = true;
    spdlog::info(
        "{}: {} parameters got no gradient at step {} (e.g. {}, bucket {}); buckets from there "
        "on wait for finish() and do not overlap backward",
        options.name, unused, step, describeSlot(*first), first->bucket);
  }

  std::string describeSlot(const Slot& s) const {
    return options.name + ": parameter #" + std::to_string(s.index) + " " +
           detail::describeTensor(s.param);
  }

  bool launchHere() const {
    return options.overlap && comm.size() > 1 &&
           (comm.launchesFromAnyThread() || std::this_thread::get_id() == owner);
  }

  void launch(std::size_t b) {
    Bucket& bucket = buckets[b];
    bucket.launched = true;
    bucket.launched_at = SteadyClock::now();
    OpLabel label{"allreduce", options.name, step, static_cast<int>(b)};
    const bool divide = !options.caller_scales_loss;
    if (bucket.wire.defined()) {
      // Divided before the 16-bit conversion, so that fp16 sums do not overflow.
      if (divide) bucket.data.div_(comm.size());
      bucket.wire.copy_(bucket.data);
      bucket.work = comm.allReduceAsync({bucket.wire}, ReduceOp::kSum, std::move(label));
    } else {
      bucket.work = comm.allReduceAsync({bucket.data}, divide ? ReduceOp::kAverage : ReduceOp::kSum,
                                        std::move(label));
    }
  }

  // Launches buckets in order while the next one is ready: every rank launches the same
  // sequence, whatever order its gradients arrive in.
  void launchReady() {
    while (next_launch < buckets.size() && buckets[next_launch].pending == 0) {
      launch(next_launch++);
    }
  }

  void markCompleted(Bucket& bucket, SteadyClock::time_point now) {
    bucket.completed = true;
    bucket.comm_seconds = secondsBetween(bucket.launched_at, now);
  }

  // Non-blocking MPI collectives advance only inside MPI calls: test what is in flight.
  void progress() {
    for (std::size_t b = 0; b < next_launch; ++b) {
      Bucket& bucket = buckets[b];
      if (!bucket.completed && bucket.work->test()) markCompleted(bucket, SteadyClock::now());
    }
  }

  void onGradReady(std::size_t slot_index) {
    std::lock_guard<std::mutex> lock(mutex);
    if (phase == Phase::kIdle) {
      // A backward outside this reducer's prepare()/finish() (another optimizer's loss that runs
      // through these parameters) would add into the buckets that the next update reduces.
      throw Error(describeSlot(slots[slot_index]) +
                  " received a gradient outside prepare()/finish(): another optimizer's "
                  "backward reached these parameters (freeze them while it runs, as "
                  "trainer::Updaters::update does, or detach their output)");
    }
    if (phase != Phase::kSync) return;
    Slot& slot = slots[slot_index];
    Bucket& bucket = buckets[slot.bucket];
    if (slot.ready) {
      if (bucket.launched) {
        throw Error(describeSlot(slot) + " received another gradient at step " +
                    std::to_string(step) +
                    " after its bucket was launched: run one backward per prepare()");
      }
      return;
    }
    slot.ready = true;
    --bucket.pending;
    if (!launchHere()) return;
    launchReady();
    progress();
  }

  void reattach() {
    for (Slot& slot : slots) {
      const at::Tensor& grad = slot.param.grad();
      if (grad.defined() && grad.is_same(slot.view)) continue;
      if (!warned_detached) {
        spdlog::warn(
            "{}: gradients were detached from the reducer's buckets (optimizer.zero_grad()?); "
            "re-attaching them each step costs a copy: use GradReducer::zeroGrad()",
            options.name);
        warned_detached = true;
      }
      c10::NoGradGuard no_grad;
      if (grad.defined()) {
        slot.view.copy_(grad);
      } else {
        slot.view.zero_();
      }
      slot.param.mutable_grad() = slot.view;
    }
  }
};

GradReducer::GradReducer(Communicator& comm, std::vector<at::Tensor> params,
                         GradReducerOptions options)
    : impl_(std::make_unique<Impl>(comm, std::move(options))) {
  Impl& im = *impl_;
  if (im.options.bucket_cap_bytes == 0 || im.options.first_bucket_cap_bytes == 0) {
    throw UsageError(im.options.name + ": bucket caps must be positive");
  }
  for (std::size_t i = 0; i < params.size(); ++i) {
    const at::Tensor& p = params[i];
    const std::string which = im.options.name + ": parameter #" + std::to_string(i);
    if (!p.defined()) throw Error(which + " is undefined");
    if (!p.requires_grad()) continue;
    if (!p.is_leaf()) throw Error(which + " is not a leaf tensor");
    if (!c10::isFloatingType(p.scalar_type())) {
      throw Error(which + " has dtype " + std::string(c10::toString(p.scalar_type())) +
                  "; gradients must be floating point");
    }
    if (p.layout() != c10::kStrided) throw Error(which + " is not a dense tensor");
    detail::checkCollectiveTensors({p.detach().reshape(-1)}, comm.device(), which);
    Impl::Slot slot;
    slot.index = i;
    slot.param = p;
    im.slots.push_back(std::move(slot));
  }

  // Buckets in reverse registration order, one open bucket per dtype.
  std::map<int, std::size_t> open;
  for (std::size_t k = im.slots.size(); k-- > 0;) {
    Impl::Slot& slot = im.slots[k];
    const int dtype = static_cast<int>(slot.param.scalar_type());
    const std::int64_t bytes =
        slot.param.numel() * static_cast<std::int64_t>(slot.param.element_size());
    auto it = open.find(dtype);
    if (it != open.end()) {
      const Impl::Bucket& b = im.buckets[it->second];
      const std::size_t cap =
          it->second == 0 ? im.options.first_bucket_cap_bytes : im.options.bucket_cap_bytes;
      if (static_cast<std::size_t>(b.bytes + bytes) > cap) open.erase(it);
    }
    if (open.find(dtype) == open.end()) {
      open[dtype] = im.buckets.size();
      im.buckets.emplace_back();
    }
    Impl::Bucket& bucket = im.buckets[open[dtype]];
    slot.bucket = open[dtype];
    bucket.slots.push_back(k);
    bucket.bytes += bytes;
  }

  c10::NoGradGuard no_grad;
  for (std::size_t b = 0; b < im.buckets.size(); ++b) {
    Impl::Bucket& bucket = im.buckets[b];
    const at::Tensor& first = im.slots[bucket.slots.front()].param;
    std::int64_t numel = 0;
    for (std::size_t k : bucket.slots) numel += im.slots[k].param.numel();
    bucket.data = first.new_zeros({numel}, first.options().requires_grad(false));
    const bool wide = first.scalar_type() == c10::kFloat || first.scalar_type() == c10::kDouble;
    if (im.options.wire != WireDtype::kNative && wide) {
      bucket.wire = bucket.data.new_empty(
          {numel}, bucket.data.options().dtype(im.options.wire == WireDtype::kBf16 ? c10::kBFloat16
                                                                                   : c10::kHalf));
    }
    std::int64_t offset = 0;
    for (std::size_t k : bucket.slots) {
      Impl::Slot& slot = im.slots[k];
      const std::int64_t n = slot.param.numel();
      slot.view = bucket.data.narrow(0, offset, n).view(slot.param.sizes());
      offset += n;
      if (slot.param.grad().defined()) slot.view.copy_(slot.param.grad());
      slot.param.mutable_grad() = slot.view;
    }
  }

  Impl* raw = impl_.get();
  for (std::size_t k = 0; k < im.slots.size(); ++k) {
    Impl::Slot& slot = im.slots[k];
    slot.accumulator = torch::autograd::impl::grad_accumulator(slot.param);
    if (!slot.accumulator) throw Error(im.describeSlot(slot) + " has no gradient accumulator");
    slot.hook =
        slot.accumulator->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
            [raw, k](const torch::autograd::variable_list& outputs,
                     const torch::autograd::variable_list& /*inputs*/) {
              raw->onGradReady(k);
              return outputs;
            }));
  }

  if (comm.rank() == 0) {
    std::int64_t bytes = 0;
    for (const auto& b : im.buckets) bytes += b.bytes;
    spdlog::info("{}: {} parameters ({}) in {} buckets (caps {} first, {}), wire {}",
                 im.options.name, im.slots.size(), formatBytes(bytes), im.buckets.size(),
                 formatBytes(static_cast<std::int64_t>(im.options.first_bucket_cap_bytes)),
                 formatBytes(static_cast<std::int64_t>(im.options.bucket_cap_bytes)),
                 toString(im.options.wire));
  }
}

GradReducer::~GradReducer() {
  if (impl_->phase == Impl::Phase::kSync) {
    std::lock_guard<std::mutex> active(g_active_mutex);
    g_active.erase(&impl_->comm);
  }
  for (auto& slot : impl_->slots) {
    if (slot.accumulator) slot.accumulator->del_post_hook(slot.hook);
  }
}

void GradReducer::prepare(bool sync, std::int64_t step) {
  Impl& im = *impl_;
  std::lock_guard<std::mutex> lock(im.mutex);
  if (im.phase == Impl::Phase::kSync) {
    throw Error(im.options.name + ": prepare() at step " + std::to_string(step) +
                " before finish() of step " + std::to_string(im.step));
  }
  im.reattach();
  im.step = step;
  im.owner = std::this_thread::get_id();
  if (!sync) {
    im.phase = Impl::Phase::kAccumulate;
    return;
  }
  {
    std::lock_guard<std::mutex> active(g_active_mutex);
    auto [it, inserted] =
        g_active.emplace(&im.comm, im.options.name + " (step " + std::to_string(step) + ")");
    if (!inserted) {
      throw Error(im.options.name + ": prepare() of a synchronising backward at step " +
                  std::to_string(step) + " while the backward of " + it->second +
                  " is being reduced on the same communicator: finish() it first");
    }
  }
  im.phase = Impl::Phase::kSync;
  for (auto& slot : im.slots) slot.ready = false;
  for (auto& bucket : im.buckets) {
    bucket.pending = bucket.slots.size();
    bucket.launched = false;
    bucket.completed = false;
    bucket.work.reset();
    bucket.comm_seconds = 0;
  }
  im.next_launch = 0;
}

void GradReducer::finish() {
  Impl& im = *impl_;
  std::lock_guard<std::mutex> lock(im.mutex);
  if (im.phase == Impl::Phase::kIdle) {
    throw Error(im.options.name + ": finish() without prepare()");
  }
  if (im.phase == Impl::Phase::kAccumulate) {
    im.phase = Impl::Phase::kIdle;
    return;
  }
  // Whatever happens below, this step is over: a CommError ends the job, and the next
  // prepare() must not refuse to run in a caller that handles other errors.
  im.phase = Impl::Phase::kIdle;
  {
    std::lock_guard<std::mutex> active(g_active_mutex);
    g_active.erase(&im.comm);
  }
  const auto started = SteadyClock::now();
  ReducerStats stats;
  if (im.comm.size() > 1) {
    if (im.options.overlap) im.noteUnused();
    while (im.next_launch < im.buckets.size()) im.launch(im.next_launch++);
    for (std::size_t b = 0; b < im.buckets.size(); ++b) {
      Impl::Bucket& bucket = im.buckets[b];
      if (!bucket.completed) {
        bucket.work->wait();
        im.markCompleted(bucket, SteadyClock::now());
      }
      im.progress();
    }
    c10::NoGradGuard no_grad;
    for (auto& bucket : im.buckets) {
      if (bucket.wire.defined()) bucket.data.copy_(bucket.wire);
      bucket.work.reset();
      stats.bytes += bucket.wireBytes();
      stats.comm_seconds += bucket.comm_seconds;
    }
    stats.buckets = static_cast<int>(im.buckets.size());
  }
  stats.exposed_seconds = secondsBetween(started, SteadyClock::now());
  im.stats = stats;
}

void GradReducer::zeroGrad() {
  Impl& im = *impl_;
  std::lock_guard<std::mutex> lock(im.mutex);
  c10::NoGradGuard no_grad;
  for (auto& bucket : im.buckets) bucket.data.zero_();
}

const ReducerStats& GradReducer::stats() const {
  return impl_->stats;
}

double GradReducer::lossScale() const {
  return impl_->options.caller_scales_loss ? 1.0 / impl_->comm.size() : 1.0;
}

void GradReducer::setOverlap(bool overlap) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->options.overlap = overlap;
}

std::vector<std::vector<std::size_t>> GradReducer::bucketLayout() const {
  std::vector<std::vector<std::size_t>> out;
  for (const auto& bucket : impl_->buckets) {
    std::vector<std::size_t> indices;
    for (std::size_t k : bucket.slots) indices.push_back(impl_->slots[k].index);
    out.push_back(std::move(indices));
  }
  return out;
}

const char* toString(WireDtype wire) {
  switch (wire) {
    case WireDtype::kNative:
      return "native";
    case WireDtype::kBf16:
      return "bf16";
    case WireDtype::kFp16:
      return "fp16";
  }
  return "?";
}

}  // namespace tessera::comm
