// Reading and writing the dataset format: round trips, deterministic bytes, atomic writes, and
// one clear InputError for each kind of bad file.
#include <gtest/gtest.h>

#include <atomic>
#include <fstream>
#include <iterator>
#include <thread>
#include <vector>

#include "core/error.h"
#include "data/dataset_writer.h"
#include "data/image_file.h"
#include "tests/data/data_test_support.h"

namespace tessera::data {
namespace {

using testing::RawType;
using testing::ScratchDir;
using testing::writeDataset;
using testing::writeRawDataset;

std::vector<char> fileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<char>(std::istreambuf_iterator<char>(in), {});
}

// The InputError message of opening `path`, or a failure when it opens.
std::string openError(const std::string& path, const std::string& dataset = "images",
                      const ImageShape* expected = nullptr) {
  try {
    ImageFile::open(path, dataset, expected);
  } catch (const InputError& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "not an InputError: " << e.what();
    return e.what();
  }
  ADD_FAILURE() << "'" << path << "' opened without error";
  return "";
}

#define EXPECT_CONTAINS(haystack, needle) \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << (haystack)

TEST(ImageFile, RoundTripsImagesAndLabels) {
  ScratchDir dir;
  const ImageShape shape{5, 4, 3};
  const std::string path = dir.file("a.h5");
  writeDataset(path, 23, shape, WriteOptions{7, 0, false});
  const ImageFile f = ImageFile::open(path, "images", &shape);
  EXPECT_EQ(f.size(), 23);
  EXPECT_EQ(f.shape(), shape);
  EXPECT_TRUE(f.hasLabels());
  EXPECT_EQ(f.chunkImages(), 7);
  EXPECT_FALSE(f.compressed());
  EXPECT_EQ(f.path(), path);

  const auto expected = testing::makeImages(23, shape);
  std::vector<std::uint8_t> got(static_cast<std::size_t>(9 * shape.bytes()));
  f.readRange(5, 9, got.data());  // crosses chunk boundaries
  EXPECT_TRUE(std::equal(got.begin(), got.end(), expected.begin() + 5 * shape.bytes()));
  std::vector<std::int64_t> labels(23);
  f.readLabels(0, 23, labels.data());
  for (int i = 0; i < 23; ++i) EXPECT_EQ(labels[static_cast<std::size_t>(i)], 1000 + i);

  EXPECT_THROW(f.readRange(20, 4, got.data()), Error);
  EXPECT_THROW(f.readRange(-1, 1, got.data()), Error);
  f.readRange(23, 0, got.data());  // empty range at the end is fine
}

TEST(ImageFile, CompressedFilesReadTheSame) {
  ScratchDir dir;
  const ImageShape shape{8, 8, 1};
  writeDataset(dir.file("z.h5"), 50, shape, WriteOptions{16, 6, false});
  const ImageFile f = ImageFile::open(dir.file("z.h5"));
  EXPECT_TRUE(f.compressed());
  EXPECT_FALSE(f.directReads());  // compressed chunks are decoded by HDF5
  std::vector<std::uint8_t> got(static_cast<std::size_t>(50 * shape.bytes()));
  f.readRange(0, 50, got.data());
  EXPECT_EQ(got, testing::makeImages(50, shape));
}

TEST(ImageFile, ThreeDimensionalDatasetsAreOneChannel) {
  ScratchDir dir;
  writeRawDataset(dir.file("gray.h5"), "pixels", {4, 6, 5}, RawType::kUint8);
  const ImageFile f = ImageFile::open(dir.file("gray.h5"), "pixels");
  EXPECT_EQ(f.shape(), (ImageShape{6, 5, 1}));
  EXPECT_FALSE(f.hasLabels());
  EXPECT_EQ(f.chunkImages(), 0);
}

// Images [start, start + count) of `f`, read with readRange().
std::vector<std::uint8_t> readImages(const ImageFile& f, std::int64_t start, std::int64_t count) {
  std::vector<std::uint8_t> got(static_cast<std::size_t>(count * f.shape().bytes()));
  f.readRange(start, count, got.data());
  return got;
}

std::vector<std::uint8_t> expectedImages(const ImageShape& shape, std::int64_t start,
                                         std::int64_t count) {
  const auto all = testing::makeImages(start + count, shape);
  return std::vector<std::uint8_t>(all.begin() + start * shape.bytes(), all.end());
}

// Every layout reads the same bytes, whether by file offset (uncompressed chunks of whole
// images, contiguous datasets) or through HDF5 (chunks that cut images).
TEST(ImageFile, EveryLayoutReadsTheSameBytes) {
  ScratchDir dir;
  const ImageShape shape{6, 5, 3};
  struct Layout {
    std::string name;
    std::vector<std::uint64_t> chunk;
    bool direct;
  };
  const std::vector<Layout> layouts = {{"chunked.h5", {7, 6, 5, 3}, true},
                                       {"contiguous.h5", {}, true},
                                       {"cut_images.h5", {4, 3, 5, 3}, false},
                                       {"one_per_chunk.h5", {1, 6, 5, 3}, true}};
  for (const Layout& layout : layouts) {
    SCOPED_TRACE(layout.name);
    const std::string path = dir.file(layout.name);
    writeRawDataset(path, "images", {40, 6, 5, 3}, RawType::kUint8, layout.chunk);
    const ImageFile f = ImageFile::open(path);
    EXPECT_EQ(f.directReads(), layout.direct);
    EXPECT_EQ(readImages(f, 0, 40), expectedImages(shape, 0, 40));
    EXPECT_EQ(readImages(f, 5, 9), expectedImages(shape, 5, 9));    // across chunk boundaries
    EXPECT_EQ(readImages(f, 35, 5), expectedImages(shape, 35, 5));  // the last, partial chunk
    EXPECT_EQ(readImages(f, 13, 1), expectedImages(shape, 13, 1));
  }
}

TEST(ImageFile, ConcurrentReadsAreCorrect) {
  ScratchDir dir;
  const ImageShape shape{16, 16, 3};
  const std::string path = dir.file("a.h5");
  writeDataset(path, 300, shape, WriteOptions{32, 0, false});
  const ImageFile f = ImageFile::open(path);
  ASSERT_TRUE(f.directReads());
  const auto all = testing::makeImages(300, shape);
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (std::int64_t start = t; start + 17 <= 300; start += 13) {
        const auto got = readImages(f, start, 17);
        if (!std::equal(got.begin(), got.end(), all.begin() + start * shape.bytes())) ++mismatches;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(mismatches.load(), 0);
}

TEST(DatasetWriter, SameInputGivesTheSameBytes) {
  ScratchDir dir;
  writeDataset(dir.file("a.h5"), 40, ImageShape{6, 6, 3}, WriteOptions{0, 4, false});
  writeDataset(dir.file("b.h5"), 40, ImageShape{6, 6, 3}, WriteOptions{0, 4, false});
  const auto a = fileBytes(dir.file("a.h5"));
  EXPECT_GT(a.size(), 0u);
  EXPECT_EQ(a, fileBytes(dir.file("b.h5")));
}

TEST(DatasetWriter, RefusesToOverwriteUnlessForced) {
  ScratchDir dir;
  const std::string path = dir.file("d.h5");
  writeDataset(path, 3, ImageShape{2, 2, 1});
  try {
    writeDataset(path, 5, ImageShape{2, 2, 1});
    ADD_FAILURE() << "overwrote without force";
  } catch (const InputError& e) {
    EXPECT_CONTAINS(e.what(), "exists; pass --force");
  }
  EXPECT_EQ(ImageFile::open(path).size(), 3);
  writeDataset(path, 5, ImageShape{2, 2, 1}, WriteOptions{0, 0, true});
  EXPECT_EQ(ImageFile::open(path).size(), 5);
}

TEST(DatasetWriter, UncommittedWriteLeavesNothingBehind) {
  ScratchDir dir;
  const std::string path = dir.file("partial.h5");
  {
    DatasetWriter writer(path, 10, ImageShape{2, 2, 1}, false);
    const auto images = testing::makeImages(4, ImageShape{2, 2, 1});
    writer.append(images.data(), nullptr, 4);
    EXPECT_THROW(writer.commit(), Error);  // 4 of 10 written
    EXPECT_THROW(writer.append(images.data(), nullptr, 7), Error);
  }
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_TRUE(std::filesystem::is_empty(dir.path())) << "temporary file left behind";
}

TEST(ImageFileErrors, MissingFile) {
  ScratchDir dir;
  const std::string msg = openError(dir.file("nope.h5"));
  EXPECT_CONTAINS(msg, "nope.h5");
  EXPECT_CONTAINS(msg, "does not exist");
}

TEST(ImageFileErrors, NotHdf5) {
  ScratchDir dir;
  std::ofstream(dir.file("text.h5")) << "images,labels\n1,2\n";
  const std::string msg = openError(dir.file("text.h5"));
  EXPECT_CONTAINS(msg, "text.h5");
  EXPECT_CONTAINS(msg, "not an HDF5 file");
  EXPECT_CONTAINS(openError(dir.path().string()), "is a directory");
}

TEST(ImageFileErrors, TruncatedFile) {
  ScratchDir dir;
  const std::string path = dir.file("cut.h5");
  writeDataset(path, 200, ImageShape{8, 8, 1});
  std::filesystem::resize_file(path, std::filesystem::file_size(path) / 2);
  const std::string msg = openError(path);
  EXPECT_CONTAINS(msg, "cut.h5");
  EXPECT_CONTAINS(msg, "truncated");
}

// A file cut short after it was opened (and checked) fails the read with the file's name.
TEST(ImageFileErrors, FileTruncatedWhileOpen) {
  ScratchDir dir;
  const std::string path = dir.file("shrinking.h5");
  writeDataset(path, 200, ImageShape{8, 8, 1}, WriteOptions{16, 0, false});
  const ImageFile f = ImageFile::open(path);
  ASSERT_TRUE(f.directReads());
  std::filesystem::resize_file(path, std::filesystem::file_size(path) / 2);
  std::vector<std::uint8_t> got(static_cast<std::size_t>(200 * f.shape().bytes()));
  try {
    f.readRange(0, 200, got.data());
    ADD_FAILURE() << "read past the end of a truncated file";
  } catch (const Error& e) {
    EXPECT_CONTAINS(e.what(), "shrinking.h5");
    EXPECT_CONTAINS(e.what(), "truncated");
  }
}

TEST(ImageFileErrors, MissingDatasetListsWhatIsThere) {
  ScratchDir dir;
  const std::string path = dir.file("named.h5");
  writeDataset(path, 3, ImageShape{2, 2, 1});
  const std::string msg = openError(path, "imgs");
  EXPECT_CONTAINS(msg, "named.h5");
  EXPECT_CONTAINS(msg, "no dataset 'imgs'");
  EXPECT_CONTAINS(msg, "found: images, labels");
  EXPECT_CONTAINS(openError(path, "train/images"), "no dataset 'train/images'");
}

TEST(ImageFileErrors, WrongDtype) {
  ScratchDir dir;
  writeRawDataset(dir.file("f.h5"), "images", {3, 4, 4, 1}, RawType::kFloat32);
  const std::string msg = openError(dir.file("f.h5"));
  EXPECT_CONTAINS(msg, "f.h5");
  EXPECT_CONTAINS(msg, "dataset 'images'");
  EXPECT_CONTAINS(msg, "expected uint8, found float32");
  writeRawDataset(dir.file("i.h5"), "images", {3, 4, 4, 1}, RawType::kInt16);
  EXPECT_CONTAINS(openError(dir.file("i.h5")), "expected uint8, found int16");
}

TEST(ImageFileErrors, WrongRank) {
  ScratchDir dir;
  writeRawDataset(dir.file("r.h5"), "images", {3, 16}, RawType::kUint8);
  const std::string msg = openError(dir.file("r.h5"));
  EXPECT_CONTAINS(msg, "wrong rank: expected 4 (N x H x W x C) or 3 (N x H x W), found 2");
  EXPECT_CONTAINS(msg, "3 x 16");
  writeRawDataset(dir.file("r5.h5"), "images", {1, 2, 2, 2, 2}, RawType::kUint8);
  EXPECT_CONTAINS(openError(dir.file("r5.h5")), "found 5");
}

TEST(ImageFileErrors, WrongShape) {
  ScratchDir dir;
  writeDataset(dir.file("s.h5"), 3, ImageShape{32, 32, 3});
  const ImageShape want{28, 28, 1};
  const std::string msg = openError(dir.file("s.h5"), "images", &want);
  EXPECT_CONTAINS(msg, "s.h5");
  EXPECT_CONTAINS(msg, "expected images of 28x28x1 (H x W x C), found 32x32x3");
  // Unspecified fields are not checked.
  const ImageShape only_size{32, 32, 0};
  EXPECT_EQ(ImageFile::open(dir.file("s.h5"), "images", &only_size).size(), 3);
  const ImageShape gray{0, 0, 1};
  EXPECT_CONTAINS(openError(dir.file("s.h5"), "images", &gray), "found 32x32x3");
}

TEST(ImageFileErrors, ZeroImages) {
  ScratchDir dir;
  writeRawDataset(dir.file("empty.h5"), "images", {0, 28, 28, 1}, RawType::kUint8);
  const std::string msg = openError(dir.file("empty.h5"));
  EXPECT_CONTAINS(msg, "empty.h5");
  EXPECT_CONTAINS(msg, "zero images");
}

TEST(ImageFileErrors, BadLabels) {
  ScratchDir dir;
  writeRawDataset(dir.file("l.h5"), "images", {4, 2, 2, 1}, RawType::kUint8);
  writeRawDataset(dir.file("l.h5"), "labels", {5}, RawType::kInt32);
  EXPECT_CONTAINS(openError(dir.file("l.h5")), "expected 4 (one label per image), found 5");
  writeRawDataset(dir.file("lf.h5"), "images", {4, 2, 2, 1}, RawType::kUint8);
  writeRawDataset(dir.file("lf.h5"), "labels", {4}, RawType::kFloat32);
  EXPECT_CONTAINS(openError(dir.file("lf.h5")), "'labels': wrong dtype: expected int64");
  // Narrower integer labels (as h5py users often write) are read as int64.
  writeRawDataset(dir.file("li.h5"), "images", {4, 2, 2, 1}, RawType::kUint8);
  writeRawDataset(dir.file("li.h5"), "labels", {4}, RawType::kInt32);
  const ImageFile f = ImageFile::open(dir.file("li.h5"));
  std::vector<std::int64_t> labels(4, -1);
  f.readLabels(0, 4, labels.data());
  EXPECT_EQ(labels, std::vector<std::int64_t>(4, 0));
}

}  // namespace
}  // namespace tessera::data
