#include "comm/peer_board.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "core/error.h"

namespace tessera::comm {

struct alignas(64) PeerBoard::Slot {
  std::atomic<std::int64_t> launched;
  std::atomic<std::int64_t> completed;
  std::atomic<std::int64_t> step;
  std::atomic<std::int64_t> heartbeat_ns;  // CLOCK_MONOTONIC, the same clock on the whole node
};

// The slots are shared between processes: only lock-free atomics are address-free.
static_assert(std::atomic<std::int64_t>::is_always_lock_free);

namespace {

std::int64_t monotonicNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

std::unique_ptr<PeerBoard> PeerBoard::create(const std::string& name, int slots) {
  const std::size_t bytes = sizeof(Slot) * static_cast<std::size_t>(slots);
  const int fd = shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  if (fd < 0) throw Error("shm_open(" + name + ") failed: " + std::strerror(errno));
  if (ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
    const int err = errno;
    close(fd);
    shm_unlink(name.c_str());
    throw Error("ftruncate(" + name + ") failed: " + std::strerror(err));
  }
  void* memory = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const int err = errno;
  close(fd);
  if (memory == MAP_FAILED) {
    shm_unlink(name.c_str());
    throw Error("mmap(" + name + ") failed: " + std::strerror(err));
  }
  // A fresh segment is zero-filled, which is the initial state of every slot; the explicit
  // construction keeps the atomics' lifetimes well defined.
  auto* slot = static_cast<Slot*>(memory);
  for (int i = 0; i < slots; ++i) {
    new (&slot[i]) Slot{};
    slot[i].step.store(-1, std::memory_order_relaxed);
    slot[i].heartbeat_ns.store(monotonicNs(), std::memory_order_relaxed);
  }
  return std::unique_ptr<PeerBoard>(new PeerBoard(name, memory, bytes, slots));
}

std::unique_ptr<PeerBoard> PeerBoard::open(const std::string& name, int slots) {
  const std::size_t bytes = sizeof(Slot) * static_cast<std::size_t>(slots);
  const int fd = shm_open(name.c_str(), O_RDWR, 0600);
  if (fd < 0) throw Error("shm_open(" + name + ") failed: " + std::strerror(errno));
  void* memory = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const int err = errno;
  close(fd);
  if (memory == MAP_FAILED) throw Error("mmap(" + name + ") failed: " + std::strerror(err));
  return std::unique_ptr<PeerBoard>(new PeerBoard(name, memory, bytes, slots));
}

PeerBoard::PeerBoard(std::string name, void* memory, std::size_t bytes, int slots)
    : name_(std::move(name)), memory_(memory), bytes_(bytes), slots_(slots) {}

PeerBoard::~PeerBoard() {
  munmap(memory_, bytes_);
}

void PeerBoard::unlinkName() {
  shm_unlink(name_.c_str());
}

void PeerBoard::entered(int slot, std::int64_t seq, std::int64_t step) {
  auto& s = static_cast<Slot*>(memory_)[slot];
  s.step.store(step, std::memory_order_relaxed);
  s.launched.store(seq, std::memory_order_relaxed);
  s.heartbeat_ns.store(monotonicNs(), std::memory_order_relaxed);
}

void PeerBoard::completed(int slot, std::int64_t seq) {
  // Collectives may complete out of order; only this process writes its slot.
  auto& completed = static_cast<Slot*>(memory_)[slot].completed;
  if (seq > completed.load(std::memory_order_relaxed)) {
    completed.store(seq, std::memory_order_relaxed);
  }
}

void PeerBoard::heartbeat(int slot) {
  static_cast<Slot*>(memory_)[slot].heartbeat_ns.store(monotonicNs(), std::memory_order_relaxed);
}

PeerBoard::PeerState PeerBoard::read(int slot) const {
  const auto& s = static_cast<const Slot*>(memory_)[slot];
  PeerState p;
  p.launched = s.launched.load(std::memory_order_relaxed);
  p.completed = s.completed.load(std::memory_order_relaxed);
  p.step = s.step.load(std::memory_order_relaxed);
  p.idle_seconds =
      static_cast<double>(monotonicNs() - s.heartbeat_ns.load(std::memory_order_relaxed)) * 1e-9;
  return p;
}

}  // namespace tessera::comm
