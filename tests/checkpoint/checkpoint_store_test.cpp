// The checkpoint store: atomic commits, retention, fallback to the newest checkpoint that
// verifies, asynchronous saves, and failed saves that leave earlier checkpoints intact.
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <functional>
#include <thread>

#include "core/error.h"
#include "core/file_tree.h"
#include "test_states.h"
#include "trainer/checkpoint/checkpoint_file.h"
#include "trainer/checkpoint/checkpoint_store.h"

namespace tessera::trainer {
namespace {

namespace fs = std::filesystem;
using testing::LogCapture;
using testing::ScratchDir;

std::vector<std::int64_t> stepsOf(const std::vector<std::string>& paths) {
  std::vector<std::int64_t> steps;
  for (const auto& p : paths)
    steps.push_back(checkpointStepOf(fs::path(p).filename().string()).value());
  return steps;
}

std::string latestText(const ScratchDir& dir) {
  return testing::readBytes(dir.file("latest"));
}

bool hasTmpFiles(const ScratchDir& dir) {
  for (const auto& entry : fs::directory_iterator(dir.path())) {
    if (entry.path().extension() == ".tmp") return true;
  }
  return false;
}

TEST(CheckpointNames, FileNameAndStepRoundTrip) {
  EXPECT_EQ(checkpointFileName(42), "step-00000042.h5");
  EXPECT_EQ(checkpointFileName(123456789), "step-123456789.h5");
  EXPECT_EQ(checkpointStepOf("step-00000042.h5"), 42);
  EXPECT_EQ(checkpointStepOf("step-123456789.h5"), 123456789);
  for (const char* bad : {"step-.h5", "step-12.h5.tmp", "step-1a.h5", "latest", "step-1.h5x",
                          "xstep-1.h5", "step--1.h5"}) {
    EXPECT_FALSE(checkpointStepOf(bad).has_value()) << bad;
  }
}

class Store : public ::testing::TestWithParam<bool> {
 protected:
  CheckpointStoreOptions options(int keep_last = 3, std::int64_t keep_every = 0) {
    return {dir_.path(), keep_last, keep_every, GetParam()};
  }
  ScratchDir dir_;
  LogCapture log_;
};

TEST_P(Store, SavesCommitsAndLoadsTheNewest) {
  CheckpointStore store(options());
  EXPECT_FALSE(store.loadLatest().has_value());
  for (std::int64_t step = 1; step <= 5; ++step) {
    store.save(testing::sampleState(step));
    EXPECT_EQ(store.wait(), std::optional<bool>(true));
    EXPECT_EQ(latestText(dir_), checkpointFileName(step) + "\n");
  }
  EXPECT_EQ(store.wait(), std::nullopt);  // nothing left to report
  EXPECT_EQ(stepsOf(store.list()), (std::vector<std::int64_t>{5, 4, 3}));
  EXPECT_FALSE(hasTmpFiles(dir_));
  std::string path;
  const auto loaded = store.loadLatest(&path);
  ASSERT_TRUE(loaded.has_value());
  EXPECT_EQ(path, dir_.file("step-00000005.h5"));
  std::string why;
  EXPECT_TRUE(testing::sameState(*loaded, testing::sampleState(5), &why)) << why;
  const SaveStats stats = store.stats();
  EXPECT_EQ(stats.saves, 5);
  EXPECT_EQ(stats.failed_saves, 0);
  EXPECT_EQ(stats.last_committed_step, 5);
  EXPECT_EQ(stats.last_bytes, testing::sampleState(5).bytes());
  EXPECT_GT(stats.last_seconds, 0);
  EXPECT_GT(stats.blocked_seconds, 0);
  EXPECT_GT(stats.last_success_unix, 1.6e9);
}

TEST_P(Store, RetentionKeepsTheNewestAndTheMultiples) {
  CheckpointStore store(options(2, 4));
  for (std::int64_t step = 1; step <= 9; ++step) store.save(testing::sizedState(step, 64));
  EXPECT_EQ(store.wait(), std::optional<bool>(true));
  EXPECT_EQ(stepsOf(store.list()), (std::vector<std::int64_t>{9, 8, 4}));
}

TEST_P(Store, SavingAnExistingStepReplacesIt) {
  CheckpointStore store(options());
  store.save(testing::sizedState(3, 64));
  TrainingState again = testing::sizedState(3, 128);
  store.save(again);
  EXPECT_EQ(store.wait(), std::optional<bool>(true));
  EXPECT_EQ(stepsOf(store.list()), (std::vector<std::int64_t>{3}));
  std::string why;
  EXPECT_TRUE(testing::sameState(*store.loadLatest(), again, &why)) << why;
}

TEST_P(Store, CorruptNewestFallsBackToThePrevious) {
  {
    CheckpointStore store(options());
    for (std::int64_t step = 1; step <= 3; ++step) store.save(testing::sampleState(step));
    store.wait();
  }
  const std::string newest = dir_.file("step-00000003.h5");
  testing::flipByte(newest, testing::datasetOffset(newest, "model/encoder.0.weight") + 2);
  CheckpointStore store(options());
  std::string path;
  const auto loaded = store.loadLatest(&path);
  ASSERT_TRUE(loaded.has_value());
  EXPECT_EQ(loaded->step(), 2);
  EXPECT_EQ(path, dir_.file("step-00000002.h5"));
  const std::string log = log_.text();
  EXPECT_NE(log.find("skipping " + newest), std::string::npos) << log;
  EXPECT_NE(log.find("'model/encoder.0.weight': checksum mismatch"), std::string::npos) << log;
}

TEST_P(Store, TruncatedNewestFallsBackToThePrevious) {
  {
    CheckpointStore store(options());
    for (std::int64_t step = 1; step <= 3; ++step) store.save(testing::sizedState(step, 50000));
    store.wait();
  }
  const std::string newest = dir_.file("step-00000003.h5");
  testing::writeBytes(newest, testing::readBytes(newest).substr(0, 30000));
  CheckpointStore store(options());
  const auto loaded = store.loadLatest();
  ASSERT_TRUE(loaded.has_value());
  EXPECT_EQ(loaded->step(), 2);
  EXPECT_NE(log_.text().find("skipping " + newest), std::string::npos) << log_.text();
}

TEST_P(Store, HalfWrittenTmpIsIgnoredAndRemoved) {
  {
    CheckpointStore store(options());
    for (std::int64_t step = 1; step <= 2; ++step) store.save(testing::sizedState(step, 50000));
    store.wait();
  }
  // A crash in the middle of writing step 3 (and of moving `latest`).
  const std::string half = testing::readBytes(dir_.file("step-00000002.h5")).substr(0, 20000);
  testing::writeBytes(dir_.file("step-00000003.h5.tmp"), half);
  testing::writeBytes(dir_.file("latest.tmp"), "step-0000");
  testing::writeBytes(dir_.file("notes.tmp"), "not ours");
  CheckpointStore store(options());
  EXPECT_FALSE(fs::exists(dir_.file("step-00000003.h5.tmp")));
  EXPECT_FALSE(fs::exists(dir_.file("latest.tmp")));
  EXPECT_TRUE(fs::exists(dir_.file("notes.tmp")));  // not a file the store writes
  const std::string log = log_.text();
  EXPECT_NE(
      log.find("removed " + dir_.file("step-00000003.h5.tmp") + ", left by an interrupted save"),
      std::string::npos)
      << log;
  const auto loaded = store.loadLatest();
  ASSERT_TRUE(loaded.has_value());
  EXPECT_EQ(loaded->step(), 2);
}

TEST_P(Store, LatestNamingAMissingFileFallsBack) {
  {
    CheckpointStore store(options());
    for (std::int64_t step = 1; step <= 2; ++step) store.save(testing::sizedState(step, 64));
    store.wait();
  }
  testing::writeBytes(dir_.file("latest"), "step-00000009.h5\n");
  CheckpointStore store(options());
  const auto loaded = store.loadLatest();
  ASSERT_TRUE(loaded.has_value());
  EXPECT_EQ(loaded->step(), 2);
  EXPECT_NE(log_.text().find("names step-00000009.h5, which does not exist"), std::string::npos)
      << log_.text();
}

TEST_P(Store, LatestIsPreferredThenNewestByStep) {
  {
    CheckpointStore store(options());
    for (std::int64_t step = 1; step <= 3; ++step) store.save(testing::sizedState(step, 64));
    store.wait();
  }
  testing::writeBytes(dir_.file("latest"), "step-00000002.h5\n");
  CheckpointStore store(options());
  EXPECT_EQ(store.loadLatest()->step(), 2);
  // Corrupt what `latest` names: the newest other one comes next.
  testing::writeBytes(dir_.file("step-00000002.h5"), "garbage");
  EXPECT_EQ(store.loadLatest()->step(), 3);
  // A malformed or missing `latest` is logged, then the steps are tried.
  testing::writeBytes(dir_.file("latest"), "../../etc/passwd\n");
  EXPECT_EQ(store.loadLatest()->step(), 3);
  EXPECT_NE(log_.text().find("does not name a checkpoint"), std::string::npos) << log_.text();
  fs::remove(dir_.file("latest"));
  EXPECT_EQ(store.loadLatest()->step(), 3);
  EXPECT_NE(log_.text().find("latest is missing"), std::string::npos) << log_.text();
}

TEST_P(Store, FileWhoseContentDisagreesWithItsNameIsSkipped) {
  {
    CheckpointStore store(options());
    for (std::int64_t step = 1; step <= 2; ++step) store.save(testing::sizedState(step, 64));
    store.wait();
  }
  fs::copy_file(dir_.file("step-00000001.h5"), dir_.file("step-00000007.h5"));
  testing::writeBytes(dir_.file("latest"), "step-00000007.h5\n");
  CheckpointStore store(options());
  EXPECT_EQ(store.loadLatest()->step(), 2);
  EXPECT_NE(log_.text().find("holds step 1, its name says 7"), std::string::npos) << log_.text();
}

TEST_P(Store, NothingVerifiesGivesNullopt) {
  testing::writeBytes(dir_.file("step-00000001.h5"), "garbage");
  CheckpointStore store(options());
  EXPECT_FALSE(store.loadLatest().has_value());
  EXPECT_NE(log_.text().find("none of the 1 checkpoint(s)"), std::string::npos) << log_.text();
}

// Each way a save can fail leaves the earlier checkpoints and `latest` as they were, removes its
// temporary files, is counted and logged, and does not stop the next save.
TEST_P(Store, FailedSavesLeaveEarlierCheckpointsIntact) {
  CheckpointStore store(options(1));
  store.save(testing::sampleState(1));
  ASSERT_EQ(store.wait(), std::optional<bool>(true));
  const std::string first = testing::readBytes(dir_.file("step-00000001.h5"));

  struct Failure {
    std::string what;
    std::function<void()> arrange, undo;
    std::string reason;
  };
  const std::vector<Failure> failures = {
      {"the temporary file cannot be created",
       [&] { fs::create_directories(dir_.file("step-00000002.h5.tmp/x")); },
       [&] { removeTree(dir_.file("step-00000002.h5.tmp")); }, "creating"},
      {"the rename onto the final name fails",
       [&] { fs::create_directories(dir_.file("step-00000002.h5/x")); },
       [&] { removeTree(dir_.file("step-00000002.h5")); }, "renaming"},
      {"`latest` cannot be replaced", [&] { fs::create_directories(dir_.file("latest.tmp/x")); },
       [&] { removeTree(dir_.file("latest.tmp")); }, "latest.tmp"},
  };
  std::int64_t failed = 0;
  for (const Failure& f : failures) {
    f.arrange();
    store.save(testing::sampleState(2));
    EXPECT_EQ(store.wait(), std::optional<bool>(false)) << f.what;
    f.undo();
    ++failed;
    EXPECT_EQ(store.stats().failed_saves, failed) << f.what;
    EXPECT_EQ(store.stats().saves, 1) << f.what;
    EXPECT_EQ(stepsOf(store.list()), (std::vector<std::int64_t>{1})) << f.what;
    EXPECT_EQ(testing::readBytes(dir_.file("step-00000001.h5")), first) << f.what;
    EXPECT_EQ(latestText(dir_), "step-00000001.h5\n") << f.what;
    EXPECT_FALSE(hasTmpFiles(dir_)) << f.what;
    EXPECT_EQ(store.loadLatest()->step(), 1) << f.what;
    const std::string log = log_.text();
    EXPECT_NE(log.find("saving step 2 failed (" + std::to_string(failed) + " failed so far)"),
              std::string::npos)
        << f.what << "\n"
        << log;
    EXPECT_NE(log.rfind(f.reason), std::string::npos) << f.what << "\n" << log;
  }
  store.save(testing::sampleState(3));
  EXPECT_EQ(store.wait(), std::optional<bool>(true));
  EXPECT_EQ(stepsOf(store.list()), (std::vector<std::int64_t>{3}));
  EXPECT_EQ(store.stats().last_committed_step, 3);
}

// Disk full: the file size limit makes write(2) fail with EFBIG (SIGXFSZ ignored), which works
// for root too, unlike permission bits.
TEST_P(Store, DiskFullLeavesEarlierCheckpointsIntact) {
  CheckpointStore store(options(2));
  store.save(testing::sizedState(1, 4096));
  ASSERT_EQ(store.wait(), std::optional<bool>(true));
  const std::string first = testing::readBytes(dir_.file("step-00000001.h5"));

  struct rlimit saved {};
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &saved), 0);
  const auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  struct rlimit small = saved;
  small.rlim_cur = 256 * 1024;
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &small), 0);
  store.save(testing::sizedState(2, 1 << 20));
  const auto outcome = store.wait();
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &saved), 0);
  std::signal(SIGXFSZ, old_handler);

  EXPECT_EQ(outcome, std::optional<bool>(false));
  EXPECT_EQ(store.stats().failed_saves, 1);
  EXPECT_EQ(stepsOf(store.list()), (std::vector<std::int64_t>{1}));
  EXPECT_EQ(testing::readBytes(dir_.file("step-00000001.h5")), first);
  EXPECT_FALSE(hasTmpFiles(dir_));
  EXPECT_NE(log_.text().find("File too large"), std::string::npos) << log_.text();

  store.save(testing::sizedState(3, 1 << 20));
  EXPECT_EQ(store.wait(), std::optional<bool>(true));
  EXPECT_EQ(stepsOf(store.list()), (std::vector<std::int64_t>{3, 1}));
  EXPECT_EQ(store.loadLatest()->step(), 3);
}

TEST_P(Store, ADirectoryReplacedByAFileFailsTheSaveOnly) {
  CheckpointStore store(options());
  store.save(testing::sizedState(1, 64));
  ASSERT_EQ(store.wait(), std::optional<bool>(true));
  const std::string moved = dir_.path() + ".moved";
  fs::rename(dir_.path(), moved);
  testing::writeBytes(dir_.path(), "a file where the directory was");
  store.save(testing::sizedState(2, 64));
  EXPECT_EQ(store.wait(), std::optional<bool>(false));
  EXPECT_FALSE(store.loadLatest().has_value());
  fs::remove(dir_.path());
  fs::rename(moved, dir_.path());
  store.save(testing::sizedState(3, 64));
  EXPECT_EQ(store.wait(), std::optional<bool>(true));
  EXPECT_EQ(stepsOf(store.list()), (std::vector<std::int64_t>{3, 1}));
}

TEST_P(Store, InvalidStateThrowsBeforeTouchingAnything) {
  CheckpointStore store(options());
  TrainingState no_step = testing::sizedState(1, 64);
  no_step.ints.erase("step");
  EXPECT_THROW(store.save(no_step), Error);
  TrainingState negative = testing::sizedState(-1, 64);
  EXPECT_THROW(store.save(negative), Error);
  TrainingState bad = testing::sizedState(1, 64);
  bad.tensors.emplace_back("", bad.tensors[0].second);
  EXPECT_THROW(store.save(bad), Error);
  EXPECT_EQ(store.wait(), std::nullopt);
  EXPECT_TRUE(store.list().empty());
  EXPECT_EQ(store.stats().failed_saves, 0);
}

INSTANTIATE_TEST_SUITE_P(SyncAndAsync, Store, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "Async" : "Sync"; });

TEST(StoreOptions, RejectsBadRetentionAndAnUncreatableDirectory) {
  ScratchDir dir;
  EXPECT_THROW(CheckpointStore({dir.path(), 0, 0, true}), ConfigError);
  EXPECT_THROW(CheckpointStore({dir.path(), 1, -1, true}), ConfigError);
  testing::writeBytes(dir.file("file"), "x");
  EXPECT_THROW(CheckpointStore({dir.file("file/sub"), 1, 0, true}), Error);
  CheckpointStore nested({dir.file("a/b/c"), 1, 0, true});
  EXPECT_TRUE(fs::is_directory(dir.file("a/b/c")));
}

// save() of an asynchronous store returns before the write is done, but a second save() first
// waits for the first: when it returns, the first is committed.
TEST(AsyncStore, SecondSaveWaitsForTheFirst) {
  ScratchDir dir;
  CheckpointStore store({dir.path(), 5, 0, true});
  for (std::int64_t step = 1; step <= 4; ++step) {
    store.save(testing::sizedState(step, 4 << 20));
    // The previous save is complete and visible the moment this one has been handed off.
    if (step > 1) {
      EXPECT_TRUE(fs::exists(dir.file(checkpointFileName(step - 1)))) << step;
      EXPECT_FALSE(fs::exists(dir.file(checkpointFileName(step - 1) + ".tmp"))) << step;
      EXPECT_GE(store.stats().saves, step - 1);
    }
  }
  EXPECT_EQ(store.wait(), std::optional<bool>(true));
  EXPECT_EQ(store.stats().saves, 4);
}

TEST(AsyncStore, PollReportsEachOutcomeOnce) {
  ScratchDir dir;
  CheckpointStore store({dir.path(), 2, 0, true});
  EXPECT_EQ(store.poll(), std::nullopt);
  store.save(testing::sizedState(1, 1 << 20));
  std::optional<bool> outcome;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!(outcome = store.poll()) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::yield();
  }
  EXPECT_EQ(outcome, std::optional<bool>(true));
  EXPECT_EQ(store.poll(), std::nullopt);
  EXPECT_EQ(store.wait(), std::nullopt);
  EXPECT_EQ(store.stats().last_committed_step, 1);
}

TEST(AsyncStore, DestructorWaitsForThePendingSave) {
  ScratchDir dir;
  {
    CheckpointStore store({dir.path(), 2, 0, true});
    store.save(testing::sizedState(1, 4 << 20));
  }
  EXPECT_EQ(testing::readBytes(dir.file("latest")), "step-00000001.h5\n");
  EXPECT_EQ(readCheckpointFile(dir.file("step-00000001.h5")).step(), 1);
}

}  // namespace
}  // namespace tessera::trainer
