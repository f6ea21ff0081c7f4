#include "core/json.h"

#include <gtest/gtest.h>

#include <cmath>

namespace tessera {
namespace {

TEST(Json, WritesOrderedObject) {
  JsonObject o;
  o.add("a", 1).add("b", 0.5).add("c", true).add("d", "x\"y\n").add("e", std::nan(""));
  EXPECT_EQ(o.str(), R"({"a": 1, "b": 0.5, "c": true, "d": "x\"y\n", "e": null})");
}

TEST(Json, NestsObjectsAndLists) {
  JsonObject inner;
  inner.add("k", std::int64_t{3});
  JsonObject o;
  o.add("o", inner)
      .add("l", std::vector<double>{1.0, 2.5})
      .add("v", std::vector<JsonObject>{inner});
  EXPECT_EQ(o.str(), R"({"o": {"k": 3}, "l": [1, 2.5], "v": [{"k": 3}]})");
}

}  // namespace
}  // namespace tessera
