// Converter round trips: generated image folders, IDX and CIFAR-10 files, and the real
// Fashion-MNIST files of Debian's dataset-fashion-mnist.
#include <gtest/gtest.h>
#include <stb_image_write.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <numeric>
#include <vector>

#include "core/error.h"
#include "data/converters.h"
#include "data/image_file.h"
#include "tests/data/data_test_support.h"

namespace tessera::data {
namespace {

using testing::ScratchDir;

#define EXPECT_CONTAINS(haystack, needle) \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << (haystack)

template <typename F>
std::string inputError(F&& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "not an InputError: " << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no error";
  return "";
}

std::vector<std::uint8_t> readAll(const ImageFile& f) {
  std::vector<std::uint8_t> out(static_cast<std::size_t>(f.size() * f.shape().bytes()));
  f.readRange(0, f.size(), out.data());
  return out;
}

std::vector<std::int64_t> labelsOf(const ImageFile& f) {
  std::vector<std::int64_t> out(static_cast<std::size_t>(f.size()));
  f.readLabels(0, f.size(), out.data());
  return out;
}

std::vector<char> fileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<char>(std::istreambuf_iterator<char>(in), {});
}

void writePng(const std::filesystem::path& path, int w, int h, int c,
              const std::vector<std::uint8_t>& pixels) {
  std::filesystem::create_directories(path.parent_path());
  ASSERT_NE(stbi_write_png(path.string().c_str(), w, h, c, pixels.data(), w * c), 0) << path;
}

std::vector<std::uint8_t> pattern(int w, int h, int c, int seed) {
  std::vector<std::uint8_t> p(static_cast<std::size_t>(w * h * c));
  for (std::size_t i = 0; i < p.size(); ++i) p[i] = static_cast<std::uint8_t>(seed * 40 + i * 3);
  return p;
}

TEST(ImageFolderConverter, RoundTripWithLabelsFromSubFolders) {
  ScratchDir dir;
  const auto root = dir.path() / "photos";
  const auto gray = pattern(6, 4, 1, 1);
  const auto rgb = pattern(6, 4, 3, 2);
  const auto rgba = pattern(6, 4, 4, 3);
  writePng(root / "cats" / "b.png", 6, 4, 1, gray);
  writePng(root / "cats" / "a.png", 6, 4, 3, rgb);
  writePng(root / "dogs" / "z.png", 6, 4, 4, rgba);
  std::ofstream(root / "dogs" / "notes.txt") << "not an image";

  const ConvertResult r = convertImageFolder(root.string(), dir.file("out.h5"),
                                             ImageFolderOptions{0, true}, WriteOptions{});
  EXPECT_EQ(r.images, 3);
  EXPECT_EQ(r.shape, (ImageShape{4, 6, 3}));
  EXPECT_EQ(r.classes, 2);
  const ImageFile f = ImageFile::open(dir.file("out.h5"));
  EXPECT_EQ(f.shape(), (ImageShape{4, 6, 3}));
  EXPECT_EQ(labelsOf(f), (std::vector<std::int64_t>{0, 0, 1}));
  const auto px = readAll(f);
  // Sorted by path: cats/a.png (RGB), cats/b.png (gray -> RGB), dogs/z.png (RGBA -> RGB).
  for (int p = 0; p < 24; ++p) {
    for (int c = 0; c < 3; ++c) {
      EXPECT_EQ(px[static_cast<std::size_t>(p * 3 + c)], rgb[static_cast<std::size_t>(p * 3 + c)]);
      EXPECT_EQ(px[static_cast<std::size_t>(72 + p * 3 + c)], gray[static_cast<std::size_t>(p)]);
      EXPECT_EQ(px[static_cast<std::size_t>(144 + p * 3 + c)],
                rgba[static_cast<std::size_t>(p * 4 + c)]);
    }
  }
}

TEST(ImageFolderConverter, GrayFoldersStayOneChannelAndConvertDeterministically) {
  ScratchDir dir;
  const auto root = dir.path() / "g";
  for (int i = 0; i < 5; ++i)
    writePng(root / ("img" + std::to_string(i) + ".png"), 5, 5, 1, pattern(5, 5, 1, i));
  convertImageFolder(root.string(), dir.file("a.h5"), {}, WriteOptions{2, 3, false});
  convertImageFolder(root.string(), dir.file("b.h5"), {}, WriteOptions{2, 3, false});
  const ImageFile f = ImageFile::open(dir.file("a.h5"));
  EXPECT_EQ(f.shape(), (ImageShape{5, 5, 1}));
  EXPECT_FALSE(f.hasLabels());
  EXPECT_EQ(f.chunkImages(), 2);
  EXPECT_TRUE(f.compressed());
  const auto px = readAll(f);
  const auto third = pattern(5, 5, 1, 2);
  EXPECT_TRUE(std::equal(third.begin(), third.end(), px.begin() + 50));
  EXPECT_EQ(fileBytes(dir.file("a.h5")), fileBytes(dir.file("b.h5")));
}

TEST(ImageFolderConverter, CentreCropsAndResizes) {
  ScratchDir dir;
  const auto root = dir.path() / "mixed";
  // 6x4 (W x H): the centred 4x4 square starts at column 1.
  const auto wide = pattern(6, 4, 3, 5);
  writePng(root / "a_wide.png", 6, 4, 3, wide);
  // 3x9 of one colour: any crop and resize of it is that colour.
  std::vector<std::uint8_t> solid(3 * 9 * 3);
  for (std::size_t i = 0; i < solid.size(); ++i)
    solid[i] = static_cast<std::uint8_t>(10 + i % 3 * 50);
  writePng(root / "b_tall.png", 3, 9, 3, solid);

  convertImageFolder(root.string(), dir.file("crop.h5"), ImageFolderOptions{4, false}, {});
  const ImageFile f = ImageFile::open(dir.file("crop.h5"));
  EXPECT_EQ(f.shape(), (ImageShape{4, 4, 3}));
  const auto px = readAll(f);
  for (int y = 0; y < 4; ++y) {
    for (int x = 0; x < 4; ++x) {
      for (int c = 0; c < 3; ++c) {
        EXPECT_EQ(px[static_cast<std::size_t>((y * 4 + x) * 3 + c)],
                  wide[static_cast<std::size_t>((y * 6 + x + 1) * 3 + c)]);
        EXPECT_NEAR(px[static_cast<std::size_t>(48 + (y * 4 + x) * 3 + c)], 10 + c * 50, 1);
      }
    }
  }
  convertImageFolder(root.string(), dir.file("small.h5"), ImageFolderOptions{2, false}, {});
  EXPECT_EQ(ImageFile::open(dir.file("small.h5")).shape(), (ImageShape{2, 2, 3}));
}

TEST(ImageFolderConverter, BadFoldersGiveClearErrors) {
  ScratchDir dir;
  const auto root = dir.path() / "bad";
  std::filesystem::create_directories(root);
  EXPECT_CONTAINS(inputError([&] { convertImageFolder(root.string(), dir.file("o.h5"), {}, {}); }),
                  "holds no images");
  EXPECT_CONTAINS(inputError([&] {
                    convertImageFolder((root / "missing").string(), dir.file("o.h5"), {}, {});
                  }),
                  "does not exist");
  writePng(root / "a.png", 4, 4, 1, pattern(4, 4, 1, 0));
  writePng(root / "b.png", 5, 4, 1, pattern(5, 4, 1, 0));
  const std::string sizes =
      inputError([&] { convertImageFolder(root.string(), dir.file("o.h5"), {}, {}); });
  EXPECT_CONTAINS(sizes, "b.png' is 5x4");
  EXPECT_CONTAINS(sizes, "--size");
  EXPECT_CONTAINS(inputError([&] {
                    convertImageFolder(root.string(), dir.file("o.h5"), {4, true}, {});
                  }),
                  "not inside a class sub-folder");
  std::ofstream(root / "c.png") << "this is not a PNG";
  EXPECT_CONTAINS(inputError([&] {
                    convertImageFolder(root.string(), dir.file("o.h5"), {4, false}, {});
                  }),
                  "c.png");
  EXPECT_FALSE(std::filesystem::exists(dir.file("o.h5")));
}

void writeIdx(const std::string& path, const std::vector<std::uint32_t>& dims,
              const std::vector<std::uint8_t>& data, bool gzip) {
  std::vector<std::uint8_t> bytes = {0, 0, 0x08, static_cast<std::uint8_t>(dims.size())};
  for (auto d : dims) {
    for (int s = 24; s >= 0; s -= 8) bytes.push_back(static_cast<std::uint8_t>(d >> s));
  }
  bytes.insert(bytes.end(), data.begin(), data.end());
  if (gzip) {
    gzFile gz = gzopen(path.c_str(), "wb");
    ASSERT_NE(gz, nullptr);
    ASSERT_EQ(gzwrite(gz, bytes.data(), static_cast<unsigned>(bytes.size())),
              static_cast<int>(bytes.size()));
    gzclose(gz);
  } else {
    std::ofstream(path, std::ios::binary)
        .write(reinterpret_cast<const char*>(bytes.data()),
               static_cast<std::streamsize>(bytes.size()));
  }
}

TEST(IdxConverter, RoundTripGzipAndPlain) {
  ScratchDir dir;
  std::vector<std::uint8_t> images(5 * 3 * 2);
  std::iota(images.begin(), images.end(), 100);
  const std::vector<std::uint8_t> labels = {4, 0, 4, 9, 1};
  writeIdx(dir.file("img.gz"), {5, 3, 2}, images, true);
  writeIdx(dir.file("lab"), {5}, labels, false);
  const ConvertResult r = convertIdx(dir.file("img.gz"), dir.file("lab"), dir.file("o.h5"), {});
  EXPECT_EQ(r.images, 5);
  EXPECT_EQ(r.classes, 4);
  const ImageFile f = ImageFile::open(dir.file("o.h5"));
  EXPECT_EQ(f.shape(), (ImageShape{3, 2, 1}));
  EXPECT_EQ(readAll(f), images);
  EXPECT_EQ(labelsOf(f), (std::vector<std::int64_t>{4, 0, 4, 9, 1}));
  // Without labels.
  convertIdx(dir.file("img.gz"), "", dir.file("nolabels.h5"), {});
  EXPECT_FALSE(ImageFile::open(dir.file("nolabels.h5")).hasLabels());
}

TEST(IdxConverter, BadFilesGiveClearErrors) {
  ScratchDir dir;
  std::vector<std::uint8_t> images(4 * 2 * 2, 7);
  writeIdx(dir.file("img"), {4, 2, 2}, images, false);
  writeIdx(dir.file("lab3"), {3}, {1, 2, 3}, false);
  EXPECT_CONTAINS(
      inputError([&] { convertIdx(dir.file("img"), dir.file("lab3"), dir.file("o.h5"), {}); }),
      "expected 4 labels");
  // Truncated data, plain and gzip.
  std::vector<std::uint8_t> short_data(10, 1);
  writeIdx(dir.file("short"), {4, 2, 2}, short_data, false);
  EXPECT_CONTAINS(inputError([&] { convertIdx(dir.file("short"), "", dir.file("o.h5"), {}); }),
                  "is truncated");
  writeIdx(dir.file("full.gz"), {4, 2, 2}, images, true);
  const auto gz = fileBytes(dir.file("full.gz"));
  std::ofstream(dir.file("cut.gz"), std::ios::binary)
      .write(gz.data(), static_cast<std::streamsize>(gz.size() / 2));
  const std::string cut =
      inputError([&] { convertIdx(dir.file("cut.gz"), "", dir.file("o.h5"), {}); });
  EXPECT_CONTAINS(cut, "cut.gz");
  std::ofstream(dir.file("junk")) << "hello world, not IDX";
  EXPECT_CONTAINS(inputError([&] { convertIdx(dir.file("junk"), "", dir.file("o.h5"), {}); }),
                  "no IDX header");
  EXPECT_CONTAINS(inputError([&] { convertIdx(dir.file("lab3"), "", dir.file("o.h5"), {}); }),
                  "expected images N x H x W");
  EXPECT_CONTAINS(inputError([&] { convertIdx(dir.file("absent"), "", dir.file("o.h5"), {}); }),
                  "does not exist");
  EXPECT_FALSE(std::filesystem::exists(dir.file("o.h5")));
}

TEST(Cifar10Converter, RecordsBecomeHwcImagesWithLabels) {
  ScratchDir dir;
  const auto root = dir.path() / "cifar-10-batches-bin";
  std::filesystem::create_directories(root);
  std::vector<std::uint8_t> records;
  for (int r = 0; r < 3; ++r) {
    records.push_back(static_cast<std::uint8_t>(r * 4));
    for (int c = 0; c < 3; ++c) {
      for (int p = 0; p < 1024; ++p) records.push_back(static_cast<std::uint8_t>(r + c * 10 + p));
    }
  }
  std::ofstream(root / "test_batch.bin", std::ios::binary)
      .write(reinterpret_cast<const char*>(records.data()),
             static_cast<std::streamsize>(records.size()));
  const ConvertResult r = convertCifar10(dir.path().string(), "test", dir.file("c.h5"), {});
  EXPECT_EQ(r.images, 3);
  EXPECT_EQ(r.classes, 3);
  const ImageFile f = ImageFile::open(dir.file("c.h5"));
  EXPECT_EQ(f.shape(), (ImageShape{32, 32, 3}));
  EXPECT_EQ(labelsOf(f), (std::vector<std::int64_t>{0, 4, 8}));
  const auto px = readAll(f);
  for (int i = 0; i < 3; ++i) {
    for (int p : {0, 1, 33, 1023}) {
      for (int c = 0; c < 3; ++c) {
        EXPECT_EQ(px[static_cast<std::size_t>(i * 3072 + p * 3 + c)],
                  static_cast<std::uint8_t>(i + c * 10 + p));
      }
    }
  }
  EXPECT_CONTAINS(
      inputError([&] { convertCifar10(dir.path().string(), "train", dir.file("t.h5"), {}); }),
      "data_batch_1.bin' not found");
  std::ofstream(root / "test_batch.bin", std::ios::binary | std::ios::app) << "xx";
  EXPECT_CONTAINS(
      inputError([&] { convertCifar10(dir.path().string(), "test", dir.file("t.h5"), {}); }),
      "not a whole number of 3073-byte records");
}

class FashionMnist : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(defaultFashionMnistDir() + "/t10k-images-idx3-ubyte.gz")) {
      GTEST_SKIP() << "Debian's dataset-fashion-mnist is not installed";
    }
  }
  static std::int64_t sum(const std::vector<std::uint8_t>& px, std::int64_t image) {
    return std::accumulate(px.begin() + image * 784, px.begin() + (image + 1) * 784,
                           std::int64_t{0});
  }
};

// Reference values computed independently with Python (gzip + numpy) from the same files.
TEST_F(FashionMnist, TrainSplitMatchesTheIdxFiles) {
  ScratchDir dir;
  const ConvertResult r =
      convertFashionMnist(defaultFashionMnistDir(), "train", dir.file("train.h5"), {});
  EXPECT_EQ(r.images, 60000);
  EXPECT_EQ(r.classes, 10);
  const ImageFile f = ImageFile::open(dir.file("train.h5"));
  ASSERT_EQ(f.size(), 60000);
  EXPECT_EQ(f.shape(), (ImageShape{28, 28, 1}));
  const auto labels = labelsOf(f);
  std::vector<int> histogram(10, 0);
  for (auto l : labels) {
    ASSERT_GE(l, 0);
    ASSERT_LT(l, 10);
    ++histogram[static_cast<std::size_t>(l)];
  }
  EXPECT_EQ(histogram, std::vector<int>(10, 6000));
  EXPECT_EQ(std::vector<std::int64_t>(labels.begin(), labels.begin() + 10),
            (std::vector<std::int64_t>{9, 0, 0, 3, 0, 2, 7, 2, 5, 5}));
  const auto px = readAll(f);
  EXPECT_EQ(sum(px, 0), 76247);
  EXPECT_EQ(px[14 * 28 + 14], 217);
  EXPECT_EQ(sum(px, 1), 84598);
  EXPECT_EQ(px[784 + 10 * 28 + 5], 223);
  EXPECT_EQ(sum(px, 59999), 16684);
}

TEST_F(FashionMnist, TestSplitMatchesTheIdxFiles) {
  ScratchDir dir;
  convertFashionMnist(defaultFashionMnistDir(), "test", dir.file("test.h5"), {});
  const ImageFile f = ImageFile::open(dir.file("test.h5"));
  ASSERT_EQ(f.size(), 10000);
  const auto labels = labelsOf(f);
  std::vector<int> histogram(10, 0);
  for (auto l : labels) ++histogram[static_cast<std::size_t>(l)];
  EXPECT_EQ(histogram, std::vector<int>(10, 1000));
  EXPECT_EQ(std::vector<std::int64_t>(labels.begin(), labels.begin() + 10),
            (std::vector<std::int64_t>{9, 2, 1, 1, 6, 1, 4, 6, 5, 7}));
  const auto px = readAll(f);
  EXPECT_EQ(sum(px, 0), 33456);
  EXPECT_EQ(px[14 * 28 + 14], 110);
  EXPECT_EQ(sum(px, 1), 100994);
  EXPECT_EQ(sum(px, 9999), 24390);
  EXPECT_EQ(px[9999 * 784 + 14 * 28 + 14], 132);
}

TEST(FashionMnistConverter, MissingDirectoryNamesThePackage) {
  ScratchDir dir;
  EXPECT_CONTAINS(
      inputError([&] { convertFashionMnist(dir.file("none"), "train", dir.file("x.h5"), {}); }),
      "dataset-fashion-mnist");
}

}  // namespace
}  // namespace tessera::data
