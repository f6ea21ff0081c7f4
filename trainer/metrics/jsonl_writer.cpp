#include "trainer/metrics/jsonl_writer.h"

#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstring>

#include "core/error.h"

namespace tessera::trainer {

void JsonlWriter::FileCloser::operator()(std::FILE* f) const {
  std::fclose(f);
}

namespace {

// True when the file is non-empty and its last byte is not a newline.
bool endsMidLine(std::FILE* f) {
  if (std::fseek(f, 0, SEEK_END) != 0) return false;
  const long size = std::ftell(f);
  if (size <= 0) return false;
  if (std::fseek(f, size - 1, SEEK_SET) != 0) return false;
  const int last = std::fgetc(f);
  std::fseek(f, 0, SEEK_END);
  return last != '\n';
}

}  // namespace

JsonlWriter::JsonlWriter(std::string path) : path_(std::move(path)) {
  // "a+": every write goes to the end; reading is only for the check of the last byte.
  file_.reset(std::fopen(path_.c_str(), "a+"));
  if (!file_) {
    throw Error("cannot open metrics log '" + path_ + "' for appending: " + std::strerror(errno));
  }
  if (endsMidLine(file_.get())) {
    spdlog::warn(
        "metrics log '{}' ends with an incomplete line (interrupted run); "
        "continuing on a new line",
        path_);
    std::fputc('\n', file_.get());
    std::fflush(file_.get());
  }
}

void JsonlWriter::write(const JsonObject& object) {
  std::string line;
  // A failed write may have left part of a line behind; never glue a new line onto it.
  if (failed_ && endsMidLine(file_.get())) line += '\n';
  line += object.str();
  line += '\n';
  const bool ok = std::fwrite(line.data(), 1, line.size(), file_.get()) == line.size() &&
                  std::fflush(file_.get()) == 0;
  failed_ = !ok;
  if (!ok) {
    const int err = errno;
    std::clearerr(file_.get());
    if (!warned_) {
      spdlog::warn("cannot append to metrics log '{}': {} (further failures are not logged)", path_,
                   std::strerror(err));
      warned_ = true;
    }
  }
}

}  // namespace tessera::trainer
