// removeTree: what std::filesystem::remove_all does, without it (core/file_tree.h says why).
#include "core/file_tree.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace tessera {
namespace {

namespace fs = std::filesystem;

std::string scratch(const char* name) {
  return (fs::temp_directory_path() /
          (std::string("tessera_tree_") + name + "_" + std::to_string(::getpid())))
      .string();
}

TEST(RemoveTree, RemovesNestedDirectoriesFilesAndLinksWithoutFollowingThem) {
  const std::string root = scratch("nested"), outside = scratch("outside");
  fs::create_directories(root + "/a/b/c");
  fs::create_directories(outside);
  std::ofstream(root + "/a/b/c/file") << "x";
  std::ofstream(root + "/top") << "y";
  std::ofstream(outside + "/kept") << "z";
  fs::create_directory_symlink(outside, root + "/a/link");  // must not be followed
  std::error_code ec;
  EXPECT_TRUE(removeTree(root, ec)) << ec.message();
  EXPECT_FALSE(fs::exists(root));
  EXPECT_TRUE(fs::exists(outside + "/kept"));
  removeTree(outside);
  EXPECT_FALSE(fs::exists(outside));
}

TEST(RemoveTree, MissingPathsAndSingleFilesAreFine) {
  std::error_code ec;
  EXPECT_TRUE(removeTree(scratch("never_made"), ec));
  EXPECT_FALSE(ec);
  const std::string file = scratch("file");
  std::ofstream(file) << "x";
  removeTree(file);
  EXPECT_FALSE(fs::exists(file));
}

TEST(RemoveTree, FailuresNameThePath) {
  const std::string file = scratch("not_a_dir");
  std::ofstream(file) << "x";
  const std::string below = file + "/child";  // a path through a file: ENOTDIR, even for root
  std::error_code ec;
  EXPECT_FALSE(removeTree(below, ec));
  EXPECT_EQ(ec, std::errc::not_a_directory) << ec.message();
  try {
    removeTree(below);
    ADD_FAILURE() << "no exception";
  } catch (const std::system_error& e) {
    EXPECT_NE(std::string(e.what()).find(below), std::string::npos) << e.what();
  }
  removeTree(file);
}

}  // namespace
}  // namespace tessera
