// The loader: batch contents, independence from threads, caching and world size, keyed
// augmentation, exact resume, error propagation and shutdown at any moment.
#include <gtest/gtest.h>

#include <ATen/Context.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/randint.h>

#include <cstring>
#include <filesystem>
#include <set>
#include <vector>

#include "core/error.h"
#include "data/image_transform.h"
#include "data/loader.h"
#include "tessera/config.h"
#include "tests/data/data_test_support.h"

#if TESSERA_WITH_CUDA
#include <ATen/cuda/Sleep.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace tessera::data {
namespace {

using testing::ScratchDir;

constexpr ImageShape kShape{4, 3, 3};

LoaderOptions baseOptions(const std::string& path) {
  LoaderOptions o;
  o.path = path;
  o.batch_size = 4;
  o.seed = 77;
  o.prefetch = 2;
  o.workers = 1;
  return o;
}

std::vector<float> floatsOf(const at::Tensor& t) {
  const float* p = t.data_ptr<float>();
  return std::vector<float>(p, p + t.numel());
}

std::vector<std::int64_t> longsOf(const at::Tensor& t) {
  const std::int64_t* p = t.data_ptr<std::int64_t>();
  return std::vector<std::int64_t>(p, p + t.numel());
}

// Image `index` of writeDataset()'s file as the loader must deliver it (CHW, [-1, 1]).
std::vector<float> expectedImage(std::int64_t index, bool flipped) {
  std::vector<float> out(static_cast<std::size_t>(kShape.bytes()));
  for (std::int64_t c = 0; c < kShape.channels; ++c) {
    for (std::int64_t h = 0; h < kShape.height; ++h) {
      for (std::int64_t w = 0; w < kShape.width; ++w) {
        const std::int64_t src_w = flipped ? kShape.width - 1 - w : w;
        const std::uint8_t v =
            testing::pixelOf(index, (h * kShape.width + src_w) * kShape.channels + c);
        out[static_cast<std::size_t>((c * kShape.height + h) * kShape.width + w)] =
            (static_cast<float>(v) - 127.5f) * (1.0f / 127.5f);
      }
    }
  }
  return out;
}

std::vector<float> imageAt(const Batch& b, std::int64_t i) {
  const auto all = floatsOf(b.images);
  return std::vector<float>(all.begin() + i * kShape.bytes(),
                            all.begin() + (i + 1) * kShape.bytes());
}

class LoaderTest : public ::testing::Test {
 protected:
  void SetUp() override { testing::writeDataset(path(), 50, kShape, WriteOptions{8, 0, false}); }
  std::string path() const { return dir_.file("d.h5"); }
  ScratchDir dir_;
};

TEST_F(LoaderTest, BatchesHoldTheSampledImagesLabelsAndPositions) {
  LoaderOptions o = baseOptions(path());
  o.cache = LoaderOptions::Cache::kNone;
  Loader loader(o, DataPosition{});
  EXPECT_FALSE(loader.cached());
  EXPECT_TRUE(loader.hasLabels());
  EXPECT_EQ(loader.stepsPerEpoch(), 12);
  const ShardedSampler sampler(50, 77);
  DataPosition expected_pos{0, 0};
  for (int step = 0; step < 30; ++step) {
    const Batch b = loader.next();
    EXPECT_EQ(b.position, sampler.normalize(expected_pos, 1, 4));
    ASSERT_EQ(b.images.sizes(), (at::IntArrayRef{4, 3, 4, 3}));
    EXPECT_EQ(b.images.scalar_type(), at::kFloat);
    const auto indices = longsOf(b.indices);
    EXPECT_EQ(indices, sampler.batchIndices(b.position, 0, 1, 4));
    const auto labels = longsOf(b.labels);
    for (int i = 0; i < 4; ++i) {
      EXPECT_EQ(labels[static_cast<std::size_t>(i)], 1000 + indices[static_cast<std::size_t>(i)]);
      EXPECT_EQ(imageAt(b, i), expectedImage(indices[static_cast<std::size_t>(i)], false));
    }
    expected_pos = b.next;
  }
  EXPECT_EQ(expected_pos.epoch, 2);  // 30 steps of 12 per epoch
}

// uint8 batches, once converted by modelInput(), are bitwise the float batches (flips included).
TEST_F(LoaderTest, SameBatchesWhateverTheWorkersCachePrefetchAndFormat) {
  std::vector<std::vector<float>> reference;
  using Cache = LoaderOptions::Cache;
  using Output = LoaderOptions::Output;
  struct Setup {
    int workers, prefetch;
    Cache cache;
    Output output;
  };
  for (const Setup& s :
       {Setup{1, 1, Cache::kNone, Output::kFloat}, Setup{3, 5, Cache::kMemory, Output::kFloat},
        Setup{2, 2, Cache::kNone, Output::kUint8}, Setup{4, 1, Cache::kAuto, Output::kFloat},
        Setup{1, 3, Cache::kMemory, Output::kUint8}}) {
    LoaderOptions o = baseOptions(path());
    o.workers = s.workers;
    o.prefetch = s.prefetch;
    o.cache = s.cache;
    o.output = s.output;
    o.hflip = true;
    Loader loader(o, DataPosition{});
    EXPECT_EQ(loader.cached(), s.cache != Cache::kNone);
    for (std::size_t k = 0; k < 26; ++k) {
      const Batch batch = loader.next();
      const at::Tensor& raw = batch.images;
      if (s.output == Output::kUint8) {
        ASSERT_EQ(raw.scalar_type(), at::kByte);
        ASSERT_EQ(raw.sizes().vec(),
                  (std::vector<std::int64_t>{4, kShape.height, kShape.width, kShape.channels}));
      }
      const auto images = floatsOf(modelInput(raw, batch.flips));
      if (reference.size() <= k) {
        reference.push_back(images);
      } else {
        EXPECT_EQ(images, reference[k]) << "step " << k << " with " << s.workers << " workers";
      }
    }
  }
}

// Converted uint8 batches also have the float batches' layout (NCHW strides). For one channel a
// permuted NHWC tensor counts as contiguous and as channels-last, and convolutions then took
// the channels-last kernels: same values in, different rounding out (training diverged from
// the float path by step 50).
TEST(ModelInput, HasTheFloatBatchLayout) {
  for (const std::int64_t channels : {1, 3}) {
    const at::Tensor bytes = at::randint(0, 256, {4, 5, 6, channels}, at::kByte);
    const at::Tensor x = modelInput(bytes);
    const at::Tensor reference = at::empty({4, channels, 5, 6}, at::kFloat);
    EXPECT_EQ(x.sizes(), reference.sizes()) << channels << " channels";
    EXPECT_EQ(x.strides(), reference.strides()) << channels << " channels";
    EXPECT_EQ(x.suggest_memory_format(), at::MemoryFormat::Contiguous) << channels << " channels";
  }
}

TEST_F(LoaderTest, RanksTogetherSeeExactlyTheSingleProcessBatch) {
  LoaderOptions single = baseOptions(path());
  single.batch_size = 6;
  single.hflip = true;
  Loader one(single, DataPosition{});
  std::vector<std::unique_ptr<Loader>> ranks;
  for (int r = 0; r < 3; ++r) {
    LoaderOptions o = single;
    o.batch_size = 2;
    o.world = 3;
    o.rank = r;
    ranks.push_back(std::make_unique<Loader>(o, DataPosition{}));
  }
  for (int step = 0; step < 20; ++step) {
    const Batch whole = one.next();
    std::vector<float> joined;
    std::vector<std::int64_t> joined_indices;
    for (auto& rank : ranks) {
      const Batch part = rank->next();
      EXPECT_EQ(part.position, whole.position);
      const auto f = floatsOf(part.images);
      joined.insert(joined.end(), f.begin(), f.end());
      const auto idx = longsOf(part.indices);
      joined_indices.insert(joined_indices.end(), idx.begin(), idx.end());
    }
    EXPECT_EQ(joined_indices, longsOf(whole.indices));
    EXPECT_EQ(joined, floatsOf(whole.images)) << "step " << step;
  }
}

TEST_F(LoaderTest, FlipsAreKeyedBySeedEpochAndIndex) {
  LoaderOptions o = baseOptions(path());
  o.hflip = true;
  o.batch_size = 10;
  Loader loader(o, DataPosition{});
  // index -> flip decision, per epoch
  std::vector<std::vector<int>> flips(3, std::vector<int>(50, -1));
  int flipped = 0, total = 0;
  for (int step = 0; step < 15; ++step) {
    const Batch b = loader.next();
    const auto indices = longsOf(b.indices);
    for (int i = 0; i < 10; ++i) {
      const std::int64_t idx = indices[static_cast<std::size_t>(i)];
      const auto img = imageAt(b, i);
      const bool is_plain = img == expectedImage(idx, false);
      const bool is_mirror = img == expectedImage(idx, true);
      ASSERT_TRUE(is_plain || is_mirror) << "image " << idx << " is neither itself nor mirrored";
      flips[static_cast<std::size_t>(b.position.epoch)][static_cast<std::size_t>(idx)] = is_mirror;
      flipped += is_mirror;
      ++total;
    }
  }
  EXPECT_GT(flipped, total / 4);
  EXPECT_LT(flipped, 3 * total / 4);
  EXPECT_NE(flips[0], flips[1]) << "augmentation did not change between epochs";
  // A second loader with a different seed flips differently.
  o.seed = 78;
  Loader other(o, DataPosition{});
  const Batch b = other.next();
  int differs = 0;
  const auto indices = longsOf(b.indices);
  for (int i = 0; i < 10; ++i) {
    const std::int64_t idx = indices[static_cast<std::size_t>(i)];
    const bool mirror = imageAt(b, i) == expectedImage(idx, true);
    differs += mirror != static_cast<bool>(flips[0][static_cast<std::size_t>(idx)]);
  }
  EXPECT_GT(differs, 0);
}

TEST_F(LoaderTest, ResumingAtABatchPositionContinuesExactly) {
  LoaderOptions o = baseOptions(path());
  o.hflip = true;
  o.workers = 2;
  std::vector<Batch> run;
  {
    Loader loader(o, DataPosition{});
    for (int i = 0; i < 16; ++i) run.push_back(loader.next());
  }
  for (const int resume_at : {5, 11, 12, 14}) {
    Loader resumed(o, run[static_cast<std::size_t>(resume_at)].position);
    for (int i = resume_at; i < 16; ++i) {
      const Batch b = resumed.next();
      EXPECT_EQ(b.position, run[static_cast<std::size_t>(i)].position);
      EXPECT_EQ(floatsOf(b.images), floatsOf(run[static_cast<std::size_t>(i)].images));
    }
  }
}

TEST_F(LoaderTest, WorkerErrorsSurfaceWithTheirMessage) {
  const std::string zpath = dir_.file("z.h5");
  testing::writeDataset(zpath, 64, ImageShape{8, 8, 1}, WriteOptions{8, 5, false});
  LoaderOptions o = baseOptions(zpath);
  o.cache = LoaderOptions::Cache::kNone;
  o.prefetch = 1;
  Loader loader(o, DataPosition{});
  // The file is cut short under the running loader, as when storage fails mid-run.
  std::filesystem::resize_file(zpath, 2048);
  std::string message;
  for (int i = 0; i < 40 && message.empty(); ++i) {
    try {
      loader.next();
    } catch (const Error& e) {
      message = e.what();
    }
  }
  ASSERT_FALSE(message.empty()) << "reading a truncated file never failed";
  EXPECT_NE(message.find("reading images"), std::string::npos) << message;
  EXPECT_NE(message.find("z.h5"), std::string::npos) << message;
  try {
    loader.next();
    ADD_FAILURE() << "a failed loader produced a batch";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), message);
  }
}

TEST_F(LoaderTest, StopsCleanlyAtAnyMoment) {
  LoaderOptions o = baseOptions(path());
  o.workers = 3;
  o.prefetch = 6;
  o.cache = LoaderOptions::Cache::kNone;
  { Loader idle(o, DataPosition{}); }  // workers may still be starting
  {
    Loader partial(o, DataPosition{});
    partial.next();
    partial.next();
  }  // workers blocked on a full queue
  {
    o.prefetch = 1;
    Loader narrow(o, DataPosition{3, 17});
    EXPECT_EQ(narrow.next().position, (DataPosition{3, 17}));
  }
}

// A batch's buffer is never written again while the consumer holds any reference to it (the
// tensor or a view), whether or not batches are pinned. Pageable buffers are recycled once
// dropped; pinned ones are never recycled by the loader (see the next test).
class HeldBatchTest : public LoaderTest, public ::testing::WithParamInterface<bool> {};

TEST_P(HeldBatchTest, HeldBatchesAreNeverOverwritten) {
  const bool pinned = GetParam();
  // A LibTorch with CUDA but no GPU throws on pinned allocation; a build without CUDA ignores
  // pin_memory. Only the pinned variant is skipped, and only without a GPU.
  if (pinned && !at::hasCUDA()) GTEST_SKIP() << "pinned batches need a CUDA device";
  for (const auto output : {LoaderOptions::Output::kFloat, LoaderOptions::Output::kUint8}) {
    LoaderOptions o = baseOptions(path());
    o.workers = 2;
    o.prefetch = 3;
    o.pin_memory = pinned;
    o.output = output;
    o.hflip = true;
    Loader loader(o, DataPosition{});
    const Batch held = loader.next();
    const at::Tensor view = loader.next().images.narrow(0, 1, 2);  // a view keeps its buffer too
    const at::Tensor held_copy = held.images.clone();
    const at::Tensor view_copy = view.clone();
    if (pinned) {
      EXPECT_TRUE(held.images.is_pinned());
    }
    std::set<const void*> buffers;
    for (int i = 0; i < 60; ++i) {
      const Batch b = loader.next();
      const void* storage = b.images.storage().data();
      EXPECT_NE(storage, held.images.storage().data()) << "batch " << i << " reuses a held buffer";
      EXPECT_NE(storage, view.storage().data()) << "batch " << i << " reuses a viewed buffer";
      buffers.insert(storage);
    }
    EXPECT_TRUE(held.images.equal(held_copy)) << "a held batch changed";
    EXPECT_TRUE(view.equal(view_copy)) << "a held view changed";
    if (!pinned) {
      EXPECT_LE(buffers.size(), 3u + 2u + 4u) << "dropped batches' buffers were not reused";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(PinMemory, HeldBatchTest, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? std::string("Pinned") : std::string("Pageable");
                         });

// The training step copies a pinned batch to the GPU with non_blocking=true and drops it at once.
// The copy is held back behind a GPU sleep on its stream while the loader builds many more
// batches: none may reuse the dropped buffer before the copy has read it, so the GPU ends up with
// the batch as it was handed out. (A loader that recycled a buffer once its last reference was
// gone overwrote it under the queued copy.)
TEST_F(LoaderTest, PinnedBatchIsNotReusedBeforeItsCopyToTheGpuCompletes) {
#if !TESSERA_WITH_CUDA
  GTEST_SKIP() << "built without CUDA: batches are never pinned";
#else
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  LoaderOptions o = baseOptions(path());
  o.workers = 2;
  o.prefetch = 3;
  o.pin_memory = true;
  o.output = LoaderOptions::Output::kUint8;
  Loader loader(o, DataPosition{});
  Batch batch = loader.next();
  ASSERT_TRUE(batch.images.is_pinned());
  const at::Tensor expected = batch.images.clone();
  const void* buffer = batch.images.storage().data();
  c10::cuda::CUDAStream stream = c10::cuda::getStreamFromPool();
  at::Tensor on_gpu;
  {
    c10::cuda::CUDAStreamGuard guard(stream);
    at::cuda::sleep(std::int64_t{2} << 30);  // about a second: the copy below stays queued
    on_gpu = batch.images.to(at::Device(at::kCUDA), /*non_blocking=*/true);
  }
  batch = Batch{};  // the consumer's last reference goes, as after a training step's copy
  bool reused = false;
  for (int i = 0; i < 60; ++i) reused |= loader.next().images.storage().data() == buffer;
  const bool copy_was_pending = !stream.query();
  stream.synchronize();
  EXPECT_TRUE(on_gpu.cpu().equal(expected)) << "the batch changed under its pending copy";
  if (copy_was_pending) {
    EXPECT_FALSE(reused) << "the buffer was handed out again while its copy was queued";
  } else {
    ADD_FAILURE() << "the GPU sleep ended before the loader had built 60 batches; the test "
                     "proved nothing";
  }
#endif
}

TEST_F(LoaderTest, MeasuresTheTimeSpentWaiting) {
  LoaderOptions o = baseOptions(path());
  Loader loader(o, DataPosition{});
  double last = loader.waitSeconds();
  EXPECT_GE(last, 0.0);
  for (int i = 0; i < 10; ++i) {
    loader.next();
    EXPECT_GE(loader.waitSeconds(), last);
    last = loader.waitSeconds();
  }
}

TEST_F(LoaderTest, CacheAutoFollowsTheLimit) {
  LoaderOptions o = baseOptions(path());
  o.cache_max_bytes = 100;  // the file holds 50 x 36 bytes
  EXPECT_FALSE(Loader(o, DataPosition{}).cached());
  o.cache_max_bytes = 1e6;
  EXPECT_TRUE(Loader(o, DataPosition{}).cached());
}

TEST_F(LoaderTest, RejectsBadOptionsAndFilesBeforeStarting) {
  auto message = [](const LoaderOptions& o) -> std::string {
    try {
      Loader loader(o, DataPosition{});
    } catch (const InputError& e) {
      return e.what();
    }
    return "no error";
  };
  LoaderOptions o = baseOptions(path());
  o.rank = 2;
  o.world = 2;
  EXPECT_NE(message(o).find("rank 2 is outside a world of 2"), std::string::npos) << message(o);
  o = baseOptions(path());
  o.batch_size = 26;
  o.world = 2;
  EXPECT_NE(message(o).find("larger than the dataset (50 images)"), std::string::npos)
      << message(o);
  o = baseOptions(path());
  o.workers = 0;
  EXPECT_NE(message(o).find("workers"), std::string::npos) << message(o);
  o = baseOptions(path());
  o.expected = ImageShape{28, 28, 1};
  EXPECT_NE(message(o).find("expected images of 28x28x1"), std::string::npos) << message(o);
  o = baseOptions(dir_.file("missing.h5"));
  EXPECT_NE(message(o).find("does not exist"), std::string::npos) << message(o);
}

}  // namespace
}  // namespace tessera::data
