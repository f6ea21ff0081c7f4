// LPIPS's properties and its weights file (the comparison with PyTorch is lpips_reference_test.py),
// and the safetensors reader.
#include "models/lpips.h"

#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "models/safetensors_reader.h"

namespace tessera::models {
namespace {

namespace fs = std::filesystem;

std::string tempPath(const std::string& name) {
  return (fs::temp_directory_path() /
          ("tessera_lpips_test_" + std::to_string(::getpid()) + "_" + name))
      .string();
}

// A safetensors file with a raw header (for malformed cases) and data.
void writeRaw(const std::string& path, const std::string& header, const std::string& data) {
  std::ofstream f(path, std::ios::binary);
  std::uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) f.put(static_cast<char>((n >> (8 * i)) & 0xff));
  f << header << data;
}

// float32 tensors with metadata.
void writeF32(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& ts,
              const std::string& metadata) {
  std::string header = "{\"__metadata__\": " + metadata, data;
  for (const auto& [name, t] : ts) {
    const at::Tensor c = t.to(at::kFloat).contiguous();
    std::string shape = "[";
    for (std::int64_t i = 0; i < c.dim(); ++i) shape += (i ? "," : "") + std::to_string(c.size(i));
    header += ", \"" + name + "\": {\"dtype\": \"F32\", \"shape\": " + shape +
              "], \"data_offsets\": [" + std::to_string(data.size()) + ", " +
              std::to_string(data.size() + c.nbytes()) + "]}";
    data.append(static_cast<const char*>(c.data_ptr()), c.nbytes());
  }
  writeRaw(path, header + "}", data);
}

std::vector<std::pair<std::string, at::Tensor>> lpipsTensors(Lpips& net) {
  std::vector<std::pair<std::string, at::Tensor>> ts;
  for (const auto& p : net->named_parameters()) ts.emplace_back(p.key(), p.value().abs());
  return ts;
}

TEST(SafetensorsReader, ReadsTensorsAndMetadata) {
  const std::string path = tempPath("read.safetensors");
  const at::Tensor a = torch::arange(6, torch::kFloat).view({2, 3});
  const at::Tensor b = torch::tensor({-5, 7}, torch::kLong);
  std::string data(static_cast<const char*>(a.data_ptr()), a.nbytes());
  data.append(static_cast<const char*>(b.data_ptr()), b.nbytes());
  writeRaw(path,
           "{\"__metadata__\":{\"format\":\"x\\\"y\\u00e9\"}, \"a\":{\"dtype\":\"F32\",\"shape\":"
           "[2,3],\"data_offsets\":[0,24]},\n \"b\" : {\"shape\":[2],\"dtype\":\"I64\","
           "\"data_offsets\":[24,40]}, \"s\":{\"dtype\":\"F64\",\"shape\":[],"
           "\"data_offsets\":[40,40]}}   ",
           data);
  // "s" claims 0 bytes for a scalar of 8: malformed.
  EXPECT_THROW(readSafetensors(path), InputError);
  writeRaw(path,
           "{\"__metadata__\":{\"format\":\"x\\\"y\\u00e9\"}, \"a\":{\"dtype\":\"F32\",\"shape\":"
           "[2,3],\"data_offsets\":[0,24]},\n \"b\" : {\"shape\":[2],\"dtype\":\"I64\","
           "\"data_offsets\":[24,40]}, \"e\":{\"dtype\":\"F64\",\"shape\":[0, 3],"
           "\"data_offsets\":[40,40]}}   ",
           data);
  const SafetensorsContents c = readSafetensors(path);
  EXPECT_EQ(c.metadata.at("format"), "x\"y\xc3\xa9");
  ASSERT_EQ(c.tensors.size(), 3u);
  EXPECT_EQ(c.tensors[0].first, "a");
  EXPECT_TRUE(torch::equal(c.tensors[0].second, a));
  EXPECT_TRUE(torch::equal(c.tensors[1].second, b));
  EXPECT_EQ(c.tensors[2].second.sizes(), (std::vector<std::int64_t>{0, 3}));
  fs::remove(path);
}

TEST(SafetensorsReader, RejectsMalformedFiles) {
  const std::string path = tempPath("bad.safetensors");
  const std::string four(16, '\0');
  for (const std::string& header :
       {std::string("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,8]}}"),
        std::string("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}"),
        std::string("{\"a\":{\"dtype\":\"Q4\",\"shape\":[4],\"data_offsets\":[0,16]}}"),
        std::string("{\"a\":{\"dtype\":\"F32\",\"shape\":[4]}}"),
        std::string("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}"),
        std::string("[1, 2]"),
        std::string("{\"a\":{\"dtype\":\"F32\",\"shape\":[-4],\"data_offsets\":[0,16]}}")}) {
    writeRaw(path, header, four);
    EXPECT_THROW(readSafetensors(path), InputError) << header;
  }
  {
    std::ofstream f(path, std::ios::binary);
    f << "abc";
  }
  EXPECT_THROW(readSafetensors(path), InputError);
  EXPECT_THROW(readSafetensors(tempPath("missing")), InputError);
  fs::remove(path);
}

TEST(Lpips, DistanceProperties) {
  torch::manual_seed(3);
  Lpips net;
  {
    torch::NoGradGuard g;  // non-negative heads, as trained ones are
    for (auto& p : net->named_parameters()) {
      if (p.key().rfind("lin", 0) == 0) p.value().abs_();
    }
  }
  for (const auto& p : net->parameters()) EXPECT_FALSE(p.requires_grad());
  EXPECT_FALSE(net->is_training());
  const at::Tensor x = torch::rand({3, 3, 32, 32}) * 2 - 1;
  const at::Tensor y = torch::rand({3, 3, 32, 32}) * 2 - 1;
  const at::Tensor dxy = net->forward(x, y);
  EXPECT_EQ(dxy.sizes(), (std::vector<std::int64_t>{3}));
  EXPECT_TRUE((dxy > 0).all().item<bool>());
  EXPECT_TRUE(torch::allclose(dxy, net->forward(y, x), 1e-5, 1e-7));
  EXPECT_EQ(net->forward(x, x).abs().max().item<float>(), 0);
  // Gray images are RGB with equal channels.
  const at::Tensor g = torch::rand({2, 1, 32, 32});
  const at::Tensor h = torch::rand({2, 1, 32, 32});
  EXPECT_TRUE(torch::allclose(net->forward(g, h),
                              net->forward(g.expand({-1, 3, -1, -1}), h.expand({-1, 3, -1, -1}))));
  // The gradient reaches the images (a perceptual loss), finite.
  const at::Tensor xi = x.clone().requires_grad_(true);
  net->forward(xi, y).sum().backward();
  EXPECT_TRUE(torch::isfinite(xi.grad()).all().item<bool>());
  EXPECT_GT(xi.grad().abs().sum().item<double>(), 0);
}

TEST(Lpips, LoadsItsFileAndRejectsOthers) {
  torch::manual_seed(4);
  Lpips source;
  const auto tensors = lpipsTensors(source);
  ASSERT_EQ(tensors.size(), 13u * 2 + 5);
  const std::string path = tempPath("weights.safetensors");
  writeF32(path, tensors, "{\"format\": \"tessera-lpips-vgg16\"}");
  Lpips loaded(path);
  const auto lp = loaded->named_parameters();
  for (const auto& [name, t] : tensors) EXPECT_TRUE(torch::equal(lp[name], t)) << name;
  EXPECT_FALSE(lp["lin0.weight"].requires_grad());

  auto without = tensors;
  without.pop_back();
  writeF32(path, without, "{\"format\": \"tessera-lpips-vgg16\"}");
  EXPECT_THROW(Lpips{path}, InputError);
  writeF32(path, tensors, "{\"format\": \"something-else\"}");
  EXPECT_THROW(Lpips{path}, InputError);
  auto extra = tensors;
  extra.emplace_back("lin5.weight", torch::ones({1, 8, 1, 1}));
  writeF32(path, extra, "{\"format\": \"tessera-lpips-vgg16\"}");
  EXPECT_THROW(Lpips{path}, InputError);
  auto negative = tensors;
  for (auto& [name, t] : negative) {
    if (name == "lin3.weight") t = -t;
  }
  writeF32(path, negative, "{\"format\": \"tessera-lpips-vgg16\"}");
  EXPECT_THROW(Lpips{path}, InputError);
  auto misshapen = tensors;
  misshapen[0].second = torch::ones({64, 3, 5, 5});
  writeF32(path, misshapen, "{\"format\": \"tessera-lpips-vgg16\"}");
  EXPECT_THROW(Lpips{path}, InputError);
  fs::remove(path);
}

}  // namespace
}  // namespace tessera::models
