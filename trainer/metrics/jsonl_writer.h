// Appends one JSON object per line to a file (run_dir/metrics.jsonl), flushing each line, so a
// crash loses at most the line being written and `tail -f` shows progress as it happens.
//
// The file is opened in append mode: a resumed run continues it. A line left incomplete by a
// crash is closed with a newline before the first new line, so every complete line stays valid
// JSON; readers take the last line of a step when a resumed run repeats steps.
#pragma once

#include <cstdio>
#include <memory>
#include <string>

#include "core/json.h"

namespace tessera::trainer {

class JsonlWriter {
 public:
  // Creates the file if needed. Throws tessera::Error naming the path when it cannot be opened.
  explicit JsonlWriter(std::string path);

  // Appends object.str() and a newline, then flushes. A failed write (disk full, I/O error) is
  // logged as a warning once and does not throw: metrics never stop training.
  void write(const JsonObject& object);

  const std::string& path() const { return path_; }

 private:
  struct FileCloser {
    void operator()(std::FILE* f) const;
  };
  std::string path_;
  std::unique_ptr<std::FILE, FileCloser> file_;
  bool failed_ = false;  // the last write failed
  bool warned_ = false;
};

}  // namespace tessera::trainer
