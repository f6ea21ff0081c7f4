#include "core/logging.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdlib>

#include "core/error.h"

namespace tessera {

static spdlog::level::level_enum parseLevel(const std::string& name, const char* where) {
  const auto level = spdlog::level::from_str(name);
  if (level == spdlog::level::off && name != "off") {
    throw ConfigError(std::string(where) + ": log level '" + name +
                      "' is not one of trace, debug, info, warn, error, off");
  }
  return level;
}

void initLogging(int rank, const LogOptions& options) {
  auto level = parseLevel(options.level, "log.level");
  if (const char* env = std::getenv("TESSERA_LOG_LEVEL"); env != nullptr && *env != '\0') {
    level = parseLevel(env, "TESSERA_LOG_LEVEL");
  }
  auto sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
  auto logger = std::make_shared<spdlog::logger>("rank " + std::to_string(rank), std::move(sink));
  logger->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%n] [%^%l%$] %v");
  const bool quiet_rank = rank != 0 && !options.all_ranks;
  logger->set_level(quiet_rank ? std::max(level, spdlog::level::warn) : level);
  logger->flush_on(spdlog::level::warn);
  spdlog::set_default_logger(std::move(logger));
}

void flushLogs() {
  if (auto logger = spdlog::default_logger()) logger->flush();
}

}  // namespace tessera
