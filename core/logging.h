// Process-wide logging setup. Every line goes to stderr (stdout is kept for machine-readable
// output such as `tessera bench` JSON lines) and carries the rank.
#pragma once

#include <string>

namespace tessera {

struct LogOptions {
  std::string level = "info";  // trace, debug, info, warn, error
  bool all_ranks = false;      // ranks other than 0 log at `level` too, not only warnings
};

// Installs the default spdlog logger. Safe to call again once the config is known.
// The environment variable TESSERA_LOG_LEVEL, when set, overrides options.level.
void initLogging(int rank, const LogOptions& options = {});

// Flushes the default logger (before an abnormal exit).
void flushLogs();

}  // namespace tessera
