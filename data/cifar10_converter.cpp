// convertCifar10 (declared in data/converters.h).
#include <filesystem>
#include <set>
#include <system_error>
#include <vector>

#include "core/error.h"
#include "data/converters.h"
#include "data/detail/file_bytes.h"

namespace tessera::data {
namespace {

constexpr std::int64_t kSide = 32;
constexpr std::int64_t kPlane = kSide * kSide;
constexpr std::int64_t kRecord = 1 + 3 * kPlane;

}  // namespace

ConvertResult convertCifar10(const std::string& dir, const std::string& split,
                             const std::string& out, const WriteOptions& options) {
  std::vector<std::string> names;
  if (split == "train") {
    for (int i = 1; i <= 5; ++i) names.push_back("data_batch_" + std::to_string(i) + ".bin");
  } else if (split == "test") {
    names.push_back("test_batch.bin");
  } else {
    throw InputError("CIFAR-10 split must be 'train' or 'test', got '" + split + "'");
  }
  std::error_code ec;
  std::filesystem::path root(dir);
  if (std::filesystem::is_directory(root / "cifar-10-batches-bin", ec)) {
    root /= "cifar-10-batches-bin";
  }
  if (!std::filesystem::is_directory(root, ec)) {
    throw InputError("CIFAR-10 directory '" + dir + "' does not exist");
  }

  std::vector<std::vector<std::uint8_t>> files;
  std::int64_t n = 0;
  for (const auto& name : names) {
    const std::string path = (root / name).string();
    if (!std::filesystem::is_regular_file(path, ec)) {
      throw InputError("CIFAR-10 file '" + path + "' not found (expected the binary version, " +
                       "cifar-10-binary.tar.gz, extracted)");
    }
    files.push_back(detail::readFileBytes(path));
    const auto size = static_cast<std::int64_t>(files.back().size());
    if (size == 0 || size % kRecord != 0) {
      throw InputError("CIFAR-10 file '" + path + "' has " + std::to_string(size) +
                       " bytes, not a whole number of " + std::to_string(kRecord) +
                       "-byte records (truncated?)");
    }
    n += size / kRecord;
  }

  const ImageShape shape{kSide, kSide, 3};
  DatasetWriter writer(out, n, shape, true, options);
  std::set<std::int64_t> classes;
  for (std::size_t f = 0; f < files.size(); ++f) {
    const std::vector<std::uint8_t>& bytes = files[f];
    const std::int64_t records = static_cast<std::int64_t>(bytes.size()) / kRecord;
    std::vector<std::uint8_t> images(static_cast<std::size_t>(records * shape.bytes()));
    std::vector<std::int64_t> labels(static_cast<std::size_t>(records));
    for (std::int64_t r = 0; r < records; ++r) {
      const std::uint8_t* rec = bytes.data() + r * kRecord;
      if (rec[0] > 9) {
        throw InputError("CIFAR-10 file '" + (root / names[f]).string() + "' record " +
                         std::to_string(r) + " has label " + std::to_string(rec[0]) +
                         ", expected 0-9 (not CIFAR-10's binary format?)");
      }
      labels[static_cast<std::size_t>(r)] = rec[0];
      classes.insert(rec[0]);
      std::uint8_t* img = images.data() + r * shape.bytes();
      for (std::int64_t p = 0; p < kPlane; ++p) {
        for (std::int64_t c = 0; c < 3; ++c) img[p * 3 + c] = rec[1 + c * kPlane + p];
      }
    }
    writer.append(images.data(), labels.data(), records);
  }
  writer.commit();
  return ConvertResult{out, n, shape, static_cast<std::int64_t>(classes.size())};
}

}  // namespace tessera::data
