// convertImageFolder (declared in data/converters.h).
#include <spdlog/spdlog.h>
#include <stb_image.h>
#include <stb_image_resize.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <system_error>
#include <vector>

#include "core/error.h"
#include "data/converters.h"

namespace tessera::data {
namespace {

namespace fs = std::filesystem;

constexpr std::int64_t kWriteBufferBytes = 32 << 20;

struct Entry {
  std::string path;
  std::string relative;  // generic form, '/'-separated: the sort key
  int width = 0;
  int height = 0;
  bool color = false;
  std::int64_t label = 0;
};

bool isImageName(const fs::path& p) {
  static const std::set<std::string> kExtensions = {".png", ".jpg", ".jpeg", ".bmp", ".tga",
                                                    ".gif", ".ppm", ".pgm",  ".pnm"};
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return kExtensions.count(ext) > 0;
}

std::vector<Entry> listImages(const std::string& folder) {
  std::error_code ec;
  if (!fs::is_directory(folder, ec)) {
    throw InputError("image folder '" + folder + "' does not exist or is not a directory");
  }
  std::vector<Entry> entries;
  fs::recursive_directory_iterator it(folder, fs::directory_options::follow_directory_symlink, ec);
  if (ec) throw InputError("cannot list image folder '" + folder + "': " + ec.message());
  for (const fs::recursive_directory_iterator end; it != end; it.increment(ec)) {
    if (ec) throw InputError("cannot list image folder '" + folder + "': " + ec.message());
    if (!it->is_regular_file(ec) || !isImageName(it->path())) continue;
    Entry e;
    e.path = it->path().string();
    e.relative = fs::relative(it->path(), folder, ec).generic_string();
    entries.push_back(std::move(e));
  }
  std::sort(entries.begin(), entries.end(),
            [](const Entry& a, const Entry& b) { return a.relative < b.relative; });
  if (entries.empty()) {
    throw InputError("image folder '" + folder +
                     "' holds no images (.png, .jpg, .jpeg, .bmp, .tga, .gif, .ppm, .pgm, .pnm)");
  }
  return entries;
}

// Labels from first-level sub-folders; returns the number of classes.
std::int64_t assignLabels(std::vector<Entry>& entries, const std::string& folder) {
  std::map<std::string, std::int64_t> classes;
  for (const Entry& e : entries) {
    const std::size_t slash = e.relative.find('/');
    if (slash == std::string::npos) {
      throw InputError("image '" + e.path + "' is not inside a class sub-folder of '" + folder +
                       "' (--labels-from-dirs takes each image's label from its sub-folder)");
    }
    classes.emplace(e.relative.substr(0, slash), 0);
  }
  std::int64_t next = 0;
  for (auto& [name, label] : classes) label = next++;
  for (Entry& e : entries) e.label = classes.at(e.relative.substr(0, e.relative.find('/')));
  std::string mapping;
  for (const auto& [name, label] : classes) {
    if (mapping.size() > 200) {
      mapping += ", ...";
      break;
    }
    mapping += (mapping.empty() ? "" : ", ") + std::to_string(label) + "=" + name;
  }
  spdlog::info("convert: {} classes from sub-folders: {}", classes.size(), mapping);
  return static_cast<std::int64_t>(classes.size());
}

std::string stbReason() {
  const char* r = stbi_failure_reason();
  return r != nullptr ? r : "unknown reason";
}

// Decodes `e` with `channels` channels and writes it as out_h x out_w x channels to `out`:
// resized after a centred square crop when `size` > 0, copied as is otherwise.
void decodeInto(const Entry& e, int channels, int size, std::uint8_t* out) {
  int w = 0, h = 0, found = 0;
  std::unique_ptr<stbi_uc, void (*)(void*)> pixels(
      stbi_load(e.path.c_str(), &w, &h, &found, channels), stbi_image_free);
  if (!pixels) throw InputError("cannot decode image '" + e.path + "': " + stbReason());
  if (w != e.width || h != e.height) {
    throw InputError("image '" + e.path + "' changed while converting");
  }
  if (size == 0) {
    std::copy_n(pixels.get(), static_cast<std::size_t>(w) * h * channels, out);
    return;
  }
  const int side = std::min(w, h);
  const int left = (w - side) / 2;
  const int top = (h - side) / 2;
  const stbi_uc* crop = pixels.get() + (static_cast<std::size_t>(top) * w + left) * channels;
  if (side == size) {
    for (int y = 0; y < size; ++y) {
      std::copy_n(crop + static_cast<std::size_t>(y) * w * channels,
                  static_cast<std::size_t>(size) * channels,
                  out + static_cast<std::size_t>(y) * size * channels);
    }
    return;
  }
  if (stbir_resize_uint8(crop, side, side, w * channels, out, size, size, 0, channels) == 0) {
    throw Error("cannot resize image '" + e.path + "'");
  }
}

}  // namespace

ConvertResult convertImageFolder(const std::string& folder, const std::string& out,
                                 const ImageFolderOptions& folder_options,
                                 const WriteOptions& options) {
  if (folder_options.size < 0) {
    throw InputError("image size must be positive, got " + std::to_string(folder_options.size));
  }
  std::vector<Entry> entries = listImages(folder);
  const std::int64_t classes = folder_options.labels_from_dirs ? assignLabels(entries, folder) : 0;

  bool any_color = false;
  for (Entry& e : entries) {
    int components = 0;
    if (stbi_info(e.path.c_str(), &e.width, &e.height, &components) == 0) {
      throw InputError("cannot read image '" + e.path + "': " + stbReason());
    }
    e.color = components >= 3;
    any_color = any_color || e.color;
  }
  const int channels = any_color ? 3 : 1;
  const int size = folder_options.size;
  ImageShape shape{size, size, channels};
  if (size == 0) {
    shape.height = entries.front().height;
    shape.width = entries.front().width;
    for (const Entry& e : entries) {
      if (e.width != shape.width || e.height != shape.height) {
        throw InputError("image '" + e.path + "' is " + std::to_string(e.width) + "x" +
                         std::to_string(e.height) + " (WxH), unlike '" + entries.front().path +
                         "' (" + std::to_string(shape.width) + "x" + std::to_string(shape.height) +
                         "); pass --size N to centre-crop and resize every image to NxN");
      }
    }
  }

  const auto n = static_cast<std::int64_t>(entries.size());
  spdlog::info("convert: {} images below '{}' -> {} ({})", n, folder, out, shape.str());
  DatasetWriter writer(out, n, shape, folder_options.labels_from_dirs, options);
  const std::int64_t per_write = std::clamp<std::int64_t>(kWriteBufferBytes / shape.bytes(), 1, n);
  std::vector<std::uint8_t> images(static_cast<std::size_t>(per_write * shape.bytes()));
  std::vector<std::int64_t> labels(static_cast<std::size_t>(per_write));

  using Clock = std::chrono::steady_clock;
  const auto started = Clock::now();
  auto last_log = started;
  std::int64_t buffered = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    const Entry& e = entries[static_cast<std::size_t>(i)];
    decodeInto(e, channels, size, images.data() + buffered * shape.bytes());
    labels[static_cast<std::size_t>(buffered)] = e.label;
    if (++buffered == per_write || i + 1 == n) {
      writer.append(images.data(), labels.data(), buffered);
      buffered = 0;
    }
    const auto now = Clock::now();
    if (now - last_log > std::chrono::seconds(2) || i + 1 == n) {
      const double seconds = std::chrono::duration<double>(now - started).count();
      spdlog::info("convert: {}/{} images ({:.0f}%, {:.0f} images/s)", i + 1, n,
                   100.0 * static_cast<double>(i + 1) / static_cast<double>(n),
                   static_cast<double>(i + 1) / std::max(seconds, 1e-9));
      last_log = now;
    }
  }
  writer.commit();
  return ConvertResult{out, n, shape, classes};
}

}  // namespace tessera::data
