// Plain POSIX file writes made durable with fsync(2), for the files a checkpoint commit writes.
#pragma once

#include <cstddef>
#include <string>

namespace tessera::trainer {

// A file created (or truncated) for writing. Every failure throws Error naming the path, the
// operation and the errno text (e.g. "No space left on device"); the partial file stays for the
// caller to remove.
class DurableFile {
 public:
  explicit DurableFile(std::string path);
  ~DurableFile();  // closes without syncing when close() was not reached
  DurableFile(const DurableFile&) = delete;
  DurableFile& operator=(const DurableFile&) = delete;

  void write(const void* data, std::size_t size);
  // fsync, then close; the file's bytes are on disk when this returns.
  void close();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
};

// Writes `size` bytes to `path` durably (DurableFile in one call).
void writeFileDurably(const std::string& path, const void* data, std::size_t size);

// fsyncs a directory, making renames and removals in it durable. Throws Error.
void fsyncDirectory(const std::string& dir);

}  // namespace tessera::trainer
