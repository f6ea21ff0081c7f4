#include "models/vqvae.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "models/parameters.h"

namespace tessera::models {
namespace {

TEST(VqVae, FashionMnistModelHasBenchParameterCount) {
  VqVaeOptions o;  // defaults are shared/bench/BENCH.md's vqvae-fmnist
  VqVae model(o);
  EXPECT_EQ(trainableParameterCount(*model), 658625);
  const VqVaeOutput out = model->forward(torch::rand({2, 1, 28, 28}) * 2 - 1);
  EXPECT_EQ(out.reconstruction.sizes(), (std::vector<std::int64_t>{2, 1, 28, 28}));
  EXPECT_EQ(out.codes.sizes(), (std::vector<std::int64_t>{2, 7, 7}));
  EXPECT_EQ(out.latents.sizes(), (std::vector<std::int64_t>{2, 64, 7, 7}));
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
