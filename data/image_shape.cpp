#include "data/image_shape.h"

namespace tessera::data {

std::string ImageShape::str() const {
  auto field = [](std::int64_t v) { return v > 0 ? std::to_string(v) : std::string("?"); };
  return field(height) + "x" + field(width) + "x" + field(channels);
}

}  // namespace tessera::data
