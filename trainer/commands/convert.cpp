// `tessera convert`: maps the command line onto the data/ converters.
#include <spdlog/spdlog.h>

#include "core/error.h"
#include "data/converters.h"
#include "trainer/cli.h"

namespace tessera::trainer {
namespace {

// Options that only some formats read are refused elsewhere rather than silently ignored.
void allowOnly(const ConvertArgs& a, bool input, bool idx_files, bool folder_options, bool split) {
  auto refuse = [&](const char* option) {
    throw UsageError(std::string("`tessera convert ") + a.format + "` does not take " + option);
  };
  if (!input && !a.input.empty()) refuse("--input");
  if (!idx_files && !a.images.empty()) refuse("--images");
  if (!idx_files && !a.labels.empty()) refuse("--labels");
  if (!folder_options && a.size != 0) refuse("--size");
  if (!folder_options && a.labels_from_dirs) refuse("--labels-from-dirs");
  if (!split && a.split != "train") refuse("--split");
}

void require(const ConvertArgs& a, const std::string& value, const char* option) {
  if (value.empty()) {
    throw UsageError(std::string("`tessera convert ") + a.format + "` needs " + option);
  }
}

}  // namespace

int runConvert(const ConvertArgs& args) {
  const data::WriteOptions write{args.chunk, args.compression, args.force};
  data::ConvertResult result;
  if (args.format == "fmnist") {
    allowOnly(args, true, false, false, true);
    const std::string dir = args.input.empty() ? data::defaultFashionMnistDir() : args.input;
    result = data::convertFashionMnist(dir, args.split, args.out, write);
  } else if (args.format == "idx") {
    allowOnly(args, false, true, false, false);
    require(args, args.images, "--images FILE (and usually --labels FILE)");
    result = data::convertIdx(args.images, args.labels, args.out, write);
  } else if (args.format == "cifar10") {
    allowOnly(args, true, false, false, true);
    require(args, args.input, "--input DIR (the extracted cifar-10-batches-bin)");
    result = data::convertCifar10(args.input, args.split, args.out, write);
  } else if (args.format == "images") {
    allowOnly(args, true, false, true, false);
    require(args, args.input, "--input FOLDER");
    result = data::convertImageFolder(
        args.input, args.out, data::ImageFolderOptions{args.size, args.labels_from_dirs}, write);
  } else {
    throw UsageError("unknown convert format '" + args.format + "'");
  }
  spdlog::info("convert: wrote {} images of {} (HxWxC){} to {}", result.images, result.shape.str(),
               result.classes > 0 ? ", " + std::to_string(result.classes) + " classes"
                                  : std::string(", no labels"),
               result.path);
  return kExitOk;
}

}  // namespace tessera::trainer
