#include "data/loader.h"

#include <ATen/ops/empty.h>
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <numeric>
#include <thread>
#include <vector>

#include "core/error.h"
#include "core/keyed_rng.h"
#include "data/image_transform.h"
#include "tessera/config.h"

namespace tessera::data {
namespace {

// Bytes read per call while filling the memory cache: large enough to stream at disk speed,
// small enough not to double the peak memory.
constexpr std::int64_t kCacheReadBytes = 64 << 20;

// Cached batches: how far ahead, and how much of an image, the copy loop prefetches.
constexpr std::int64_t kPrefetchAhead = 4;
constexpr std::int64_t kPrefetchBytes = 4096;

// The memory cache. A shuffled batch touches a different 4 KiB page for nearly every image, and
// on a VM every TLB miss walks both the guest's and the host's page tables. Where the kernel
// offers transparent huge pages on request (`madvise` mode, as on Debian), the cache is aligned
// to and advised for 2 MiB pages, which keep all of Fashion-MNIST (47 MB) within the TLB's reach.
constexpr std::size_t kHugePage = std::size_t{2} << 20;

struct FreeBytes {
  void operator()(std::uint8_t* p) const { std::free(p); }
};
using CacheMemory = std::unique_ptr<std::uint8_t, FreeBytes>;

CacheMemory allocateCache(std::size_t bytes) {
  void* p = nullptr;
  if (bytes >= kHugePage) {
    const std::size_t rounded = (bytes + kHugePage - 1) / kHugePage * kHugePage;
    p = std::aligned_alloc(kHugePage, rounded);
#ifdef MADV_HUGEPAGE
    if (p != nullptr) ::madvise(p, rounded, MADV_HUGEPAGE);  // advice only: failure is harmless
#endif
  } else {
    p = std::malloc(std::max<std::size_t>(bytes, 1));
  }
  if (p == nullptr) throw std::bad_alloc();
  return CacheMemory(static_cast<std::uint8_t*>(p));
}

struct Slot {
  Batch batch;
  std::exception_ptr error;
};

LoaderOptions checked(LoaderOptions o) {
  auto bad = [](const std::string& field, const std::string& why) {
    throw InputError("data loader: " + field + " " + why);
  };
  if (o.batch_size <= 0) bad("batch size", "must be positive, got " + std::to_string(o.batch_size));
  if (o.world <= 0) bad("world size", "must be positive, got " + std::to_string(o.world));
  if (o.rank < 0 || o.rank >= o.world) {
    bad("rank", std::to_string(o.rank) + " is outside a world of " + std::to_string(o.world));
  }
  if (o.prefetch <= 0) bad("prefetch", "must be >= 1, got " + std::to_string(o.prefetch));
  if (o.workers <= 0) bad("workers", "must be >= 1, got " + std::to_string(o.workers));
  if (o.shuffle.block && o.shuffle.block_size <= 0) {
    bad("shuffle block size", "must be positive, got " + std::to_string(o.shuffle.block_size));
  }
  return o;
}

// Hands out batch image buffers.
//
// Pageable buffers are recycled. Fresh memory costs a page fault per 4 KiB on first touch, which
// for a 12 MB batch of 64x64x3 floats takes longer than reading and converting it (measured
// ~35 ms vs ~8 ms on a VM). Batches hand out aliases of pooled tensors; a buffer is free again
// once the pool holds the only reference to its storage (the consumer dropped every alias and
// view). That is also when nothing reads it any more: a copy out of pageable memory, to a GPU
// with non_blocking included, has read its source by the time the call returns. Past `capacity`
// buffers, new ones are allocated unpooled.
//
// Pinned buffers are never recycled here. A non-blocking copy out of pinned memory returns before
// the device has read it, so the consumer may drop its last reference while the copy is still
// queued, and a recycled buffer would be overwritten under it. Each pinned batch is allocated
// afresh from LibTorch's caching host allocator instead: it records an event on the copy's
// stream for every non-blocking copy out of one of its blocks, and hands a freed block out again
// only once those events have completed. Its blocks stay page-locked (and so touched), so reuse
// costs no page faults either.
class BufferPool {
 public:
  BufferPool(std::vector<std::int64_t> sizes, at::TensorOptions options, std::size_t capacity)
      : sizes_(std::move(sizes)),
        options_(options),
        recycle_(!options.pinned_memory()),
        capacity_(capacity) {}

  at::Tensor acquire() {
    if (!recycle_) return at::empty(sizes_, options_);
    std::lock_guard<std::mutex> lock(mutex_);
    for (const at::Tensor& t : buffers_) {
      if (t.storage().use_count() == 1) return t.alias();
    }
    at::Tensor t = at::empty(sizes_, options_);
    if (buffers_.size() < capacity_) buffers_.push_back(t);
    return t.alias();
  }

 private:
  const std::vector<std::int64_t> sizes_;
  const at::TensorOptions options_;
  const bool recycle_;
  const std::size_t capacity_;
  std::mutex mutex_;
  std::vector<at::Tensor> buffers_;
};

bool bytesOut(const LoaderOptions& o) {
  return o.output == LoaderOptions::Output::kUint8;
}

// One batch's images: [B, C, H, W] floats, or [B, H, W, C] bytes.
std::vector<std::int64_t> batchSizes(const LoaderOptions& o, const ImageShape& s) {
  if (bytesOut(o)) return {o.batch_size, s.height, s.width, s.channels};
  return {o.batch_size, s.channels, s.height, s.width};
}

at::TensorOptions imageOptions(const LoaderOptions& o) {
  auto options = at::TensorOptions().dtype(bytesOut(o) ? at::kByte : at::kFloat);
#if TESSERA_WITH_CUDA
  if (o.pin_memory) options = options.pinned_memory(true);
#endif
  return options;
}

bool shouldCache(const LoaderOptions& o, const ImageFile& file) {
  const double bytes = static_cast<double>(file.size()) * static_cast<double>(file.shape().bytes());
  switch (o.cache) {
    case LoaderOptions::Cache::kMemory:
      return true;
    case LoaderOptions::Cache::kNone:
      return false;
    case LoaderOptions::Cache::kAuto:
      break;
  }
  return bytes <= o.cache_max_bytes;
}

}  // namespace

struct Loader::State {
  State(LoaderOptions opts, DataPosition start_at)
      : options(checked(std::move(opts))),
        file(ImageFile::open(options.path, options.dataset, &options.expected)),
        sampler(file.size(), options.seed, options.shuffle),
        shape(file.shape()),
        image_bytes(shape.bytes()),
        start(sampler.normalize(start_at, options.world, options.batch_size)),
        buffers(batchSizes(options, shape), imageOptions(options),
                static_cast<std::size_t>(options.prefetch + options.workers + 4)) {}

  void fillCache();
  void work();
  // Takes the first step no thread has taken yet, when it lies within `prefetch` steps of the
  // consumer. Requires `mutex`.
  bool claim(std::int64_t* step, DataPosition* pos);
  // Builds a claimed step (its batch, or the error building it) without holding `mutex`.
  Slot buildSlot(DataPosition pos, std::vector<std::uint8_t>& staging);
  Batch build(DataPosition pos, std::vector<std::uint8_t>& staging);
  bool flipped(std::int64_t epoch, std::int64_t index) const {
    if (!options.hflip) return false;
    return KeyedStream(rngKey(options.seed, RngPurpose::kAugment, static_cast<std::uint64_t>(epoch),
                              static_cast<std::uint64_t>(index)))
               .next() &
           1;
  }

  const LoaderOptions options;
  const ImageFile file;
  const ShardedSampler sampler;
  const ImageShape shape;
  const std::int64_t image_bytes;
  const DataPosition start;
  BufferPool buffers;
  CacheMemory memory;                // every image, when cached
  std::vector<std::int64_t> labels;  // every label, when the file has them

  std::mutex mutex;
  std::condition_variable ready_cv;  // the consumer waits for its step
  std::condition_variable space_cv;  // workers wait for a step to claim
  std::map<std::int64_t, Slot> ready;
  std::int64_t next_step = 0;      // the step next() returns next, counted from `start`
  std::int64_t next_claim = 0;     // the first step no thread has claimed
  DataPosition claim_pos = start;  // where step next_claim starts
  int sleeping_workers = 0;        // workers inside space_cv.wait()
  bool consumer_sleeping = false;  // next() inside ready_cv.wait()
  bool stop = false;
  std::exception_ptr failed;
  double wait_seconds = 0;
  std::vector<std::uint8_t> consumer_staging;  // for the steps next() builds itself
  std::vector<std::thread> workers;
};

// Reads through a reused buffer and copies, rather than reading into the cache directly, so
// that every cache page is first touched from user space here: on hypervisors with shadow page
// tables a page first written by the kernel (pread) costs a second fault on its first user
// access, which made the first epoch from the cache ~10x slower (measured on this project's VMs).
void Loader::State::fillCache() {
  const std::int64_t n = file.size();
  memory = allocateCache(static_cast<std::size_t>(n * image_bytes));
  const std::int64_t step = std::clamp<std::int64_t>(kCacheReadBytes / image_bytes, 1, n);
  std::vector<std::uint8_t> staging(static_cast<std::size_t>(step * image_bytes));
  for (std::int64_t i = 0; i < n; i += step) {
    const std::int64_t count = std::min(step, n - i);
    file.readRange(i, count, staging.data());
    std::memcpy(memory.get() + i * image_bytes, staging.data(),
                static_cast<std::size_t>(count * image_bytes));
  }
}

Batch Loader::State::build(DataPosition pos, std::vector<std::uint8_t>& staging) {
  const std::int64_t B = options.batch_size;
  const std::vector<std::int64_t> indices =
      sampler.batchIndices(pos, options.rank, options.world, B);
  Batch batch;
  batch.position = sampler.normalize(pos, options.world, B);
  batch.next = sampler.advance(pos, options.world, B);
  const std::int64_t epoch = batch.position.epoch;

  batch.images = buffers.acquire();
  const bool bytes = bytesOut(options);
  float* out = bytes ? nullptr : batch.images.data_ptr<float>();
  std::uint8_t* out_bytes = bytes ? batch.images.data_ptr<std::uint8_t>() : nullptr;
  // Image i of the batch (dataset index idx) from its stored bytes. Bytes are handed over as
  // stored; their flips travel in batch.flips and are applied by modelInput() on the device.
  const auto emit = [&](const std::uint8_t* src, std::int64_t i, std::int64_t idx) {
    if (bytes) {
      std::memcpy(out_bytes + i * image_bytes, src, static_cast<std::size_t>(image_bytes));
    } else {
      imageToFloat(src, shape, flipped(epoch, idx), out + i * image_bytes);
    }
  };
  if (bytes && options.hflip) {
    batch.flips = at::empty({B}, at::TensorOptions().dtype(at::kBool));
    bool* f = batch.flips.data_ptr<bool>();
    for (std::int64_t i = 0; i < B; ++i)
      f[i] = flipped(epoch, indices[static_cast<std::size_t>(i)]);
  }

  if (memory) {
    // Images of a shuffled batch lie at random places in the cache: ask for the lines of the
    // image kPrefetchAhead slots on while copying this one, so several are in flight at once.
    for (std::int64_t i = 0; i < B; ++i) {
      if (i + kPrefetchAhead < B) {
        const std::uint8_t* ahead =
            memory.get() + indices[static_cast<std::size_t>(i + kPrefetchAhead)] * image_bytes;
        for (std::int64_t b = 0; b < std::min<std::int64_t>(image_bytes, kPrefetchBytes); b += 64) {
          __builtin_prefetch(ahead + b);
        }
      }
      const std::int64_t idx = indices[static_cast<std::size_t>(i)];
      emit(memory.get() + idx * image_bytes, i, idx);
    }
  } else {
    // Read in index order, coalescing consecutive indices into one hyperslab per run.
    std::vector<std::int64_t> order(static_cast<std::size_t>(B));
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](std::int64_t a, std::int64_t b) {
      return indices[static_cast<std::size_t>(a)] < indices[static_cast<std::size_t>(b)];
    });
    staging.resize(static_cast<std::size_t>(B * image_bytes));
    // Bytes out: a run that also fills consecutive batch slots (contiguous blocks of
    // `shuffle: block`) is read straight into the batch; the rest goes through the staging
    // buffer.
    std::vector<char> direct(static_cast<std::size_t>(B), 0);
    std::int64_t run_begin = 0;
    for (std::int64_t j = 1; j <= B; ++j) {
      const std::int64_t first = indices[static_cast<std::size_t>(order[run_begin])];
      const bool extends =
          j < B && indices[static_cast<std::size_t>(order[j])] == first + (j - run_begin);
      if (extends) continue;
      const std::int64_t slot = order[static_cast<std::size_t>(run_begin)];
      bool in_place = bytes;
      for (std::int64_t t = run_begin; in_place && t < j; ++t) {
        in_place = order[static_cast<std::size_t>(t)] == slot + (t - run_begin);
      }
      if (in_place) {
        file.readRange(first, j - run_begin, out_bytes + slot * image_bytes);
        std::fill(direct.begin() + run_begin, direct.begin() + j, 1);
      } else {
        file.readRange(first, j - run_begin, staging.data() + run_begin * image_bytes);
      }
      run_begin = j;
    }
    for (std::int64_t j = 0; j < B; ++j) {
      const std::int64_t i = order[static_cast<std::size_t>(j)];
      if (!direct[static_cast<std::size_t>(j)]) {
        emit(staging.data() + j * image_bytes, i, indices[static_cast<std::size_t>(i)]);
      }
    }
  }

  batch.indices = at::empty({B}, at::TensorOptions().dtype(at::kLong));
  std::memcpy(batch.indices.data_ptr<std::int64_t>(), indices.data(),
              static_cast<std::size_t>(B) * sizeof(std::int64_t));
  if (!labels.empty()) {
    batch.labels = at::empty({B}, at::TensorOptions().dtype(at::kLong));
    std::int64_t* l = batch.labels.data_ptr<std::int64_t>();
    for (std::int64_t i = 0; i < B; ++i) l[i] = labels[static_cast<std::size_t>(indices[i])];
  }
  return batch;
}

bool Loader::State::claim(std::int64_t* step, DataPosition* pos) {
  if (next_claim >= next_step + options.prefetch) return false;
  *step = next_claim++;
  *pos = claim_pos;
  claim_pos = sampler.advance(claim_pos, options.world, options.batch_size);
  return true;
}

Slot Loader::State::buildSlot(DataPosition pos, std::vector<std::uint8_t>& staging) {
  Slot slot;
  try {
    slot.batch = build(pos, staging);
  } catch (...) {
    slot.error = std::current_exception();
  }
  return slot;
}

// Workers claim steps in order, each as soon as it is within `prefetch` steps of the consumer,
// and sleep while there is none to claim. A failed step ends its worker: the error is the step's
// result, and no later step is handed out in order past it.
void Loader::State::work() {
  std::vector<std::uint8_t> staging;
  for (;;) {
    std::int64_t k = 0;
    DataPosition pos;
    {
      std::unique_lock<std::mutex> lock(mutex);
      while (!stop && !claim(&k, &pos)) {
        ++sleeping_workers;
        space_cv.wait(lock);
        --sleeping_workers;
      }
      if (stop) return;
    }
    Slot slot = buildSlot(pos, staging);
    const bool failed_here = static_cast<bool>(slot.error);
    bool wake = false;
    {
      std::lock_guard<std::mutex> lock(mutex);
      wake = consumer_sleeping && k == next_step;
      ready.emplace(k, std::move(slot));
    }
    if (wake) ready_cv.notify_one();
    if (failed_here) return;
  }
}

Loader::Loader(LoaderOptions options, DataPosition start)
    : state_(std::make_unique<State>(std::move(options), start)) {
  State& s = *state_;
  if (s.file.hasLabels()) {
    s.labels.resize(static_cast<std::size_t>(s.file.size()));
    s.file.readLabels(0, s.file.size(), s.labels.data());
  }
  if (shouldCache(s.options, s.file)) s.fillCache();
  s.workers.reserve(static_cast<std::size_t>(s.options.workers));
  try {
    for (int w = 0; w < s.options.workers; ++w) s.workers.emplace_back([&s] { s.work(); });
  } catch (...) {
    {
      std::lock_guard<std::mutex> lock(s.mutex);
      s.stop = true;
    }
    s.space_cv.notify_all();
    for (auto& t : s.workers) t.join();
    throw;
  }
}

Loader::~Loader() {
  State& s = *state_;
  {
    std::lock_guard<std::mutex> lock(s.mutex);
    s.stop = true;
  }
  s.space_cv.notify_all();
  for (auto& t : s.workers) {
    if (t.joinable()) t.join();
  }
}

// While its step is not ready, next() builds the first unclaimed step of the window itself
// rather than wait: a consumer that outruns the workers lends them its core instead of idling,
// and sleeps only when every step of the window is taken. Nothing spins. With more runnable
// threads than cores (2 cores here: two workers, the consumer, often another process), a waiter
// that polls and yields either holds a core a worker needs or hands it to another process until
// that one's time slice ends; in some runs that halved the loader's throughput (issue 12,
// defect 10). A thread woken from a sleep is usually run at once.
Batch Loader::next() {
  State& s = *state_;
  std::unique_lock<std::mutex> lock(s.mutex);
  if (s.failed) std::rethrow_exception(s.failed);
  auto it = s.ready.find(s.next_step);
  if (it == s.ready.end()) {
    const auto t0 = std::chrono::steady_clock::now();
    while ((it = s.ready.find(s.next_step)) == s.ready.end()) {
      std::int64_t k = 0;
      DataPosition pos;
      if (s.claim(&k, &pos)) {
        lock.unlock();
        Slot slot = s.buildSlot(pos, s.consumer_staging);
        lock.lock();
        s.ready.emplace(k, std::move(slot));
        continue;
      }
      s.consumer_sleeping = true;
      s.ready_cv.wait(lock);
      s.consumer_sleeping = false;
    }
    s.wait_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  Slot slot = std::move(it->second);
  s.ready.erase(it);
  if (slot.error) {
    s.failed = slot.error;
    std::rethrow_exception(s.failed);
  }
  ++s.next_step;
  const bool wake = s.sleeping_workers > 0;  // one more step can be claimed
  lock.unlock();
  if (wake) s.space_cv.notify_one();
  return std::move(slot.batch);
}

double Loader::waitSeconds() const {
  std::lock_guard<std::mutex> lock(state_->mutex);
  return state_->wait_seconds;
}

std::int64_t Loader::stepsPerEpoch() const {
  return state_->sampler.stepsPerEpoch(state_->options.world, state_->options.batch_size);
}
std::int64_t Loader::datasetSize() const {
  return state_->file.size();
}
ImageShape Loader::shape() const {
  return state_->shape;
}
bool Loader::hasLabels() const {
  return !state_->labels.empty();
}
bool Loader::directReads() const {
  return state_->file.directReads();
}
bool Loader::cached() const {
  return static_cast<bool>(state_->memory);
}
const ShardedSampler& Loader::sampler() const {
  return state_->sampler;
}
const LoaderOptions& Loader::options() const {
  return state_->options;
}

}  // namespace tessera::data
