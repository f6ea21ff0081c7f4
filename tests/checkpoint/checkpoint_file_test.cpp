// The checkpoint file format: round trips of every dtype and edge shape, and a clear
// CheckpointCorrupt for every kind of damage.
#include <gtest/gtest.h>

#include <ATen/ops/empty.h>

#include <filesystem>
#include <iostream>
#include <limits>

#include "data/detail/hdf5.h"
#include "test_states.h"
#include "trainer/checkpoint/checkpoint_corrupt.h"
#include "trainer/checkpoint/checkpoint_file.h"

namespace tessera::trainer {
namespace {

using testing::ScratchDir;

std::string corruptMessage(const std::string& path) {
  try {
    readCheckpointFile(path);
  } catch (const CheckpointCorrupt& e) {
    return e.what();
  }
  return "(read succeeded)";
}

TEST(CheckpointFile, RoundTripsEveryDtypeBitwise) {
  ScratchDir dir;
  TrainingState state = testing::sampleState(7);
  // Arbitrary bit patterns (NaN payloads, denormals, negative zero) must survive, too.
  const c10::ScalarType types[] = {at::kFloat, at::kDouble, at::kHalf, at::kBFloat16, at::kLong,
                                   at::kInt,   at::kShort,  at::kChar, at::kByte,     at::kBool};
  std::uint32_t seed = 1;
  for (const auto type : types) {
    state.tensors.emplace_back("random/" + std::string(c10::toString(type)),
                               testing::randomBytes({3, 5, 2}, type, seed++));
    state.tensors.emplace_back("random/scalar/" + std::string(c10::toString(type)),
                               testing::randomBytes({}, type, seed++));
    state.tensors.emplace_back("random/empty/" + std::string(c10::toString(type)),
                               testing::randomBytes({2, 0}, type, seed++));
  }
  state.reals["nan"] = std::numeric_limits<double>::quiet_NaN();
  state.reals["minus_zero"] = -0.0;
  state.reals["inf"] = -std::numeric_limits<double>::infinity();
  state.ints["min"] = std::numeric_limits<std::int64_t>::min();
  state.texts["multiline"] = std::string("a\nb\tc \"quoted\" \\ ") + std::string(70000, 'x');

  const std::string path = dir.file("state.h5");
  writeCheckpointFile(path, state);
  const TrainingState back = readCheckpointFile(path);
  std::string why;
  EXPECT_TRUE(testing::sameState(state, back, &why)) << why;
  EXPECT_EQ(back.step(), 7);
  EXPECT_EQ(back.bytes(), state.bytes());
  for (const auto& [name, tensor] : back.tensors) {
    EXPECT_TRUE(tensor.is_contiguous()) << name;
    EXPECT_TRUE(tensor.device().is_cpu()) << name;
  }
  const at::Tensor* scalar = back.find("model/scalar");
  ASSERT_NE(scalar, nullptr);
  EXPECT_EQ(scalar->dim(), 0);
  EXPECT_EQ(back.find("model/empty")->sizes(), (std::vector<std::int64_t>{0, 4}));
}

TEST(CheckpointFile, WritesNonContiguousTensorsAsTheirValues) {
  ScratchDir dir;
  TrainingState state;
  const at::Tensor base = testing::ramp({3, 4}, at::kFloat, 0, 1);
  state.tensors.emplace_back("model/t", base.t());  // transposed view
  state.ints["step"] = 1;
  writeCheckpointFile(dir.file("t.h5"), state);
  const TrainingState back = readCheckpointFile(dir.file("t.h5"));
  EXPECT_TRUE(testing::bitwiseEqual(back.tensors.at(0).second, base.t().contiguous()));
}

TEST(CheckpointFile, RejectsStatesItCannotWrite) {
  ScratchDir dir;
  auto expectRejected = [&](TrainingState s, const std::string& needle) {
    try {
      writeCheckpointFile(dir.file("bad.h5"), s);
      ADD_FAILURE() << "accepted a state with " << needle;
    } catch (const CheckpointCorrupt& e) {
      ADD_FAILURE() << "wrong error type: " << e.what();
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
    EXPECT_FALSE(std::filesystem::exists(dir.file("bad.h5"))) << needle;
  };
  const at::Tensor t = testing::ramp({2}, at::kFloat, 0, 1);
  TrainingState base;
  base.ints["step"] = 1;
  for (const std::string name : {"", "/a", "a/", "a//b", "a/./b", "../a", "a\nb"}) {
    TrainingState s = base;
    s.tensors.emplace_back(name, t);
    expectRejected(s, "tensor");
  }
  {
    TrainingState s = base;
    s.tensors.emplace_back("model/w", t);
    s.tensors.emplace_back("model/w", t);
    expectRejected(s, "appears twice");
  }
  {
    TrainingState s = base;
    s.tensors.emplace_back("model/w", t);
    s.tensors.emplace_back("model/w/x", t);
    expectRejected(s, "also a group");
  }
  {
    TrainingState s = base;
    s.tensors.emplace_back("model/u", at::Tensor());
    expectRejected(s, "undefined");
  }
  {
    TrainingState s = base;
    s.tensors.emplace_back("model/c", at::empty({2}, at::TensorOptions().dtype(at::kComplexFloat)));
    expectRejected(s, "ComplexFloat");
  }
  {
    TrainingState s = base;
    s.reals["step"] = 1.0;
    expectRejected(s, "more than one");
  }
  {
    TrainingState s = base;
    s.ints["tessera_format_version"] = 3;
    expectRejected(s, "reserved");
  }
  {
    TrainingState s = base;
    s.texts["config"] = std::string("a\0b", 3);
    expectRejected(s, "NUL");
  }
}

TEST(CheckpointFile, WriteFailureNamesThePath) {
  ScratchDir dir;
  const std::string path = dir.file("no/such/dir/state.h5");
  try {
    writeCheckpointFile(path, testing::sampleState(1));
    ADD_FAILURE() << "wrote into a missing directory";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
}

TEST(CheckpointFile, FlippedDataByteNamesTheDataset) {
  ScratchDir dir;
  const std::string path = dir.file("state.h5");
  writeCheckpointFile(path, testing::sampleState(3));
  testing::flipByte(path, testing::datasetOffset(path, "optim/0/exp_avg") + 5);
  const std::string msg = corruptMessage(path);
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("'optim/0/exp_avg'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("checksum mismatch"), std::string::npos) << msg;
}

// Small texts live in the object header (HDF5's checksum catches a flip there); texts over 64 KiB
// in HDF5's dense attribute storage, where the manifest's CRC names the attribute.
TEST(CheckpointFile, FlippedTextAttributeIsCorrupt) {
  ScratchDir dir;
  const std::string path = dir.file("state.h5");
  for (const std::size_t padding : {std::size_t{0}, std::size_t{100000}}) {
    TrainingState state = testing::sampleState(3);
    state.texts["config"] = "marker-Q7Z: 1\n" + std::string(padding, '#');
    writeCheckpointFile(path, state);
    const std::string bytes = testing::readBytes(path);
    const auto at = bytes.find("marker-Q7Z");
    ASSERT_NE(at, std::string::npos);
    testing::flipByte(path, static_cast<std::int64_t>(at) + 3);
    const std::string msg = corruptMessage(path);
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    if (padding == 0) {
      EXPECT_NE(msg.find("checksum"), std::string::npos) << msg;
    } else {
      EXPECT_NE(msg.find("attribute 'config': checksum mismatch"), std::string::npos) << msg;
    }
  }
}

TEST(CheckpointFile, TruncatedFileIsCorrupt) {
  ScratchDir dir;
  const std::string path = dir.file("state.h5");
  writeCheckpointFile(path, testing::sizedState(1, 100000));
  const std::string bytes = testing::readBytes(path);
  for (const std::size_t keep :
       {bytes.size() - 1, bytes.size() / 2, std::size_t{600}, std::size_t{4}, std::size_t{0}}) {
    testing::writeBytes(path, bytes.substr(0, keep));
    const std::string msg = corruptMessage(path);
    EXPECT_NE(msg.find(path), std::string::npos) << keep << ": " << msg;
    EXPECT_EQ(msg.find("read succeeded"), std::string::npos) << keep;
  }
}

TEST(CheckpointFile, NotHdf5MissingAndDirectoryAreCorrupt) {
  ScratchDir dir;
  testing::writeBytes(dir.file("text.h5"), "this is not a checkpoint\n");
  EXPECT_NE(corruptMessage(dir.file("text.h5")).find("not an HDF5 file"), std::string::npos);
  EXPECT_NE(corruptMessage(dir.file("missing.h5")).find("No such file"), std::string::npos);
  EXPECT_NE(corruptMessage(dir.path()).find("not a regular file"), std::string::npos);
}

TEST(CheckpointFile, Hdf5FileWithoutTesseraAttributesIsCorrupt) {
  ScratchDir dir;
  const std::string path = dir.file("plain.h5");
  {
    data::detail::Handle file(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT),
                              H5Fclose);
    ASSERT_TRUE(file);
  }
  EXPECT_NE(corruptMessage(path).find("not a Tessera checkpoint"), std::string::npos);
}

// Edits an existing checkpoint through HDF5, as a damaged or foreign file would look.
class EditedFile : public ::testing::Test {
 protected:
  void SetUp() override { writeCheckpointFile(path_, testing::sampleState(5)); }
  data::detail::Handle openForEdit() {
    return data::detail::Handle(H5Fopen(path_.c_str(), H5F_ACC_RDWR, H5P_DEFAULT), H5Fclose);
  }
  ScratchDir dir_;
  std::string path_ = dir_.file("state.h5");
};

TEST_F(EditedFile, MissingDatasetIsNamed) {
  {
    auto file = openForEdit();
    ASSERT_GE(H5Ldelete(file.get(), "model/encoder.0.bias", H5P_DEFAULT), 0);
  }
  const std::string msg = corruptMessage(path_);
  EXPECT_NE(msg.find("'model/encoder.0.bias' is missing"), std::string::npos) << msg;
}

TEST_F(EditedFile, WrongFormatVersionIsNamed) {
  {
    auto file = openForEdit();
    data::detail::Handle attr(H5Aopen(file.get(), "tessera_format_version", H5P_DEFAULT), H5Aclose);
    const std::int64_t two = 2;
    ASSERT_GE(H5Awrite(attr.get(), H5T_NATIVE_INT64, &two), 0);
  }
  const std::string msg = corruptMessage(path_);
  EXPECT_NE(msg.find("format version 2"), std::string::npos) << msg;
}

TEST_F(EditedFile, ChangedIntAttributeIsNamed) {
  {
    auto file = openForEdit();
    data::detail::Handle attr(H5Aopen(file.get(), "samples", H5P_DEFAULT), H5Aclose);
    const std::int64_t other = 12346;
    ASSERT_GE(H5Awrite(attr.get(), H5T_NATIVE_INT64, &other), 0);
  }
  const std::string msg = corruptMessage(path_);
  EXPECT_NE(msg.find("attribute 'samples': checksum mismatch"), std::string::npos) << msg;
}

TEST_F(EditedFile, MissingAttributeIsNamed) {
  {
    auto file = openForEdit();
    ASSERT_GE(H5Adelete(file.get(), "lr"), 0);
  }
  const std::string msg = corruptMessage(path_);
  EXPECT_NE(msg.find("attribute 'lr' is missing"), std::string::npos) << msg;
}

// Any single flipped byte anywhere in the file: the read either fails with CheckpointCorrupt or
// returns exactly what was written (bytes HDF5 never reads, e.g. padding). Never a crash, a hang
// or a silently different state. With a text over 64 KiB the file also has HDF5's dense
// attribute storage; inside the long text's run of '#' only every 997th byte is tried.
TEST(CheckpointFile, EveryFlippedByteIsDetectedOrHarmless) {
  ScratchDir dir;
  const std::string path = dir.file("state.h5");
  for (const std::size_t padding : {std::size_t{0}, std::size_t{70000}}) {
    TrainingState state;
    state.tensors.emplace_back("model/w", testing::randomBytes({64}, at::kFloat, 3));
    state.tensors.emplace_back("model/b", testing::randomBytes({4}, at::kBFloat16, 4));
    state.tensors.emplace_back("optim/0/empty", testing::randomBytes({0}, at::kFloat, 5));
    state.ints["step"] = 9;
    state.reals["lr"] = 0.5;
    state.texts["config"] = "a: 1\n" + std::string(padding, '#');
    writeCheckpointFile(path, state);
    const std::string original = testing::readBytes(path);
    int detected = 0, harmless = 0;
    for (std::size_t i = 0; i < original.size(); ++i) {
      const bool inside_run = i > 0 && i + 1 < original.size() && original[i - 1] == '#' &&
                              original[i] == '#' && original[i + 1] == '#';
      if (inside_run && i % 997 != 0) continue;
      std::string bytes = original;
      bytes[i] ^= 0x10;
      testing::writeBytes(path, bytes);
      try {
        const TrainingState back = readCheckpointFile(path);
        std::string why;
        EXPECT_TRUE(testing::sameState(state, back, &why)) << "byte " << i << ": " << why;
        ++harmless;
      } catch (const CheckpointCorrupt&) {
        ++detected;
      }
    }
    std::cout << original.size() << " bytes: " << detected << " flips detected, " << harmless
              << " harmless\n";
    EXPECT_GT(detected, 0);
  }
}

}  // namespace
}  // namespace tessera::trainer
