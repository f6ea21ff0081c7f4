#include "trainer/metrics/jsonl_writer.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "core/file_tree.h"

namespace tessera::trainer {
namespace {

namespace fs = std::filesystem;

class JsonlWriterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("tessera_jsonl_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    removeTree(dir_.string());
    fs::create_directories(dir_);
  }
  void TearDown() override { removeTree(dir_.string()); }

  std::string read(const fs::path& p) {
    std::ifstream in(p);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

  fs::path dir_;
};

TEST_F(JsonlWriterTest, WritesOneFlushedLinePerObject) {
  const auto path = dir_ / "metrics.jsonl";
  JsonlWriter w(path.string());
  const auto first = JsonObject().add("step", 1).add("loss", 0.5);
  const auto second = JsonObject().add("step", 2).add("term", "a\"b\nc");
  w.write(first);
  // Flushed: visible to another reader before the writer goes away.
  EXPECT_EQ(read(path), first.str() + "\n");
  w.write(second);
  EXPECT_EQ(read(path), first.str() + "\n" + second.str() + "\n");
  EXPECT_EQ(second.str().find('\n'), std::string::npos) << "one object, one line";
}

TEST_F(JsonlWriterTest, ReopeningAppendsSoAResumedRunContinuesTheFile) {
  const auto path = dir_ / "metrics.jsonl";
  { JsonlWriter(path.string()).write(JsonObject().add("step", 1)); }
  { JsonlWriter(path.string()).write(JsonObject().add("step", 2)); }
  EXPECT_EQ(read(path),
            JsonObject().add("step", 1).str() + "\n" + JsonObject().add("step", 2).str() + "\n");
}

TEST_F(JsonlWriterTest, ALineCutByACrashIsClosedBeforeNewLines) {
  const auto path = dir_ / "metrics.jsonl";
  std::ofstream(path) << "{\"step\":1}\n{\"step\":2,\"lo";
  JsonlWriter(path.string()).write(JsonObject().add("step", 3));
  EXPECT_EQ(read(path),
            "{\"step\":1}\n{\"step\":2,\"lo\n" + JsonObject().add("step", 3).str() + "\n");
}

TEST_F(JsonlWriterTest, UnopenablePathThrowsWithThePath) {
  const auto path = dir_ / "missing-dir" / "metrics.jsonl";
  try {
    JsonlWriter w(path.string());
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path.string()), std::string::npos) << e.what();
  }
}

TEST_F(JsonlWriterTest, AFullDiskIsNotAnError) {
  if (!fs::exists("/dev/full")) GTEST_SKIP() << "no /dev/full";
  JsonlWriter w("/dev/full");
  w.write(JsonObject().add("step", 1));
  w.write(JsonObject().add("step", 2));
}

}  // namespace
}  // namespace tessera::trainer
