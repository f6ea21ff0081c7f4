// Image grids written during training (run_dir/samples/recon-step-<step>.png). Every rank
// computes them (the same work everywhere, so no rank reaches its next collective a preview's
// time after the others) and rank 0 writes the PNGs in order in a background thread, so a slow
// file system never holds the job inside a collective's deadline.
//
// A task that generates instead (diffusion) previews fixed-seed samples
// (run_dir/samples/samples-step-<step>.png): each rank draws its share of the preview set and
// they are gathered on a communicator of their own whose deadline is long (the trainer gives it
// comm.timeout + 1 hour), so a rank that samples slower than the others holds its peers there,
// never inside a training collective's deadline; after the gather every rank leaves together.
#pragma once

#include <ATen/core/Tensor.h>

#include <filesystem>
#include <memory>
#include <string>

namespace tessera::comm {
class Communicator;
}

namespace tessera::trainer {

class Task;

class Previews {
 public:
  // `images`: the preview inputs ([N, C, H, W] in [-1, 1], CPU). `write` is true on rank 0.
  // `write_delay` (seconds, tests only) stretches every PNG write.
  // `samples`: the communicator that gathers sample previews (null: no sample previews).
  Previews(at::Tensor images, std::filesystem::path dir, bool write, double write_delay = 0,
           comm::Communicator* samples = nullptr);
  ~Previews();  // writes what is queued, then stops the writer
  Previews(const Previews&) = delete;
  Previews& operator=(const Previews&) = delete;

  // Asks `task` for reconstructions of the preview images, or else for its preview samples,
  // and writes them for `step`; does nothing for a task that does neither. Every rank calls it.
  void write(Task& task, std::int64_t step);
  // Waits until every queued grid is written (write errors are logged, never thrown: a preview
  // is not worth a job).
  void wait();

 private:
  struct Writer;
  void enqueue(at::Tensor images, at::Tensor recon, const std::string& name);
  at::Tensor images_;
  std::filesystem::path dir_;
  bool write_;
  double write_delay_;
  comm::Communicator* samples_;
  std::unique_ptr<Writer> writer_;
};

}  // namespace tessera::trainer
