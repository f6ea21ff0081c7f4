#include "models/vqvae.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "models/parameters.h"

namespace tessera::models {
namespace {

TEST(VqVae, FashionMnistModelHasBenchParameterCount) {
  VqVaeOptions o;  // defaults are docs/benchmarks.md's vqvae-fmnist
  VqVae model(o);
  EXPECT_EQ(trainableParameterCount(*model), 658625);
  const VqVaeOutput out = model->forward(torch::rand({2, 1, 28, 28}) * 2 - 1);
  EXPECT_EQ(out.reconstruction.sizes(), (std::vector<std::int64_t>{2, 1, 28, 28}));
  EXPECT_EQ(out.codes.sizes(), (std::vector<std::int64_t>{2, 7, 7}));
  EXPECT_EQ(out.latents.sizes(), (std::vector<std::int64_t>{2, 64, 7, 7}));
}

// Multiply-adds of vqvae-fmnist, layer by layer (28 -> 14 -> 7 and back):
//   encoder  1*64*16*14^2 + 64*128*16*7^2 + 128*128*9*7^2 + 2*(128*32*9 + 32*128)*7^2 + 128*64*7^2
//   decoder  64*128*9*7^2 + 2*(128*32*9 + 32*128)*7^2 + 128*64*16*7^2 + 64*1*16*14^2
// = 32,514,048; times 2 FLOPs and 3 passes, plus 2 * 7^2 * 64 * 512 for the codebook distances.
TEST(VqVae, TrainingFlopsPerImageCountsEveryLayer) {
  EXPECT_DOUBLE_EQ(vqvaeTrainingFlopsPerImage(VqVaeOptions{}, 28),
                   2.0 * 3 * 32514048 + 2.0 * 49 * 64 * 512);
  VqVaeOptions three_stages;
  three_stages.downsample = 3;
  EXPECT_GT(vqvaeTrainingFlopsPerImage(three_stages, 32), 0);
}

TEST(VqVae, ConfigurableFamily) {
  VqVaeOptions o;
  o.in_channels = 3;
  o.hidden = 32;
  o.res_hidden = 8;
  o.res_blocks = 1;
  o.downsample = 3;
  o.quantizer.codebook_size = 16;
  o.quantizer.code_dim = 8;
  VqVae model(o);
  const VqVaeOutput out = model->forward(torch::rand({1, 3, 32, 32}));
  EXPECT_EQ(out.reconstruction.sizes(), (std::vector<std::int64_t>{1, 3, 32, 32}));
  EXPECT_EQ(out.codes.sizes(), (std::vector<std::int64_t>{1, 4, 4}));
  EXPECT_TRUE(torch::allclose(model->decodeCodes(out.codes), out.reconstruction));
}

}  // namespace
}  // namespace tessera::models
