#include "trainer/previews.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "comm/communicator.h"
#include "data/image_grid.h"
#include "trainer/inference.h"
#include "trainer/task.h"

namespace tessera::trainer {

// One background thread writing queued grids in order; the training thread only enqueues.
struct Previews::Writer {
  struct Job {
    at::Tensor images, recon;
    std::filesystem::path path;
  };
  double delay = 0;
  std::mutex mutex;
  std::condition_variable cv;
  std::deque<Job> queue;
  bool busy = false, stop = false;
  std::thread thread;

  void loop() {
    std::unique_lock<std::mutex> lock(mutex);
    while (true) {
      cv.wait(lock, [&] { return stop || !queue.empty(); });
      if (queue.empty()) return;  // stop requested and nothing left
      Job job = std::move(queue.front());
      queue.pop_front();
      busy = true;
      lock.unlock();
      try {
        if (delay > 0) std::this_thread::sleep_for(std::chrono::duration<double>(delay));
        if (job.recon.defined()) {
          writeReconstructionGrid(job.path.string(), job.images, job.recon, job.images.size(0));
        } else {
          const auto n = static_cast<double>(job.images.size(0));
          data::writeImageGrid(job.path.string(), job.images,
                               static_cast<int>(std::ceil(std::sqrt(n))));
        }
      } catch (const std::exception& e) {
        spdlog::warn("preview {} not written: {}", job.path.string(), e.what());
      }
      lock.lock();
      busy = false;
      cv.notify_all();
    }
  }
};

Previews::Previews(at::Tensor images, std::filesystem::path dir, bool write, double write_delay,
                   comm::Communicator* samples)
    : images_(std::move(images)),
      dir_(std::move(dir)),
      write_(write),
      write_delay_(write_delay),
      samples_(samples),
      writer_(std::make_unique<Writer>()) {
  writer_->delay = write_delay_;
  if (write_) writer_->thread = std::thread([w = writer_.get()] { w->loop(); });
}

Previews::~Previews() {
  if (!writer_->thread.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(writer_->mutex);
    writer_->stop = true;
  }
  writer_->cv.notify_all();
  writer_->thread.join();
}

void Previews::wait() {
  std::unique_lock<std::mutex> lock(writer_->mutex);
  writer_->cv.wait(lock, [&] { return writer_->queue.empty() && !writer_->busy; });
}

void Previews::write(Task& task, std::int64_t step) {
  const at::Tensor recon = task.reconstruct(images_);
  if (recon.defined()) {
    enqueue(images_, recon, spdlog::fmt_lib::format("recon-step-{:08d}.png", step));
    return;
  }
  const std::int64_t n = task.previewSampleCount();
  if (n <= 0 || samples_ == nullptr) return;
  // This rank's share [first, last) of the preview set, gathered in rank (= index) order.
  const std::int64_t first = n * samples_->rank() / samples_->size();
  const std::int64_t last = n * (samples_->rank() + 1) / samples_->size();
  at::Tensor local =
      last > first ? task.previewSamples(first, last - first).to(at::kCPU, at::kFloat).contiguous()
                   : task.generate(0, 0, GenerateOptions{});  // no samples, their shape
  const at::Tensor all = samples_->size() > 1
                             ? samples_->allGather(local, {"allgather", "sample preview", step, -1})
                             : local;
  enqueue(all, at::Tensor(), spdlog::fmt_lib::format("samples-step-{:08d}.png", step));
}

void Previews::enqueue(at::Tensor images, at::Tensor recon, const std::string& name) {
  if (!write_) return;
  {
    std::lock_guard<std::mutex> lock(writer_->mutex);
    writer_->queue.push_back({std::move(images), std::move(recon), dir_ / name});
  }
  writer_->cv.notify_all();
}

}  // namespace tessera::trainer
