// convertIdx and convertFashionMnist (declared in data/converters.h).
#include <filesystem>
#include <set>
#include <system_error>
#include <vector>

#include "core/error.h"
#include "data/converters.h"
#include "data/idx_file.h"

namespace tessera::data {

ConvertResult convertIdx(const std::string& images, const std::string& labels,
                         const std::string& out, const WriteOptions& options) {
  const IdxFile image_idx = IdxFile::read(images);
  if (image_idx.dims.size() != 3) {
    throw InputError("IDX file '" + images + "': expected images N x H x W (3 dimensions), found " +
                     std::to_string(image_idx.dims.size()) + " dimensions");
  }
  const std::int64_t n = image_idx.dims[0];
  const ImageShape shape{image_idx.dims[1], image_idx.dims[2], 1};
  if (n == 0 || shape.bytes() == 0) throw InputError("IDX file '" + images + "' has no images");

  std::vector<std::int64_t> label_values;
  std::set<std::int64_t> classes;
  if (!labels.empty()) {
    const IdxFile label_idx = IdxFile::read(labels);
    if (label_idx.dims.size() != 1 || label_idx.dims[0] != n) {
      throw InputError("IDX file '" + labels + "': expected " + std::to_string(n) +
                       " labels (one per image of '" + images + "'), found shape of " +
                       std::to_string(label_idx.dims.size()) + " dimensions, first " +
                       std::to_string(label_idx.dims.empty() ? 0 : label_idx.dims[0]));
    }
    label_values.assign(label_idx.data.begin(), label_idx.data.end());
    classes.insert(label_values.begin(), label_values.end());
  }

  DatasetWriter writer(out, n, shape, !labels.empty(), options);
  writer.append(image_idx.data.data(), label_values.empty() ? nullptr : label_values.data(), n);
  writer.commit();
  return ConvertResult{out, n, shape, static_cast<std::int64_t>(classes.size())};
}

std::string defaultFashionMnistDir() {
  return "/usr/share/datasets/fashion-mnist";
}

ConvertResult convertFashionMnist(const std::string& dir, const std::string& split,
                                  const std::string& out, const WriteOptions& options) {
  if (split != "train" && split != "test") {
    throw InputError("Fashion-MNIST split must be 'train' or 'test', got '" + split + "'");
  }
  const std::string prefix = split == "train" ? "train" : "t10k";
  auto locate = [&](const std::string& stem) {
    const std::filesystem::path base = std::filesystem::path(dir) / stem;
    std::error_code ec;
    for (const std::string suffix : {".gz", ""}) {
      const std::string candidate = base.string() + suffix;
      if (std::filesystem::is_regular_file(candidate, ec)) return candidate;
    }
    throw InputError("Fashion-MNIST file '" + base.string() +
                     "[.gz]' not found (install Debian's dataset-fashion-mnist, or pass --input "
                     "DIR holding the IDX files)");
  };
  return convertIdx(locate(prefix + "-images-idx3-ubyte"), locate(prefix + "-labels-idx1-ubyte"),
                    out, options);
}

}  // namespace tessera::data
