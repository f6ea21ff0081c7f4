// The shape of one image in a Tessera dataset: height x width x channels, stored HWC uint8.
#pragma once

#include <cstdint>
#include <string>

namespace tessera::data {

struct ImageShape {
  std::int64_t height = 0;
  std::int64_t width = 0;
  std::int64_t channels = 0;

  // Bytes of one image (H * W * C).
  std::int64_t bytes() const { return height * width * channels; }
  // "28x28x1"; a zero field (unspecified) prints as "?".
  std::string str() const;
  bool operator==(const ImageShape& o) const {
    return height == o.height && width == o.width && channels == o.channels;
  }
  bool operator!=(const ImageShape& o) const { return !(*this == o); }
};

}  // namespace tessera::data
