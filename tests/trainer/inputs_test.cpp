// One uint8 -> float conversion: the images a training step sees (from uint8 or float loader
// batches, flipped or not), the ones evaluation and previews read (readImages) are bitwise
// equal for the same dataset images.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "data/image_file.h"
#include "data/image_transform.h"
#include "data/loader.h"
#include "tests/data/data_test_support.h"
#include "trainer/inference.h"

namespace tessera::trainer {
namespace {

at::Tensor stepInput(const data::Batch& b) {
  return data::modelInput(b.images, b.flips);
}

TEST(ModelInputs, TrainingEvaluationAndPreviewsAgreeBitwise) {
  data::testing::ScratchDir dir;
  for (const std::int64_t channels : {1, 3}) {
    const std::string path = dir.file("images" + std::to_string(channels) + ".h5");
    data::testing::writeDataset(path, 40, {6, 6, channels});
    const data::ImageFile file = data::ImageFile::open(path, "images");
    for (const bool hflip : {false, true}) {
      data::LoaderOptions o;
      o.path = path;
      o.batch_size = 8;
      o.seed = 9;
      o.hflip = hflip;
      o.output = data::LoaderOptions::Output::kUint8;
      data::Loader bytes(o, {});
      o.output = data::LoaderOptions::Output::kFloat;
      data::Loader floats(o, {});
      for (int step = 0; step < 4; ++step) {
        const data::Batch a = bytes.next(), b = floats.next();
        ASSERT_TRUE(a.indices.equal(b.indices));
        const at::Tensor x = stepInput(a);
        EXPECT_TRUE(x.equal(b.images)) << "uint8 vs float batches, hflip " << hflip;
        if (hflip) continue;
        std::vector<at::Tensor> read;
        for (std::int64_t i = 0; i < a.indices.numel(); ++i) {
          read.push_back(readImages(file, a.indices[i].item<std::int64_t>(), 1));
        }
        EXPECT_TRUE(x.equal(at::cat(read))) << "training vs readImages, channels " << channels;
      }
    }
    EXPECT_TRUE(readFirstImages(file, 5).equal(readImages(file, 0, 5)));
  }
}

}  // namespace
}  // namespace tessera::trainer
