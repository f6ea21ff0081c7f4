// The safetensors writer's byte layout and the choice of exported tensors. The Python test
// (h5py_export_test.py) parses the files as an outside reader would.
#include <gtest/gtest.h>

#include <filesystem>

#include "core/error.h"
#include "test_states.h"
#include "trainer/export/exported_weights.h"
#include "trainer/export/safetensors.h"

namespace tessera::trainer {
namespace {

using testing::ScratchDir;

std::uint64_t littleEndian64(const std::string& bytes) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = v << 8 | static_cast<unsigned char>(bytes[i]);
  return v;
}

TEST(Safetensors, LayoutIsHeaderLengthHeaderThenAlignedData) {
  // Header in the given order; data by decreasing element size: e (8, empty), a (4), b (2), s (1).
  ScratchDir dir;
  const at::Tensor a = testing::ramp({2, 3}, at::kFloat, 0, 1);
  const at::Tensor b = testing::ramp({5}, at::kBFloat16, -2, 1);
  const at::Tensor e = testing::ramp({0, 2}, at::kLong, 0, 1);
  const at::Tensor s = testing::ramp({}, at::kBool, 1, 0);
  writeSafetensors(dir.file("w.safetensors"), {{"a", a}, {"b/\"q\"", b}, {"e", e}, {"s", s}},
                   {{"step", "7"}, {"config", "x: \"1\"\n"}});
  EXPECT_FALSE(std::filesystem::exists(dir.file("w.safetensors.tmp")));
  const std::string bytes = testing::readBytes(dir.file("w.safetensors"));
  const std::uint64_t n = littleEndian64(bytes);
  ASSERT_LE(8 + n, bytes.size());
  EXPECT_EQ((8 + n) % 8, 0u);
  const std::string header = bytes.substr(8, n);
  EXPECT_EQ(header.rfind("{\"__metadata__\":{\"config\":\"x: \\\"1\\\"\\n\",\"step\":\"7\"},", 0),
            0u)
      << header;
  EXPECT_NE(header.find("\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}"),
            std::string::npos)
      << header;
  EXPECT_NE(
      header.find("\"b/\\\"q\\\"\":{\"dtype\":\"BF16\",\"shape\":[5],\"data_offsets\":[24,34]}"),
      std::string::npos)
      << header;
  EXPECT_NE(header.find("\"e\":{\"dtype\":\"I64\",\"shape\":[0,2],\"data_offsets\":[0,0]}"),
            std::string::npos)
      << header;
  EXPECT_NE(header.find("\"s\":{\"dtype\":\"BOOL\",\"shape\":[],\"data_offsets\":[34,35]}"),
            std::string::npos)
      << header;
  const std::string data = bytes.substr(8 + n);
  ASSERT_EQ(data.size(), 35u);
  EXPECT_EQ(data.substr(0, 24), std::string(static_cast<const char*>(a.data_ptr()), 24));
  EXPECT_EQ(data.substr(24, 10), std::string(static_cast<const char*>(b.data_ptr()), 10));
  EXPECT_EQ(data[34], '\x01');
}

TEST(Safetensors, RejectsWhatTheFormatCannotHold) {
  ScratchDir dir;
  const at::Tensor a = testing::ramp({2}, at::kFloat, 0, 1);
  EXPECT_THROW(writeSafetensors(dir.file("x"), {{"a", a}, {"a", a}}, {}), Error);
  EXPECT_THROW(writeSafetensors(dir.file("x"), {{"", a}}, {}), Error);
  EXPECT_THROW(writeSafetensors(dir.file("x"), {{"__metadata__", a}}, {}), Error);
  EXPECT_THROW(writeSafetensors(dir.file("x"), {{"u", at::Tensor()}}, {}), Error);
  EXPECT_FALSE(std::filesystem::exists(dir.file("x")));
  try {
    writeSafetensors(dir.file("missing/x.safetensors"), {{"a", a}}, {});
    ADD_FAILURE() << "wrote into a missing directory";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(dir.file("missing/x.safetensors")), std::string::npos)
        << e.what();
  }
}

TEST(ExportedWeights, ModelWithoutPrefixThenEmaNoOptimizer) {
  const TrainingState state = testing::sampleState(11);
  const ExportedWeights w = exportedWeights(state);
  std::vector<std::string> names;
  for (const auto& entry : w.tensors) names.push_back(entry.first);
  const std::vector<std::string> expected = {"encoder.0.weight",
                                             "encoder.0.bias",
                                             "half",
                                             "bf16",
                                             "codebook.count",
                                             "int32",
                                             "int16",
                                             "int8",
                                             "uint8",
                                             "mask",
                                             "empty",
                                             "scalar",
                                             "step_count",
                                             "ema/0.999/encoder.0.weight"};
  EXPECT_EQ(names, expected);
  EXPECT_TRUE(w.tensors[0].second.is_same(*state.find("model/encoder.0.weight")));
  EXPECT_EQ(w.metadata.at("step"), "11");
  EXPECT_EQ(w.metadata.at("format"), "pt");
  EXPECT_EQ(w.metadata.at("config"), state.texts.at("config"));
  EXPECT_EQ(w.metadata.at("lr"), "0.001");
  EXPECT_EQ(w.metadata.at("tessera_checkpoint_format"), "1");

  TrainingState no_model;
  no_model.tensors.emplace_back("optim/0/exp_avg", testing::ramp({1}, at::kFloat, 0, 1));
  EXPECT_THROW(exportedWeights(no_model), InputError);
}

}  // namespace
}  // namespace tessera::trainer
