#include "test_states.h"

#include <ATen/ops/empty.h>
#include <spdlog/sinks/stdout_color_sinks.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>

#include "core/file_tree.h"
#include "data/detail/hdf5.h"

namespace tessera::testing {

at::Tensor ramp(std::vector<std::int64_t> shape, c10::ScalarType dtype, double base, double scale) {
  at::Tensor t = at::empty(shape, at::TensorOptions().dtype(at::kDouble));
  double* p = t.data_ptr<double>();
  for (std::int64_t i = 0; i < t.numel(); ++i) p[i] = base + static_cast<double>(i) * scale;
  return t.to(dtype);
}

at::Tensor randomBytes(std::vector<std::int64_t> shape, c10::ScalarType dtype, std::uint32_t seed) {
  at::Tensor t = at::empty(shape, at::TensorOptions().dtype(dtype));
  auto* p = static_cast<unsigned char*>(t.data_ptr());
  std::uint32_t x = seed * 2654435761u + 1;
  for (std::size_t i = 0; i < (t.numel() == 0 ? 0 : t.nbytes()); ++i) {
    x = x * 1664525u + 1013904223u;
    p[i] = static_cast<unsigned char>(x >> 24);
    if (dtype == at::kBool) p[i] &= 1;
  }
  return t;
}

trainer::TrainingState sampleState(std::int64_t step) {
  trainer::TrainingState s;
  auto add = [&](const std::string& name, at::Tensor t) { s.tensors.emplace_back(name, t); };
  add("model/encoder.0.weight", ramp({4, 3}, at::kFloat, -1.0, 0.25));
  add("model/encoder.0.bias", ramp({3}, at::kDouble, 0.0, 1.5));
  add("model/half", ramp({2, 2}, at::kHalf, -0.5, 0.5));
  add("model/bf16", ramp({5}, at::kBFloat16, -2.0, 1.0));
  add("model/codebook.count", ramp({3}, at::kLong, -5.0, 1000000007.0));
  add("model/int32", ramp({2}, at::kInt, -2.0, 3.0));
  add("model/int16", ramp({3}, at::kShort, -3.0, 1.0));
  add("model/int8", ramp({3}, at::kChar, -3.0, 1.0));
  add("model/uint8", ramp({2, 3}, at::kByte, 0.0, 40.0));
  add("model/mask", ramp({5}, at::kBool, 0.0, 1.0));  // False, True, True, True, True
  add("model/empty", ramp({0, 4}, at::kFloat, 0.0, 1.0));
  add("model/scalar", ramp({}, at::kFloat, 3.5, 0.0));
  add("model/step_count", ramp({}, at::kLong, 42.0, 0.0));
  add("ema/0.999/encoder.0.weight", ramp({4, 3}, at::kFloat, -0.875, 0.25));
  add("optim/0/exp_avg", ramp({4, 3}, at::kFloat, 0.0, 0.01));
  s.ints["step"] = step;
  s.ints["epoch"] = 2;
  s.ints["samples"] = 12345;
  s.ints["world_size"] = 2;
  s.reals["lr"] = 0.001;
  s.reals["loss_scale"] = 65536.0;
  s.texts["config"] = "run:\n  name: demo\n  steps: 30\n";
  s.texts["note"] = "unicode: \xcf\x80 \xe2\x9c\x93";
  s.texts["empty"] = "";
  return s;
}

trainer::TrainingState sizedState(std::int64_t step, std::int64_t bytes) {
  trainer::TrainingState s;
  s.tensors.emplace_back("model/w", randomBytes({std::max<std::int64_t>(1, bytes / 4)}, at::kFloat,
                                                static_cast<std::uint32_t>(step)));
  s.ints["step"] = step;
  s.texts["config"] = "sized: true\n";
  return s;
}

bool bitwiseEqual(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  if (a.numel() == 0) return true;
  const at::Tensor ca = a.contiguous(), cb = b.contiguous();
  return std::memcmp(ca.data_ptr(), cb.data_ptr(), ca.nbytes()) == 0;
}

bool sameState(const trainer::TrainingState& a, const trainer::TrainingState& b, std::string* why) {
  auto fail = [&](const std::string& reason) {
    if (why != nullptr) *why = reason;
    return false;
  };
  if (a.tensors.size() != b.tensors.size()) return fail("tensor count differs");
  for (std::size_t i = 0; i < a.tensors.size(); ++i) {
    if (a.tensors[i].first != b.tensors[i].first) {
      return fail("tensor " + std::to_string(i) + ": name " + a.tensors[i].first + " vs " +
                  b.tensors[i].first);
    }
    if (!bitwiseEqual(a.tensors[i].second, b.tensors[i].second)) {
      return fail("tensor " + a.tensors[i].first + " differs");
    }
  }
  if (a.ints != b.ints) return fail("ints differ");
  if (a.texts != b.texts) return fail("texts differ");
  if (a.reals.size() != b.reals.size()) return fail("reals differ");
  for (const auto& [key, value] : a.reals) {
    const auto it = b.reals.find(key);
    if (it == b.reals.end() || std::memcmp(&value, &it->second, sizeof value) != 0) {
      return fail("real " + key + " differs");
    }
  }
  return true;
}

LogCapture::LogCapture()
    : previous_(spdlog::default_logger()),
      stream_(std::make_shared<std::ostringstream>()),
      sink_(std::make_shared<spdlog::sinks::ostream_sink_mt>(*stream_)) {
  auto logger = std::make_shared<spdlog::logger>(
      "test",
      spdlog::sinks_init_list{sink_, std::make_shared<spdlog::sinks::stderr_color_sink_mt>()});
  logger->set_level(spdlog::level::debug);
  spdlog::set_default_logger(logger);
}

LogCapture::~LogCapture() {
  spdlog::set_default_logger(previous_);
}

std::string LogCapture::text() const {
  sink_->flush();
  return stream_->str();
}

std::string readBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void writeBytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path);
}

void flipByte(const std::string& path, std::int64_t offset) {
  std::string bytes = readBytes(path);
  if (offset < 0 || offset >= static_cast<std::int64_t>(bytes.size())) {
    throw std::runtime_error("offset outside " + path);
  }
  bytes[static_cast<std::size_t>(offset)] ^= 0x5a;
  writeBytes(path, bytes);
}

std::int64_t datasetOffset(const std::string& path, const std::string& name) {
  using data::detail::Handle;
  Handle file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  if (!file) throw std::runtime_error("cannot open " + path);
  Handle dset(H5Dopen2(file.get(), name.c_str(), H5P_DEFAULT), H5Dclose);
  if (!dset) throw std::runtime_error("no dataset " + name + " in " + path);
  const haddr_t offset = H5Dget_offset(dset.get());
  if (offset == HADDR_UNDEF) throw std::runtime_error("dataset " + name + " has no offset");
  return static_cast<std::int64_t>(offset);
}

ScratchDir::ScratchDir() {
  std::string pattern = std::filesystem::temp_directory_path().string() + "/tessera-ckpt-XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = pattern;
}

ScratchDir::~ScratchDir() {
  std::error_code ec;
  removeTree(path_, ec);
}

}  // namespace tessera::testing
