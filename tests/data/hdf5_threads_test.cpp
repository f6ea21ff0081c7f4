// HDF5 from several threads at once, as in a training process: loader workers reading a data
// file through HDF5 (compressed, so every read is an HDF5 call), the checkpoint writer thread
// writing and reading checkpoints, and a dataset being written and read back, all for a bounded
// time, with every byte checked. Run once with the linked HDF5 as it is (thread-safe or under the
// process-wide Hdf5Lock) and once with the process-wide lock forced, so that the lock itself is
// exercised on a thread-safe HDF5 too.
#include <gtest/gtest.h>

#include <ATen/ops/arange.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "data/dataset_writer.h"
#include "data/detail/hdf5.h"
#include "data/hdf5_library.h"
#include "data/image_file.h"
#include "data/loader.h"
#include "tests/data/data_test_support.h"
#include "trainer/checkpoint/checkpoint_file.h"

namespace tessera::data {
namespace {

using testing::ScratchDir;

TEST(Hdf5Library, ReportsWhetherItIsThreadSafe) {
  hbool_t safe = 0;
  ASSERT_GE(H5is_library_threadsafe(&safe), 0);
  EXPECT_EQ(hdf5ThreadSafe(), static_cast<bool>(safe));
  std::cout << "HDF5 " << hdf5Version() << " is " << (safe ? "" : "not ")
            << "thread-safe: the process-wide lock is " << (safe ? "skipped" : "taken") << "\n";
}

trainer::TrainingState checkpointState(int i) {
  trainer::TrainingState s;
  s.tensors.emplace_back("model/weight", at::arange(i, i + 4096, at::kFloat).reshape({64, 64}));
  s.tensors.emplace_back("optim/0/step", at::arange(i, i + 7, at::kLong));
  s.ints["step"] = i;
  s.reals["lr"] = 1.0 / (i + 1);
  s.texts["config"] = "run " + std::to_string(i);
  return s;
}

bool sameState(const trainer::TrainingState& a, const trainer::TrainingState& b) {
  if (a.tensors.size() != b.tensors.size() || a.ints != b.ints || a.reals != b.reals ||
      a.texts != b.texts) {
    return false;
  }
  for (std::size_t t = 0; t < a.tensors.size(); ++t) {
    if (a.tensors[t].first != b.tensors[t].first ||
        !a.tensors[t].second.equal(b.tensors[t].second)) {
      return false;
    }
  }
  return true;
}

class Hdf5ThreadsTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override { setHdf5LockAlways(GetParam()); }
  void TearDown() override { setHdf5LockAlways(false); }
  ScratchDir dir_;
};

TEST_P(Hdf5ThreadsTest, LoaderCheckpointsAndDatasetWritesRunTogether) {
  constexpr ImageShape kShape{8, 8, 3};
  constexpr std::int64_t kImages = 400;
  const std::string data = dir_.file("data.h5");
  testing::writeDataset(data, kImages, kShape, WriteOptions{16, 1, false});
  const std::vector<std::uint8_t> images = testing::makeImages(kImages, kShape);

  LoaderOptions o;
  o.path = data;
  o.batch_size = 8;
  o.seed = 5;
  o.workers = 3;
  o.prefetch = 6;
  o.cache = LoaderOptions::Cache::kNone;
  o.output = LoaderOptions::Output::kUint8;
  Loader loader(o, DataPosition{});
  ASSERT_FALSE(loader.cached());
  ASSERT_FALSE(loader.directReads()) << "compressed chunks must be read through HDF5";

  std::atomic<bool> stop{false};
  std::mutex failures_mutex;
  std::vector<std::string> failures;
  const auto fail = [&](const std::string& what) {
    {
      std::lock_guard<std::mutex> lock(failures_mutex);
      failures.push_back(what);
    }
    stop = true;
  };
  std::atomic<int> checkpoints{0}, datasets{0};

  std::thread checkpointer([&] {
    try {
      for (int i = 0; !stop; ++i) {
        const std::string path = dir_.file("checkpoint" + std::to_string(i % 2) + ".h5");
        const trainer::TrainingState state = checkpointState(i);
        trainer::writeCheckpointFile(path, state);
        if (!sameState(trainer::readCheckpointFile(path), state)) {
          fail("checkpoint " + std::to_string(i) + " read back differently");
        }
        ++checkpoints;
      }
    } catch (const std::exception& e) {
      fail(std::string("checkpoint thread: ") + e.what());
    }
  });

  std::thread converter([&] {
    try {
      constexpr ImageShape kSmall{5, 4, 1};
      constexpr std::int64_t kCount = 24;
      const std::vector<std::uint8_t> expected = testing::makeImages(kCount, kSmall);
      for (int i = 0; !stop; ++i) {
        const std::string path = dir_.file("written" + std::to_string(i % 2) + ".h5");
        testing::writeDataset(path, kCount, kSmall, WriteOptions{8, i % 2, true});
        const ImageFile file = ImageFile::open(path);
        std::vector<std::uint8_t> back(expected.size());
        file.readRange(0, kCount, back.data());
        std::vector<std::int64_t> labels(kCount);
        file.readLabels(0, kCount, labels.data());
        if (back != expected || labels.front() != 1000 || labels.back() != 1000 + kCount - 1) {
          fail("dataset " + std::to_string(i) + " read back differently");
        }
        ++datasets;
      }
    } catch (const std::exception& e) {
      fail(std::string("dataset thread: ") + e.what());
    }
  });

  // This thread consumes batches until every thread has done its share, within a deadline.
  constexpr std::int64_t kMinBatches = 300;
  constexpr int kMinCheckpoints = 20, kMinDatasets = 20;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  std::int64_t batches = 0;
  try {
    while (!stop) {
      const Batch b = loader.next();
      const std::uint8_t* got = b.images.data_ptr<std::uint8_t>();
      const std::int64_t* indices = b.indices.data_ptr<std::int64_t>();
      const std::int64_t* labels = b.labels.data_ptr<std::int64_t>();
      for (std::int64_t i = 0; i < o.batch_size; ++i) {
        const std::uint8_t* want = images.data() + indices[i] * kShape.bytes();
        if (!std::equal(want, want + kShape.bytes(), got + i * kShape.bytes()) ||
            labels[i] != 1000 + indices[i]) {
          fail("batch " + std::to_string(batches) + ": image " + std::to_string(indices[i]) +
               " differs from the file");
        }
      }
      ++batches;
      if (batches >= kMinBatches && checkpoints >= kMinCheckpoints && datasets >= kMinDatasets) {
        break;
      }
      if (std::chrono::steady_clock::now() > deadline) {
        fail("not done within 60 s: " + std::to_string(batches) + " batches, " +
             std::to_string(checkpoints) + " checkpoints, " + std::to_string(datasets) +
             " datasets");
      }
    }
  } catch (const std::exception& e) {
    fail(std::string("loader: ") + e.what());
  }
  stop = true;
  checkpointer.join();
  converter.join();
  for (const std::string& f : failures) ADD_FAILURE() << f;
  EXPECT_GE(batches, kMinBatches);
  EXPECT_GE(checkpoints, kMinCheckpoints);
  EXPECT_GE(datasets, kMinDatasets);
}

INSTANTIATE_TEST_SUITE_P(Hdf5Lock, Hdf5ThreadsTest, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? std::string("ProcessLockForced")
                                             : std::string("AsLinked");
                         });

}  // namespace
}  // namespace tessera::data
