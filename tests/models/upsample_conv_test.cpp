#include "models/upsample_conv.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace tessera::models {
namespace {

// Both forms of the layer must be ConvTranspose2d(k4, s2, p1): same initial values for the
// same seed, same outputs and same gradients.
TEST(UpsampleConv, EqualsConvTranspose2d) {
  for (const UpsampleMode mode : {UpsampleMode::kTransposed, UpsampleMode::kSubPixel})
    for (auto [in, out] : {std::pair<int, int>{5, 3}, {8, 1}, {2, 6}}) {
      torch::manual_seed(42);
      torch::nn::ConvTranspose2d ref(
          torch::nn::ConvTranspose2dOptions(in, out, 4).stride(2).padding(1));
      torch::manual_seed(42);
      UpsampleConv mine(in, out, mode);
      ASSERT_TRUE(torch::equal(mine->named_parameters()["weight"], ref->weight));
      ASSERT_TRUE(torch::equal(mine->named_parameters()["bias"], ref->bias));

      const at::Tensor x = torch::randn({3, in, 7, 5});
      const at::Tensor g = torch::randn({3, out, 14, 10});
      const at::Tensor xa = x.clone().requires_grad_(true), xb = x.clone().requires_grad_(true);
      const at::Tensor ya = mine->forward(xa), yb = ref->forward(xb);
      ASSERT_EQ(ya.sizes(), yb.sizes());
      EXPECT_TRUE(torch::allclose(ya, yb, 1e-5, 1e-5)) << (ya - yb).abs().max().item<double>();
      (ya * g).sum().backward();
      (yb * g).sum().backward();
      EXPECT_TRUE(torch::allclose(xa.grad(), xb.grad(), 1e-5, 1e-5));
      EXPECT_TRUE(torch::allclose(mine->named_parameters()["weight"].grad(), ref->weight.grad(),
                                  1e-4, 1e-5));
      EXPECT_TRUE(
          torch::allclose(mine->named_parameters()["bias"].grad(), ref->bias.grad(), 1e-4, 1e-5));
    }
}

}  // namespace
}  // namespace tessera::models
