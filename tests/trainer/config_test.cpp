#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "core/file_tree.h"
#include "trainer/config/config_tree.h"
#include "trainer/tasks/vqvae_config.h"
#include "trainer/train_config.h"

namespace tessera::trainer {
namespace {
namespace fs = std::filesystem;

class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("tessera_config_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    removeTree(dir_.string());
    fs::create_directories(dir_);
  }
  void TearDown() override { removeTree(dir_.string()); }

  std::string write(const std::string& name, const std::string& text) {
    const fs::path p = dir_ / name;
    std::ofstream(p) << text;
    return p.string();
  }

  // The message of the ConfigError/UsageError that loading throws; fails the test if none.
  std::string errorOf(const std::string& path, const std::vector<std::string>& overrides = {}) {
    try {
      loadTrainConfig(path, overrides);
    } catch (const UsageError& e) {
      EXPECT_EQ(e.exitCode(), kExitUsage);
      return e.what();
    }
    ADD_FAILURE() << "no error for " << path;
    return "";
  }

  fs::path dir_;
};

TEST_F(ConfigTest, DefaultsAndValuesBind) {
  const auto path = write("a.yaml",
                          "run:\n  steps: 50\noptim:\n  lr: 1e-3\n  betas: [0.5, 0.9]\n"
                          "data:\n  batch_size: 1e2\n  hflip: yes\n");
  const TrainConfig c = loadTrainConfig(path, {});
  EXPECT_EQ(c.run.steps, 50);
  EXPECT_DOUBLE_EQ(c.optimizer("model").lr, 1e-3);
  EXPECT_EQ(c.optimizer("model").betas, (std::vector<double>{0.5, 0.9}));
  EXPECT_EQ(c.data.batch_size, 100);
  EXPECT_TRUE(c.data.hflip);
  EXPECT_EQ(c.taskConfig<VqVaeConfig>().quantizer.codebook_size, 512);  // default
}

TEST_F(ConfigTest, UnknownKeyNamesKeyFileLineAndSuggestion) {
  const auto path = write("typo.yaml", "run:\n  steps: 5\noptim:\n  lrr: 0.1\n");
  const std::string msg = errorOf(path);
  EXPECT_NE(msg.find("unknown key 'optim.lrr'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("did you mean 'optim.lr'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("typo.yaml:4"), std::string::npos) << msg;
}

TEST_F(ConfigTest, KeyInWrongSectionSuggestsItsHome) {
  const std::string msg = errorOf(write("a.yaml", "batch_size: 8\n"));
  EXPECT_NE(msg.find("unknown key 'batch_size'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("did you mean 'data.batch_size'"), std::string::npos) << msg;
}

TEST_F(ConfigTest, UnknownSectionAndNoCloseMatch) {
  const std::string msg = errorOf(write("a.yaml", "zzzzzzzz: {q: 1}\n"));
  EXPECT_NE(msg.find("unknown key 'zzzzzzzz'"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("did you mean"), std::string::npos) << msg;
}

TEST_F(ConfigTest, WrongTypesNameKeyAndExpectation) {
  EXPECT_NE(errorOf(write("a.yaml", "data:\n  batch_size: abc\n"))
                .find("data.batch_size: expected an integer, got 'abc'"),
            std::string::npos);
  EXPECT_NE(errorOf(write("b.yaml", "data:\n  batch_size: 1.5\n")).find("expected an integer"),
            std::string::npos);
  EXPECT_NE(errorOf(write("c.yaml", "data:\n  hflip: maybe\n")).find("expected true or false"),
            std::string::npos);
  EXPECT_NE(errorOf(write("d.yaml", "optim:\n  betas: 0.9\n")).find("expected a list of numbers"),
            std::string::npos);
  EXPECT_NE(errorOf(write("e.yaml", "optim: 3\n")).find("'optim' is a section"), std::string::npos);
  EXPECT_NE(errorOf(write("f.yaml", "optim:\n  lr:\n")).find("optim.lr: has no value"),
            std::string::npos);
  EXPECT_NE(errorOf(write("g.yaml", "optim:\n  lr: [1]\n")).find("expected a number, got a list"),
            std::string::npos);
}

TEST_F(ConfigTest, OutOfRangeNamesBound) {
  const std::string msg = errorOf(write("a.yaml", "optim:\n  lr: -1\n"));
  EXPECT_NE(msg.find("optim.lr: expected a value > 0, got -1"), std::string::npos) << msg;
  EXPECT_NE(errorOf(write("b.yaml", "quantizer:\n  decay: 1.5\n")).find("a value in [0, 1]"),
            std::string::npos);
  EXPECT_NE(errorOf(write("c.yaml", "optim:\n  betas: [0.9, 2]\n")).find("optim.betas[1]"),
            std::string::npos);
  EXPECT_NE(errorOf(write("d.yaml", "data:\n  batch_size: 99999999999\n")).find("32-bit"),
            std::string::npos);
}

TEST_F(ConfigTest, ChoiceTypoSuggestsChoice) {
  const std::string msg = errorOf(write("a.yaml", "optim:\n  schedule: cosin\n"));
  EXPECT_NE(msg.find("expected one of constant, cosine"), std::string::npos) << msg;
  EXPECT_NE(msg.find("did you mean 'cosine'"), std::string::npos) << msg;
}

TEST_F(ConfigTest, IncludeMergesAndIncluderWins) {
  write("base.yaml", "optim:\n  lr: 0.5\n  warmup_steps: 3\ndata:\n  batch_size: 4\n");
  const auto path = write("child.yaml", "include: base.yaml\ndata:\n  batch_size: 16\n");
  const TrainConfig c = loadTrainConfig(path, {});
  EXPECT_DOUBLE_EQ(c.optimizer("model").lr, 0.5);
  EXPECT_EQ(c.optimizer("model").warmup_steps, 3);
  EXPECT_EQ(c.data.batch_size, 16);
}

TEST_F(ConfigTest, ErrorsInIncludedFileNameThatFile) {
  write("base.yaml", "optim:\n  lr: 0.5\n  warmupsteps: 3\n");
  const std::string msg = errorOf(write("child.yaml", "include: [base.yaml]\n"));
  EXPECT_NE(msg.find("base.yaml:3"), std::string::npos) << msg;
  EXPECT_NE(msg.find("did you mean 'optim.warmup_steps'"), std::string::npos) << msg;
}

TEST_F(ConfigTest, IncludeCycleAndMissingFiles) {
  write("x.yaml", "include: y.yaml\n");
  write("y.yaml", "include: x.yaml\n");
  EXPECT_NE(errorOf((dir_ / "x.yaml").string()).find("include cycle"), std::string::npos);
  EXPECT_NE(errorOf(write("z.yaml", "include: nope.yaml\n")).find("nope.yaml' cannot be read"),
            std::string::npos);
  EXPECT_NE(errorOf((dir_ / "absent.yaml").string()).find("no such file"), std::string::npos);
}

TEST_F(ConfigTest, SyntaxErrorNamesFileAndLine) {
  const std::string msg = errorOf(write("bad.yaml", "run:\n  steps: [1, 2\n"));
  EXPECT_NE(msg.find("bad.yaml:"), std::string::npos) << msg;
  EXPECT_NE(msg.find("YAML syntax error"), std::string::npos) << msg;
  EXPECT_NE(errorOf(write("list.yaml", "- 1\n- 2\n")).find("expected a mapping"),
            std::string::npos);
}

TEST_F(ConfigTest, OverridesApplyWithTypes) {
  const auto path = write("a.yaml", "optim:\n  lr: 0.5\n");
  const TrainConfig c = loadTrainConfig(
      path, {"optim.lr=0.25", "optim.betas=[0.1, 0.2]", "data.hflip=true", "run.name=abc"});
  EXPECT_DOUBLE_EQ(c.optimizer("model").lr, 0.25);
  EXPECT_EQ(c.optimizer("model").betas, (std::vector<double>{0.1, 0.2}));
  EXPECT_TRUE(c.data.hflip);
  EXPECT_EQ(c.run.name, "abc");
}

TEST_F(ConfigTest, BadOverridesAreUsageErrors) {
  const auto path = write("a.yaml", "");
  std::string msg = errorOf(path, {"optim.lrr=1"});
  EXPECT_NE(msg.find("command-line override 'optim.lrr=1'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("did you mean 'optim.lr'"), std::string::npos) << msg;
  EXPECT_NE(errorOf(path, {"noequals"}).find("not of the form key=value"), std::string::npos);
  EXPECT_NE(errorOf(path, {"optim..lr=1"}).find("empty key component"), std::string::npos);
  EXPECT_NE(errorOf(write("b.yaml", "optim: {lr: 0.1}\n"), {"optim.lr.x=1"})
                .find("'optim.lr' is a value"),
            std::string::npos);
  EXPECT_NE(errorOf(path, {"optim.lr.x=1"}).find("optim.lr: expected a number, got a section"),
            std::string::npos);
}

TEST_F(ConfigTest, CrossFieldValidation) {
  EXPECT_NE(errorOf(write("a.yaml", "run: {steps: 10}\noptim: {warmup_steps: 10}\n"))
                .find("warmup_steps"),
            std::string::npos);
  EXPECT_NE(errorOf(write("b.yaml", "optim: {betas: [0.9]}\n")).find("two values"),
            std::string::npos);
  EXPECT_NE(errorOf(write("c.yaml", "data: {image_size: 30}\nmodel: {downsample: 2}\n"))
                .find("data.image_size (30) must be divisible by 2^model.downsample"),
            std::string::npos);
  // The image shape is the data's: the VQ-VAE's model section no longer has one.
  EXPECT_NE(
      errorOf(write("d.yaml", "model: {image_size: 28}\n")).find("did you mean 'data.image_size'"),
      std::string::npos);
}

TEST_F(ConfigTest, DumpRoundTripsAndListsEveryKey) {
  const auto path = write("a.yaml", "optim: {lr: 0.0003, ema: [0.999]}\nrun: {name: x}\n");
  const TrainConfig c = loadTrainConfig(path, {"optim.schedule=cosine"});
  const std::string yaml = toYaml(c);
  const TrainConfig again = loadTrainConfig(write("dump.yaml", yaml), {});
  EXPECT_EQ(toYaml(again), yaml);
  EXPECT_NE(yaml.find("lr: 3e-04"), std::string::npos) << yaml;
  EXPECT_NE(yaml.find("schedule: cosine"), std::string::npos) << yaml;
  const auto keys = trainConfigKeys();
  for (const char* k : {"optim.lr", "data.batch_size", "quantizer.decay", "run", "comm.timeout"}) {
    EXPECT_NE(std::find(keys.begin(), keys.end(), k), keys.end()) << k;
  }
}

TEST(EditDistance, Basics) {
  EXPECT_EQ(config::editDistance("", ""), 0u);
  EXPECT_EQ(config::editDistance("lr", "lrr"), 1u);
  EXPECT_EQ(config::editDistance("kitten", "sitting"), 3u);
}

}  // namespace
}  // namespace tessera::trainer
