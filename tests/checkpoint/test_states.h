// Training states, byte comparisons and log capture shared by the checkpoint tests.
#pragma once

#include <ATen/core/Tensor.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <cstdint>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "trainer/checkpoint/training_state.h"

namespace tessera::testing {

// A tensor of `dtype` with values base + i * scale (i = 0, 1, ... in row-major order), built
// through float64 so that the same formula in numpy gives the same values.
at::Tensor ramp(std::vector<std::int64_t> shape, c10::ScalarType dtype, double base, double scale);

// A tensor of `dtype` filled with pseudo-random bytes (any bit pattern, NaN payloads included;
// 0/1 for bool).
at::Tensor randomBytes(std::vector<std::int64_t> shape, c10::ScalarType dtype, std::uint32_t seed);

// Every dtype and edge shape a checkpoint stores, model/ema/optim groups, ints, reals and texts.
// The values are those tests/checkpoint/h5py_export_test.py recomputes.
trainer::TrainingState sampleState(std::int64_t step);

// A state of about `bytes` tensor bytes (float32) at `step`.
trainer::TrainingState sizedState(std::int64_t step, std::int64_t bytes);

// Same dtype, shape and bytes.
bool bitwiseEqual(const at::Tensor& a, const at::Tensor& b);
// Same tensors in the same order (bitwise), ints, texts, and reals (bitwise).
bool sameState(const trainer::TrainingState& a, const trainer::TrainingState& b, std::string* why);

// Routes spdlog's default logger into a string (and stderr) while alive. Read text() only while
// no other thread logs (e.g. after CheckpointStore::wait()).
class LogCapture {
 public:
  LogCapture();
  ~LogCapture();
  std::string text() const;

 private:
  std::shared_ptr<spdlog::logger> previous_;
  std::shared_ptr<std::ostringstream> stream_;
  std::shared_ptr<spdlog::sinks::ostream_sink_mt> sink_;
};

// File helpers for corruption tests.
std::string readBytes(const std::string& path);
void writeBytes(const std::string& path, const std::string& bytes);
void flipByte(const std::string& path, std::int64_t offset);
// Offset in the file of the first byte of dataset `name`'s data.
std::int64_t datasetOffset(const std::string& path, const std::string& name);

// A fresh directory under the test temp dir, removed with its contents by the destructor.
class ScratchDir {
 public:
  ScratchDir();
  ~ScratchDir();
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace tessera::testing
